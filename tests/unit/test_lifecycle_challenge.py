"""Champion against challengers on the same examples, and when a challenger takes over (pure)."""

from __future__ import annotations

import pytest

from streamwise_core.contracts.appspec import PromotionSpec, Task
from streamwise_core.domain.lifecycle.challenge import Comparison, PromotionClock, Scoreboard


def test_models_are_compared_only_on_the_examples_both_scored() -> None:
    board = Scoreboard(capacity=100)
    for i in range(10):
        board.record("champ", f"e{i}", 1.0 if i < 5 else 0.0)
    for i in range(5, 15):  # the challenger started at e5 and is ahead of the champion
        board.record("chall", f"e{i}", 0.5)
    c = board.compare("champ", "chall", window=100)
    assert (c.common, c.champion_error, c.challenger_error) == (5, 0.0, 0.5)
    assert c.advantage == pytest.approx(-0.5)


def test_the_window_keeps_the_most_recent_common_examples() -> None:
    board = Scoreboard(capacity=100)
    for i in range(20):
        board.record("champ", f"e{i}", 1.0 if i < 10 else 0.0)
        board.record("chall", f"e{i}", 0.0)
    assert board.compare("champ", "chall", window=10).champion_error == 0.0
    assert board.compare("champ", "chall", window=20).champion_error == 0.5


def test_capacity_bounds_memory_and_forget_drops_a_model() -> None:
    board = Scoreboard(capacity=3)
    for i in range(10):
        board.record("champ", f"e{i}", 0.0)
        board.record("chall", f"e{i}", 1.0)
    assert board.compare("champ", "chall", window=100).common == 3
    board.forget("chall")
    assert board.compare("champ", "chall", window=100) == Comparison("chall", 0, None, None)


def test_as_dict_reports_accuracy_for_classifiers_and_mae_for_regressors() -> None:
    c = Comparison("chall", 10, 0.2, 0.1)
    assert c.as_dict(Task.BINARY)["champion_accuracy"] == pytest.approx(0.8)
    assert c.as_dict(Task.BINARY)["challenger_accuracy"] == pytest.approx(0.9)
    assert c.as_dict(Task.REGRESSION)["challenger_mae"] == pytest.approx(0.1)


def _ahead(by: float, common: int = 1000) -> Comparison:
    return Comparison("chall", common, 0.2, 0.2 - by)


def test_a_challenger_takes_over_only_after_staying_ahead_by_the_margin_for_hold_s() -> None:
    clock = PromotionClock(PromotionSpec(margin=0.01, hold_s=10, min_common=500))
    assert not clock.observe(_ahead(0.02), now=0.0)
    assert not clock.observe(_ahead(0.02), now=9.9)
    assert clock.ahead_for("chall", 9.9) == pytest.approx(9.9)
    assert clock.observe(_ahead(0.02), now=10.0)


def test_falling_back_restarts_the_clock() -> None:
    clock = PromotionClock(PromotionSpec(margin=0.01, hold_s=10, min_common=500))
    clock.observe(_ahead(0.02), now=0.0)
    assert not clock.observe(_ahead(0.005), now=5.0), "below the margin"
    assert clock.ahead_for("chall", 5.0) is None
    assert not clock.observe(_ahead(0.02), now=6.0)
    assert not clock.observe(_ahead(0.02), now=15.0)
    assert clock.observe(_ahead(0.02), now=16.0)


@pytest.mark.parametrize("comparison", [_ahead(0.05, common=499), Comparison("chall", 0, None, None), _ahead(0.0)])
def test_too_few_common_examples_or_no_advantage_never_promotes(comparison: Comparison) -> None:
    clock = PromotionClock(PromotionSpec(margin=0.0, hold_s=0, min_common=500))
    assert not clock.observe(comparison, now=100.0)


def test_auto_off_watches_but_never_promotes() -> None:
    clock = PromotionClock(PromotionSpec(auto=False, margin=0.01, hold_s=0, min_common=1))
    assert not clock.observe(_ahead(0.5), now=100.0)
    assert clock.ahead_for("chall", 101.0) == pytest.approx(1.0)
