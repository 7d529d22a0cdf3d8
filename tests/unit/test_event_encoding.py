"""The records' encoders beside their models (``EventReceived.records``, ``PredictionMade.records``)
write exactly the models' bytes, which the JSON schemas of docs/schemas accept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwise_core.contracts import events, record_schemas
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.events import EventReceived, PredictionMade
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_predictor.holder import ServedModel
from streamwise_predictor.predictions import (
    BatchResponse,
    Checked,
    PredictionResponse,
    encode_answers,
    encode_prediction,
    encode_predictions,
    predict_checked,
)
from streamwise_predictor.shadow import ShadowScorer

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SCHEMAS = {name: record_schemas.validator(record_schemas.load_schema(ROOT / "docs" / "schemas", name)) for name in ("event", "prediction")}


def schema_errors(name: str, data: bytes) -> list[Any]:
    return list(SCHEMAS[name].iter_errors(record_schemas.read_json(data)))


# --------------------------------------------------------------------------- events

_TEXT = st.text(max_size=10)  # quotes, backslashes, control characters, non-BMP...
_FEATURE_VALUES = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.integers(),  # past 64 bits: the model writes them
    st.floats(allow_nan=False, allow_infinity=False), _TEXT,
)
_TIMESTAMPS = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.timezones()),
    st.builds(lambda d, s: d.replace(tzinfo=timezone(timedelta(seconds=s))),  # offsets with seconds: orjson rounds them
              st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1)), st.integers(-86399, 86399)),
)
_EVENTS = st.lists(
    st.tuples(
        st.one_of(st.from_regex(events.ID, fullmatch=True), _TEXT),
        st.dictionaries(_TEXT, _FEATURE_VALUES, max_size=6),
        st.one_of(st.none(), st.booleans(), _TEXT, st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**30), 10**30)),
        _TIMESTAMPS,
    ),
    max_size=6,
)


def model_records(rows: list[tuple[Any, ...]], received_at: datetime) -> list[tuple[bytes, bytes]]:
    return [
        (i.encode(), EventReceived(id=i, features=f, label=y, timestamp=t or received_at, received_at=received_at).to_bytes())
        for i, f, y, t in rows
    ]


@settings(max_examples=500, deadline=None)
@given(rows=_EVENTS, received_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_event_records_are_the_models_bytes(rows: list[tuple[Any, ...]], received_at: datetime) -> None:
    records = EventReceived.records(rows, received_at)
    assert records == model_records(rows, received_at)
    for _, value in records:
        assert schema_errors("event", value) == []


@pytest.mark.parametrize("row", [
    ("e-1", {"amount": 12.5, "hour": 3, "card": True, "merchant": "fuel"}, True, None),
    ("e-2", {}, None, datetime(2026, 2, 28, 8, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2)))),
    ("e-3", {"x": -0.0, "y": 1e300, "z": 5e-324, "n": 2**64 - 1, "m": -(2**63)}, 2.5, datetime(2026, 2, 28, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))),
    ("e-4", {"big": 10**30, "k": 'a"b\\c\u2028\x00'}, 3, datetime(2026, 2, 28, tzinfo=timezone(timedelta(hours=2, seconds=30)))),
    ("e\"5", {"x": 1}, "class-a", datetime(2026, 2, 28)),  # an id that needs escaping; a naive timestamp
])
def test_event_records_of_edge_values(row: tuple[Any, ...]) -> None:
    assert EventReceived.records([row], NOW) == model_records([row], NOW)


def test_what_orjson_cannot_write_is_written_by_the_model() -> None:
    class Odd(float):
        pass

    row = ("o-1", {"x": Odd(1.5)}, 10**400, None)
    with pytest.raises(ValueError, match="validation error"):  # the model's verdict: a label too large
        EventReceived.records([row], NOW)
    assert EventReceived.records([("o-2", {"x": Odd(1.5)}, None, None)], NOW) == model_records([("o-2", {"x": 1.5}, None, None)], NOW)
    assert EventReceived.records([], NOW) == []


# --------------------------------------------------------------------------- predictions

_LABELS = st.one_of(
    st.sampled_from(["prediction", "id", "probabilities", "model", "a", ""]),
    st.text(max_size=12),
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


def made(answers: list[dict[str, Any]], model: str, version: int, made_at: datetime, shadow: bool) -> list[tuple[bytes, bytes]]:
    return [
        (a["id"].encode(), PredictionMade(**a, model=model, version=version, made_at=made_at, shadow=shadow).to_bytes())
        for a in answers
    ]


@settings(max_examples=400, deadline=None)
@given(
    answers=_ANSWERS, model=st.one_of(st.sampled_from(["fraud-lr", "m"]), st.text(max_size=8)),
    version=st.integers(min_value=0, max_value=2**62), shadow=st.booleans(),
    made_at=st.one_of(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
        st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.timezones()),
    ),
)
def test_prediction_records_are_the_models_bytes(
    answers: list[dict[str, Any]], model: str, version: int, shadow: bool, made_at: datetime,
) -> None:
    expected = made(answers, model, version, made_at, shadow)
    encoded = encode_answers(answers)
    assert PredictionMade.records(answers, model, version, made_at, shadow=shadow, encoded=encoded) == expected
    assert PredictionMade.records(answers, model, version, made_at, shadow=shadow) == expected
    for _, value in expected[:3]:
        assert schema_errors("prediction", value) == []
    body = encode_predictions(answers, model, version, encoded=encoded)
    assert body == encode_predictions(answers, model, version) == orjson.dumps({"model": model, "version": version, "predictions": answers})
    # Keys in another order are noticed (encoded one by one), not cut wrong:
    for order in (("id", "probabilities", "prediction"), ("prediction", "id", "probabilities")):
        shuffled = [{k: a[k] for k in order} for a in answers]
        assert PredictionMade.records(shuffled, model, version, made_at, shadow=shadow) == expected


@pytest.mark.parametrize("labels", [("false", "true"), ("a", "b", "c"), ("prediction", "x"), ("x", "prediction"), ("id", '},{"id":')])
def test_a_batch_is_cut_from_one_encoding_whatever_the_labels(labels: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        {"id": f"p-{k}", "prediction": labels[k % len(labels)], "probabilities": {lab: 1 / (k + 2) for lab in labels}}
        for k in range(7)
    ] + [{"id": "q", "prediction": None, "probabilities": None}, {"id": "r", "prediction": 2.5, "probabilities": None}]
    expected = made(answers, "m", 3, NOW, False)

    def refuse(*_: Any) -> None:
        raise AssertionError("encoded one by one")

    monkeypatch.setattr(events, "_predictions_one_by_one", refuse)
    assert PredictionMade.records(answers, "m", 3, NOW, encoded=encode_answers(answers)) == expected
    assert PredictionMade.records([], "m", 3, NOW) == []


@pytest.mark.parametrize("answer", [
    {"id": "s-1", "prediction": False, "probabilities": {"false": 0.93, "true": 0.07}},
    {"id": "0f" * 16, "prediction": "x\"y", "probabilities": {"prediction": 1.0}},
    {"id": "a", "prediction": None, "probabilities": None},
    {"id": "b", "prediction": 2.5, "probabilities": None},
])
@pytest.mark.parametrize("shadow", [False, True])
def test_a_single_answer_is_encoded_alone(answer: dict[str, Any], shadow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    alone: list[int] = []
    one_by_one = events._predictions_one_by_one

    def counted(answers: list[dict[str, Any]], *args: Any) -> list[tuple[bytes, bytes]]:
        alone.append(len(answers))
        return one_by_one(answers, *args)

    monkeypatch.setattr(events, "_predictions_one_by_one", counted)
    assert PredictionMade.records([answer], "fraud-lr", 7, NOW, shadow=shadow) == made([answer], "fraud-lr", 7, NOW, shadow)
    assert alone == [1]
    two = [answer, {**answer, "id": "other"}]
    assert PredictionMade.records(two, "fraud-lr", 7, NOW, shadow=shadow) == made(two, "fraud-lr", 7, NOW, shadow)
    assert alone == [1]  # two answers are cut from one encoding


# --------------------------------------------------------------------------- the predictor's answers and records


def trained() -> ServedModel:
    model = build_model(SPEC)
    for g in FraudStream(seed=9, drift_at=10**9).take(200):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    return ServedModel(ModelMeta(app="fraud", model="fraud-lr", version=7, task="binary", examples_seen=200), model)


def test_the_predictors_answers_and_records_are_the_models_encodings() -> None:
    served = trained()
    items = [Checked(f"a-{k}", to_model_input(SPEC, g.features)) for k, g in enumerate(FraudStream(seed=10).take(3))] + [
        Checked(None, to_model_input(SPEC, FraudStream(seed=11).take(1)[0].features)),
    ]
    answers = predict_checked(SPEC, served, items)
    one = PredictionResponse(**answers[0], model="fraud-lr", version=7)
    assert orjson.loads(encode_prediction(answers[0], "fraud-lr", 7)) == one.model_dump(mode="json")
    batch = BatchResponse(model="fraud-lr", version=7, predictions=answers)
    assert orjson.loads(encode_predictions(answers, "fraud-lr", 7)) == batch.model_dump(mode="json")
    assert PredictionMade.records(answers, "fraud-lr", 7, NOW) == made(answers, "fraud-lr", 7, NOW, False)


def test_shadow_records_are_the_models_bytes() -> None:
    class Recorder:
        records: list[tuple[bytes, bytes]] = []

        def add(self, records: list[tuple[bytes, bytes]]) -> None:
            self.records += records

    served = trained()
    recorder = Recorder()
    items = [Checked(f"s-{k}", to_model_input(SPEC, g.features)) for k, g in enumerate(FraudStream(seed=5).take(5))]
    scorer = ShadowScorer(SPEC, lambda: [served], recorder, sample=1.0)
    assert scorer.score(items) == 5
    recorded = [PredictionMade.model_validate_json(v) for _, v in recorder.records]
    assert all(m.shadow and m.model == "fraud-lr" and m.version == 7 for m in recorded)
    assert recorder.records == made(predict_checked(SPEC, served, items), "fraud-lr", 7, recorded[0].made_at, True)
