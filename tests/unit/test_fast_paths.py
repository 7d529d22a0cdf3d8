"""The fast request paths of ingest and the predictor give exactly the detailed paths' verdicts.

Each fast path (orjson, one pass, records encoded without a pydantic model) hands anything it
does not accept to the detailed path. These tests hold the two equal: the same records, byte
for byte, for valid bodies; the same errors for invalid ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwise_core.appspec import AppSpec, load_app_spec, parse_app_spec
from streamwise_core.codec import ModelMeta
from streamwise_core.errors import ValidationFailed
from streamwise_core.events import PredictionMade
from streamwise_core.http import decode_utf8, loads_strict
from streamwise_core.pipeline import build_model
from streamwise_core.schema import to_model_input
from streamwise_devstack.fraud import FraudStream
from streamwise_ingest.parsing import parse_items
from streamwise_ingest.validation import event_records, quick_event_records, validate_events
from streamwise_predictor import predictions
from streamwise_predictor.holder import ServedModel
from streamwise_predictor.predictions import (
    BatchResponse,
    Checked,
    PredictionResponse,
    check_instances,
    encode_answers,
    encode_prediction,
    encode_predictions,
    parse_batch,
    parse_instance,
    predict_checked,
    prediction_records,
    read_request,
)
from streamwise_predictor.shadow import ShadowScorer

from .test_ingest_validation import features

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
JSON, NDJSON = "application/json", "application/x-ndjson"


def slow_events(spec: AppSpec, body: bytes, content_type: str) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    events = validate_events(spec, parse_items(body, content_type, max_items=100), NOW)
    return [e.id for e in events], [(e.id.encode(), e.to_bytes()) for e in events]


def outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return ("ok", call(*args, **kwargs))
    except ValidationFailed as exc:
        return ("refused", exc.errors)


# --------------------------------------------------------------------------- ingest

VALID_EVENTS = [
    {"id": "e-1", "features": features(), "label": True},
    {"id": "e-2", "features": features(hour=3.0, amount=7), "label": False, "timestamp": "2026-02-28T08:30:00Z"},
    {"id": "e-3", "features": features(), "timestamp": "2026-02-28T08:30:00.5+02:00", "label": None},
    {"id": "e-4", "features": features(), "timestamp": "2026-02-28T08:30:00-05:30"},
    {"id": "e-5", "features": features(amount=1e15, distance_km=0), "timestamp": "2026-02-28 08:30:00.000001+00:00"},
    {"id": "e:6.x-Y_", "features": features(), "timestamp": None},
]


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_valid_events_are_the_same_records_on_both_paths(content_type: str) -> None:
    body = json.dumps(VALID_EVENTS).encode() if content_type == JSON else b"\n".join(json.dumps(e).encode() for e in VALID_EVENTS)
    assert quick_event_records(SPEC, orjson.loads(body) if content_type == JSON else VALID_EVENTS, NOW) is not None
    assert event_records(SPEC, body, content_type, max_items=100, now=NOW) == slow_events(SPEC, body, content_type)


def test_one_object_and_the_fraud_stream() -> None:
    one = json.dumps(VALID_EVENTS[1]).encode()
    assert event_records(SPEC, one, JSON, max_items=100, now=NOW) == slow_events(SPEC, one, JSON)
    stream = [{"id": g.id, "features": g.features, "label": g.label} for g in FraudStream(seed=4, drift_at=50).take(100)]
    body = json.dumps(stream).encode()
    assert event_records(SPEC, body, JSON, max_items=100, now=NOW) == slow_events(SPEC, body, JSON)


def test_generated_ids_and_other_tasks() -> None:
    ids, records = event_records(SPEC, json.dumps([{"features": features()}] * 3).encode(), JSON, max_items=100, now=NOW)
    assert len(set(ids)) == 3 and [json.loads(v)["id"] for _, v in records] == ids
    for task, label in (("regression", 2.5), ("multiclass", "b")):
        raw: dict[str, Any] = {
            "name": "t", "task": task, "features": {"x": "float", "k": "category", "o": {"type": "int", "required": False}},
            "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]},
        }
        if task == "multiclass":
            raw["label"] = {"classes": ["a", "b"]}
        spec = parse_app_spec(raw)
        body = json.dumps([{"id": "t-1", "features": {"x": 1.0, "k": "zé\u2028", "o": None}, "label": label},
                           {"id": "t-2", "features": {"x": 2, "k": "q", "o": 4}}]).encode()
        assert event_records(spec, body, JSON, max_items=100, now=NOW) == slow_events(spec, body, JSON)


@pytest.mark.parametrize("body", [
    b'[{"id": "b-1", "features": {"amount": 1, "hour": 100000000000000000000, "distance_km": 1, "is_foreign": true,'
    b' "card_present": true, "merchant": "grocery", "txn_last_hour": 0}}]',  # orjson reads it as a float; json as an int
    json.dumps([{"id": "big", "features": features(amount=1e300)}]).encode(),  # valid, but a float past 2**63: detailed path
    json.dumps([{"id": "r-1", "features": features(), "label": 1}]).encode(),  # not a binary label: refused
    json.dumps({"id": "r-2", "features": features(), "extra": 1}).encode(),
    json.dumps([{"id": "d-1", "features": features()}, {"id": "d-1", "features": features()}]).encode(),
    json.dumps([{"id": "has space", "features": features()}]).encode(),
    json.dumps([{"id": "nl\n", "features": features()}]).encode(),
    json.dumps([{"id": "ts-1", "features": features(), "timestamp": "2026-02-28T08:30:00"}]).encode(),
    json.dumps([{"id": "ts-2", "features": features(), "timestamp": "1999-02-28T08:30:00Z"}]).encode(),
    json.dumps([{"id": "ts-3", "features": features(), "timestamp": 1700000000}]).encode(),
    json.dumps([{"id": "f-1", "features": features(merchant="casino", hour="3")}]).encode(),
    json.dumps([{"id": "f-2", "features": {"amount": [[[[1]]]]}}]).encode(),
    json.dumps([{"id": "deep", "features": features(), "label": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]).encode(),
    b'{"id": "nan", "features": {"amount": NaN}}', b"", b"[]", b"5", b"null", b'{"id": "u", "features": {"merchant": "\xff"}}',
    b"\xef\xbb\xbf[]",
])
def test_everything_else_gets_the_detailed_verdict(body: bytes) -> None:
    fast = outcome(event_records, SPEC, body, JSON, max_items=100, now=NOW)
    slow = outcome(slow_events, SPEC, body, JSON)
    assert fast == slow


# --------------------------------------------------------------------------- predictor


def slow_request(body: bytes, max_batch: int | None) -> list[Checked]:
    data = loads_strict(decode_utf8(body), ["body"])
    instances = [parse_instance(data)] if max_batch is None else parse_batch(data, max_batch).instances
    check_instances(SPEC, instances)
    return [Checked(i.id, to_model_input(SPEC, i.features)) for i in instances]


@pytest.mark.parametrize(("body", "max_batch"), [
    ({"id": "p-1", "features": features()}, None),
    ({"features": features(hour=3.0)}, None),
    ({"id": None, "features": features()}, None),
    ({"instances": [{"id": f"p-{k}", "features": features(amount=k)} for k in range(5)] + [{"features": features()}]}, 10),
    # refused, with the detailed errors
    ({"id": "p-1", "features": features(), "label": True}, None),
    ({"id": "p 1", "features": features()}, None),
    ({"id": "p-1\n", "features": features()}, None),
    ({"id": 5, "features": features()}, None),
    ({"features": features(merchant="casino")}, None),
    ([{"features": features()}], None),
    ({"instances": [{"id": "d", "features": features()}, {"id": "d", "features": features()}]}, 10),
    ({"instances": [{"features": features()}] * 11}, 10),
    ({"instances": []}, 10),
    ({"instances": [{"features": features()}], "model": "x"}, 10),
    ({"instances": [{"features": {"amount": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}]}, 10),
    (b'{"features": {"amount": NaN}}', None),
    (b'{"features": {"amount": 1e400}}', None),
    (b"", None),
])
def test_predictor_reads_requests_as_the_detailed_path_does(body: Any, max_batch: int | None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert outcome(read_request, SPEC, raw, max_batch) == outcome(slow_request, raw, max_batch)


def test_predictor_answers_and_records_are_the_models_encodings() -> None:
    model = build_model(SPEC)
    for g in FraudStream(seed=9, drift_at=10**9).take(200):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    served = ServedModel(ModelMeta(app="fraud", model="fraud-lr", version=7, task="binary", examples_seen=200), model)
    items = read_request(SPEC, json.dumps({"instances": [{"id": "a-1", "features": features()}, {"features": features()}]}).encode(), 10)
    answers = predict_checked(SPEC, served, items)
    one = PredictionResponse(**answers[0], model="fraud-lr", version=7)
    assert json.loads(encode_prediction(answers[0], "fraud-lr", 7)) == one.model_dump(mode="json")
    batch = BatchResponse(model="fraud-lr", version=7, predictions=answers)
    assert json.loads(encode_predictions(answers, "fraud-lr", 7)) == batch.model_dump(mode="json")
    made_at = NOW
    for (key, value), answer in zip(prediction_records(answers, "fraud-lr", 7, made_at), answers, strict=True):
        assert key == answer["id"].encode()
        assert value == PredictionMade(**answer, model="fraud-lr", version=7, made_at=made_at).to_bytes()
    for prediction, shadow in (("yes", True), (0.25, False), (None, False)):
        answer = {"id": "x", "prediction": prediction, "probabilities": None}
        [(_, value)] = prediction_records([answer], "m", 1, made_at, shadow=shadow)
        assert value == PredictionMade(**answer, model="m", version=1, made_at=made_at, shadow=shadow).to_bytes()


# --------------------------------------------------------------------------- predictor: records cut from one encoding

_LABELS = st.one_of(
    st.sampled_from(["prediction", "id", "probabilities", "model", "a", ""]),
    st.text(max_size=12),  # quotes, backslashes, braces, control characters, non-BMP...
    st.sampled_from(['},{"id":', ',"prediction":', '"', "\\", "\u2028", "zé"]),
)
_IDS = st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z"), st.uuids().map(lambda u: u.hex))
_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_ANSWERS = st.lists(
    st.tuples(
        _IDS, st.one_of(st.booleans(), st.none(), _FINITE, _LABELS),
        st.one_of(st.none(), st.dictionaries(st.one_of(st.sampled_from(["true", "false"]), _LABELS), _FINITE, max_size=4)),
    ).map(lambda t: {"id": t[0], "prediction": t[1], "probabilities": t[2]}),  # predict_checked's key order
    min_size=1, max_size=30,
)


def _made(answers: list[dict[str, Any]], model: str, version: int, made_at: datetime, shadow: bool) -> list[tuple[bytes, bytes]]:
    return [
        (a["id"].encode(), PredictionMade(**a, model=model, version=version, made_at=made_at, shadow=shadow).to_bytes())
        for a in answers
    ]


@settings(max_examples=400, deadline=None)
@given(
    answers=_ANSWERS, model=st.one_of(st.sampled_from(["fraud-lr", "m"]), st.text(max_size=8)),
    version=st.integers(min_value=0, max_value=2**62), shadow=st.booleans(),
    made_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_records_cut_from_one_encoding_are_the_models_bytes(
    answers: list[dict[str, Any]], model: str, version: int, shadow: bool, made_at: datetime,
) -> None:
    expected = _made(answers, model, version, made_at, shadow)
    encoded = encode_answers(answers)
    assert prediction_records(answers, model, version, made_at, shadow=shadow, encoded=encoded) == expected
    assert prediction_records(answers, model, version, made_at, shadow=shadow) == expected
    body = encode_predictions(answers, model, version, encoded=encoded)
    assert body == encode_predictions(answers, model, version) == orjson.dumps({"model": model, "version": version, "predictions": answers})
    # Keys in another order than predict_checked's are noticed (encoded one by one), not cut wrong:
    for order in (("id", "probabilities", "prediction"), ("prediction", "id", "probabilities")):
        shuffled = [{k: a[k] for k in order} for a in answers]
        assert prediction_records(shuffled, model, version, made_at, shadow=shadow) == expected


@pytest.mark.parametrize("labels", [("false", "true"), ("a", "b", "c"), ("prediction", "x"), ("x", "prediction"), ("id", '},{"id":')])
def test_records_take_the_one_pass_whatever_the_labels(labels: tuple[str, ...], monkeypatch: Any) -> None:
    """The cut is the path taken for predict_checked's answers (one-by-one encoding refused
    here), labels named like the keys included."""
    answers = [
        {"id": f"p-{k}", "prediction": labels[k % len(labels)], "probabilities": {lab: 1 / (k + 2) for lab in labels}}
        for k in range(7)
    ] + [{"id": "q", "prediction": None, "probabilities": None}, {"id": "r", "prediction": 2.5, "probabilities": None}]
    expected = _made(answers, "m", 3, NOW, False)
    def refuse(*_: Any) -> None:
        raise AssertionError("encoded one by one")

    monkeypatch.setattr(predictions, "_records_one_by_one", refuse)
    assert prediction_records(answers, "m", 3, NOW, encoded=encode_answers(answers)) == expected
    assert prediction_records([], "m", 3, NOW) == []


def test_shadow_records_are_the_models_bytes() -> None:
    class Recorder:
        records: list[tuple[bytes, bytes]] = []

        def add(self, records: list[tuple[bytes, bytes]]) -> None:
            self.records += records

    model = build_model(SPEC)
    for g in FraudStream(seed=5, drift_at=10**9).take(100):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    served = ServedModel(ModelMeta(app="fraud", model="tree", version=4, task="binary", examples_seen=100), model)
    recorder = Recorder()
    items = [Checked(f"s-{k}", to_model_input(SPEC, features(amount=k))) for k in range(5)]
    scorer = ShadowScorer(SPEC, lambda: [served], recorder, sample=1.0)
    assert scorer.score(items) == 5
    made = [PredictionMade.model_validate_json(v) for _, v in recorder.records]
    assert all(m.shadow and m.model == "tree" and m.version == 4 for m in made)
    answers = predict_checked(SPEC, served, items)
    assert recorder.records == _made(answers, "tree", 4, made[0].made_at, True)


@pytest.mark.parametrize(("y", "proba"), [
    (True, {False: 0.25, True: 0.75}), (None, None), (None, {}), (2.5, None), (float("nan"), None), (float("inf"), None),
    ("a", {"a": float("nan"), "b": 0.5}), ("a", {"a": float("inf"), "b": float("-inf")}), (True, {True: 1e308, False: 1e308}),
    (True, {True: 10**400, False: 0.0}), (True, {True: 10**300, False: 0.0}), (True, {True: "0.5", False: 0.5}),
    (True, {True: "nan", False: 0.5}), (True, {True: "x", False: 0.5}), (True, {True: None, False: 0.5}),
    (True, {True: 1, False: 0}), (1e308, {True: 1e308}), (-0.0, {"a": -0.0}), (True, {True: complex(1, 0)}),
])
def test_the_finite_check_gives_the_element_by_element_verdict(y: Any, proba: Any) -> None:
    np = pytest.importorskip("numpy")
    assert predictions._finite_answer(y, proba) == predictions._finite_values(y, proba)
    if isinstance(y, float):
        assert predictions._finite_answer(np.float64(y), proba) == predictions._finite_values(np.float64(y), proba)
    if proba:
        as_numpy = {k: np.float64(v) if isinstance(v, float) else v for k, v in proba.items()}
        assert predictions._finite_answer(y, as_numpy) == predictions._finite_values(y, as_numpy)
