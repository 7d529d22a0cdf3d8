"""Champion against challengers on the same recent examples, and when a challenger takes over.

Every model scores each example before learning it (progressive validation). The scoreboard
keeps each model's errors by event id, so two models are compared on exactly the examples
both have scored, however far apart their consumers are. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from streamwise_core.contracts.appspec import PromotionSpec, Task


class Scoreboard:
    """Recent per-example errors of every model, keyed by event id.

    >>> board = Scoreboard(capacity=100)
    >>> for i, (ours, theirs) in enumerate([(1.0, 0.0), (0.0, 0.0), (1.0, 1.0), (1.0, 0.0)]):
    ...     board.record("fraud-lr", f"e{i}", ours)
    ...     board.record("fraud-tree", f"e{i}", theirs)
    >>> board.record("fraud-lr", "e4", 1.0)  # not scored by the challenger: not compared
    >>> found = board.compare("fraud-lr", "fraud-tree", window=3)  # the three most recent in common
    >>> found.common, found.champion_error, found.challenger_error, found.advantage
    (3, 0.6666666666666666, 0.3333333333333333, 0.3333333333333333)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._errors: dict[str, OrderedDict[str, float]] = {}

    def record(self, model: str, example_id: str, error: float) -> None:
        errors = self._errors.get(model)
        if errors is None:
            errors = self._errors[model] = OrderedDict()
        errors[example_id] = error
        if len(errors) > self.capacity:
            errors.popitem(last=False)

    def forget(self, model: str) -> None:
        self._errors.pop(model, None)

    def compare(self, champion: str, challenger: str, window: int) -> Comparison:
        """Mean errors of both over the most recent (by the champion's order) ``window``
        examples both have scored."""
        empty: OrderedDict[str, float] = OrderedDict()
        ours, theirs = self._errors.get(champion, empty), self._errors.get(challenger, empty)
        n = 0
        champion_sum = challenger_sum = 0.0
        for example_id in reversed(ours):
            other = theirs.get(example_id)
            if other is None:
                continue
            champion_sum += ours[example_id]
            challenger_sum += other
            n += 1
            if n >= window:
                break
        if n == 0:
            return Comparison(challenger, 0, None, None)
        return Comparison(challenger, n, champion_sum / n, challenger_sum / n)


@dataclass(frozen=True)
class Comparison:
    challenger: str
    common: int
    champion_error: float | None
    challenger_error: float | None

    @property
    def advantage(self) -> float | None:
        """How much lower the challenger's error is (accuracy points for a classifier)."""
        if self.champion_error is None or self.challenger_error is None:
            return None
        return self.champion_error - self.challenger_error

    def as_dict(self, task: Task) -> dict[str, object]:
        def metric(error: float | None) -> float | None:
            if error is None:
                return None
            return error if task is Task.REGRESSION else 1.0 - error

        name = "mae" if task is Task.REGRESSION else "accuracy"
        return {
            "challenger": self.challenger, "common_examples": self.common,
            f"champion_{name}": metric(self.champion_error), f"challenger_{name}": metric(self.challenger_error),
            "advantage": self.advantage,
        }


class PromotionClock:
    """Tracks, per challenger, since when it has beaten the champion by the margin."""

    def __init__(self, spec: PromotionSpec) -> None:
        self.spec = spec
        self._ahead_since: dict[str, float] = {}

    def observe(self, comparison: Comparison, now: float) -> bool:
        """Whether ``comparison`` makes its challenger the champion now."""
        advantage = comparison.advantage
        ahead = (
            advantage is not None and comparison.common >= self.spec.min_common
            and advantage >= self.spec.margin and advantage > 0
        )
        if not ahead:
            self._ahead_since.pop(comparison.challenger, None)
            return False
        since = self._ahead_since.setdefault(comparison.challenger, now)
        return self.spec.auto and now - since >= self.spec.hold_s

    def ahead_for(self, challenger: str, now: float) -> float | None:
        since = self._ahead_since.get(challenger)
        return None if since is None else now - since

    def reset(self) -> None:
        self._ahead_since.clear()
