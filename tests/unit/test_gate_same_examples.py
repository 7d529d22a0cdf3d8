"""The validation gate on the same examples: anchors (served versions kept frozen) are scored
beside the learner, so a drift does not make every new version look worse than an old one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streamwise_core.contracts.appspec import Task
from streamwise_core.contracts.codec import unpack
from streamwise_core.contracts.events import EventReceived
from streamwise_core.domain.lifecycle.gate import GateSettings, SameExamples, decide
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.anchors import GateAnchors
from streamwise_trainer.learning import Record
from streamwise_trainer.runtime import TrainerRuntime

from .trainer_support import SIGNER, runtime_without_clients

SAME = GateSettings(enabled=True, tolerance=0.01, min_examples=100)
ANY = {"accuracy_recent": 0.9}


@pytest.mark.parametrize(("same", "serve", "reason"), [
    (None, True, "0 of 100 examples"),
    (SameExamples(3, 99, 0.0, 0.5), True, "99 of 100"),
    (SameExamples(3, 100, 0.105, 0.10), True, "accuracy 0.8950 vs v3's 0.9000 on the same 100 examples"),
    (SameExamples(3, 100, 0.12, 0.10), False, "worse by more than 0.01"),
])
def test_accuracy_is_compared_on_the_examples_both_scored(same: SameExamples | None, serve: bool, reason: str) -> None:
    decision = decide(Task.BINARY, ANY, 10_000, ANY, 10_000, SAME, same)
    assert decision.serve is serve and reason in decision.reason
    if same is not None and same.examples >= 100:
        assert decision.details["anchor_version"] == 3 and decision.candidate == pytest.approx(1 - same.candidate_error)


def test_regression_uses_a_relative_tolerance_on_mae() -> None:
    gate = GateSettings(enabled=True, tolerance=0.1, min_examples=1)
    assert decide(Task.REGRESSION, {}, 1, {}, 1, gate, SameExamples(1, 5, 10.9, 10.0)).serve
    assert not decide(Task.REGRESSION, {}, 1, {}, 1, gate, SameExamples(1, 5, 11.1, 10.0)).serve


class Constant:
    def __init__(self, answer: bool) -> None:
        self.answer = answer

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return {self.answer: 1.0, not self.answer: 0.0}


def test_the_next_anchor_replaces_the_current_once_it_scored_a_full_window() -> None:
    anchors = GateAnchors(Task.BINARY, window=4)
    assert anchors.wants() and anchors.evidence() is None
    anchors.served(1, lambda: Constant(True))
    anchors.served(2, lambda: Constant(False))
    assert not anchors.wants()
    made: list[int] = []
    anchors.served(3, lambda: made.append(3))  # type: ignore[func-returns-value]
    assert made == [3] and anchors.current is not None and anchors.current.version == 1, "a third is not kept"
    for _ in range(3):
        anchors.score({}, True, learner_error=0.0)
    evidence = anchors.evidence()
    assert evidence is not None and (evidence.served_version, evidence.examples, evidence.served_error) == (1, 3, 0.0)
    anchors.score({}, True, learner_error=1.0)
    evidence = anchors.evidence()
    assert evidence is not None and evidence.served_version == 2 and evidence.served_error == 1.0
    assert evidence.candidate_error == 0.25 and anchors.wants()


def test_sampling_scores_one_example_in_n() -> None:
    anchors = GateAnchors(Task.BINARY, window=100, sample_every=3)
    anchors.served(1, lambda: Constant(True))
    for _ in range(9):
        anchors.score({}, True, learner_error=0.0)
    assert anchors.evidence() is not None and anchors.evidence().examples == 3  # type: ignore[union-attr]


def _records(runtime: TrainerRuntime, n: int, drift_at: int) -> list[Record]:
    out = []
    for i, g in enumerate(FraudStream(seed=4, drift_at=drift_at).take(n)):
        value = EventReceived(id=g.id, features=g.features, label=g.label, timestamp=datetime.now(UTC)).to_bytes()
        out.append(Record(runtime.settings.topics.events, 0, i, g.id.encode(), value))
    return out


def _served_after_drift(compare: str) -> tuple[int, int]:
    """Publish every 200 examples through the gate (as the publisher would), over a drift at
    4,000; return how many versions after the drift were served, and how many were gated."""
    gate = GateSettings(enabled=True, tolerance=0.01, min_examples=300, compare=compare, sample_every=1)  # type: ignore[arg-type]
    runtime = runtime_without_clients(gate=gate)
    records = _records(runtime, 9000, drift_at=4000)
    served_meta: bytes | None = None
    served_after = gated_after = 0
    for start in range(0, len(records), 200):
        runtime.trainer.handle_many(records[start : start + 200])
        snapshot = runtime.trainer.snapshot(SIGNER, checkpoint=False)
        decision = runtime.gate(snapshot.meta, served_meta)
        if decision.serve:
            served_meta = snapshot.model.meta
            anchors = runtime.trainer.anchors
            if anchors is not None and anchors.wants():
                anchors.served(snapshot.meta.version, lambda: unpack(snapshot.model, SIGNER)[1])
        if start >= 5000:  # the drift is noticed and learned from by then
            gated_after += 1
            served_after += decision.serve
    return served_after, gated_after


def test_after_a_drift_the_same_examples_gate_keeps_serving_what_is_learned() -> None:
    same_served, total = _served_after_drift("same")
    publish_served, _ = _served_after_drift("publish")
    print(f"versions served after the drift: same examples {same_served}/{total}, publish-time values {publish_served}/{total}")
    assert same_served >= 0.8 * total
    assert publish_served < same_served
