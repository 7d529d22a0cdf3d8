"""Served versions scored beside the learner, so the gate compares on the same examples (pure).

Comparing a candidate's recent metric with the value the served version had at its own
publication goes wrong after a concept drift: every later version looks worse than one
measured before the drift, and nothing new would be served again. Instead, a served version
is kept frozen as an *anchor* and predicts on a sample of the examples the learner learns;
the gate compares the learner's progressive errors with the anchor's on exactly those.

Versions are published many times a second, so the anchor is not every served version: the
current anchor stays until the next one (the first version served after it was set) has
scored a full window, then the next takes its place. The evidence is therefore always at most
two windows old, and always a full window once the first anchor is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamwise_core.contracts.appspec import Task
from streamwise_core.domain.inference import predict
from streamwise_core.domain.lifecycle.gate import SameExamples

from .learner import prediction_error


@dataclass
class Anchor:
    version: int
    model: Any
    pairs: deque[tuple[float, float]] = field(default_factory=deque)
    """(learner's error, anchor's error) per sampled example, the newest last."""


class GateAnchors:
    def __init__(self, task: Task, window: int, sample_every: int = 1) -> None:
        self.task = task
        self.window = window
        self.sample_every = max(sample_every, 1)
        self.current: Anchor | None = None
        self.next: Anchor | None = None
        self._count = 0

    def score(self, x: dict[str, Any], y: Any, learner_error: float) -> None:
        """Called for each example learned (after the learner predicted it)."""
        self._count += 1
        if self._count % self.sample_every:
            return
        for anchor in (self.current, self.next):
            if anchor is not None:
                anchor.pairs.append((learner_error, prediction_error(self.task, y, predict(anchor.model, self.task, x)[0])))
                if len(anchor.pairs) > self.window:
                    anchor.pairs.popleft()
        if self.next is not None and len(self.next.pairs) >= self.window:
            self.current, self.next = self.next, None

    def wants(self) -> bool:
        """Whether the next served version would become an anchor (its model must be copied)."""
        return self.current is None or self.next is None

    def served(self, version: int, model: Callable[[], Any]) -> None:
        """A version became current; ``model`` makes a frozen copy of it if it is needed."""
        anchor = Anchor(version, model())
        if self.current is None:
            self.current = anchor
        elif self.next is None:
            self.next = anchor

    def evidence(self) -> SameExamples | None:
        anchor = self.current
        if anchor is None or not anchor.pairs:
            return None
        n = len(anchor.pairs)
        return SameExamples(
            anchor.version, n, sum(p[0] for p in anchor.pairs) / n, sum(p[1] for p in anchor.pairs) / n,
        )
