"""Shadow scoring: sampled requests are scored by every challenger in the background and the
predictions recorded with the champion's ids; the request path only enqueues."""

from __future__ import annotations

import asyncio

from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.events import PredictionMade
from streamwise_core.contracts.schema import validator
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_predictor.holder import ModelHolder, ServedModel
from streamwise_predictor.predictions import Checked, predict_checked
from streamwise_predictor.shadow import ShadowModels, ShadowScorer

from .trainer_support import trainer_settings

SPEC = trainer_settings().spec


class ListRecorder:
    """Stands in for ``RecordBuffer`` (the Kafka adapter, tested in the integration suite)."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def add(self, records: list[tuple[bytes, bytes]]) -> None:
        self.records.extend(records)


def _served(name: str, seed: int) -> ServedModel:
    model = build_model(SPEC)
    read = validator(SPEC).model_input
    for g in FraudStream(seed=seed, drift_at=10**9).take(300):
        model.learn_one(read(g.features), g.label)
    return ServedModel(ModelMeta(app="fraud", model=name, version=7, task="binary", examples_seen=300), model)


def _items(n: int) -> list[Checked]:
    read = validator(SPEC).model_input
    return [Checked(None, read(g.features) or {}) for g in FraudStream(seed=1, drift_at=10**9).take(n)]


def test_a_sampled_request_is_scored_by_every_challenger_with_the_champions_ids() -> None:
    champion, challengers = _served("fraud-lr", 1), [_served("tree", 2), _served("other", 3)]
    recorder = ListRecorder()
    scorer = ShadowScorer(SPEC, lambda: challengers, recorder, sample=0.5, draw=lambda: 0.1)
    items = _items(3)
    answers = predict_checked(SPEC, champion, items)
    scorer.offer(items, answers)
    assert scorer.queue.qsize() == 1 and recorder.records == [], "nothing scored on the request path"
    assert scorer.score(scorer.queue.get_nowait()) == 6
    made = [PredictionMade.model_validate_json(v) for _, v in recorder.records]
    assert [(m.model, m.id) for m in made] == [(c.meta.model, a["id"]) for c in challengers for a in answers]
    assert all(m.shadow and m.version == 7 for m in made)
    expected = predict_checked(SPEC, challengers[0], [Checked(a["id"], i.x) for a, i in zip(answers, items, strict=True)])
    assert [m.probabilities for m in made[:3]] == [e["probabilities"] for e in expected]


def test_unsampled_requests_cost_nothing_and_a_full_queue_drops() -> None:
    recorder = ListRecorder()
    never = ShadowScorer(SPEC, lambda: [_served("tree", 2)], recorder, sample=0.0)
    items = _items(1)
    answers = predict_checked(SPEC, _served("fraud-lr", 1), items)
    never.offer(items, answers)
    assert never.queue.qsize() == 0
    full = ShadowScorer(SPEC, lambda: [], recorder, sample=1.0, queue_max=2)
    for _ in range(5):
        full.offer(items, answers)
    assert (full.queue.qsize(), full.dropped) == (2, 3)


def test_the_background_task_drains_the_queue() -> None:
    recorder = ListRecorder()
    scorer = ShadowScorer(SPEC, lambda: [_served("tree", 2)], recorder, sample=1.0)
    items = _items(4)
    answers = predict_checked(SPEC, _served("fraud-lr", 1), items)

    async def go() -> None:
        task = asyncio.create_task(scorer.run())
        scorer.offer(items, answers)
        scorer.offer(items, answers)
        for _ in range(100):
            if scorer.scored == 8:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(go())
    assert scorer.scored == 8 and len(recorder.records) == 8


def test_the_model_just_promoted_never_shadows_itself_before_the_next_refresh() -> None:
    holder = ModelHolder()
    old, new, batch = _served("fraud-lr", 1), _served("fraud-lr-d1", 2), _served("fraud-batch", 3)
    holder.offer(old)
    shadows = ShadowModels(store=None, watcher=None, holder=holder)  # type: ignore[arg-type]  # refresh() not called
    shadows.models = {"fraud-lr-d1": new, "fraud-batch": batch}
    assert [m.meta.model for m in shadows.challengers()] == ["fraud-lr-d1", "fraud-batch"]
    promoted = ServedModel(new.meta, new.model, generation=1)
    assert holder.offer(promoted)
    assert [m.meta.model for m in shadows.challengers()] == ["fraud-batch"]
