"""Challengers, retraining, drift and promotion in the app spec; where a new model starts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamwise_core.contracts.appspec import parse_app_spec
from streamwise_core.contracts.errors import SpecError
from streamwise_core.domain.lifecycle.roster import StartPosition

BASE = {
    "name": "shop", "task": "binary", "features": {"amount": "float"},
    "model": {"name": "lr", "steps": [{"use": "linear_model.LogisticRegression"}]},
}


def test_challengers_promotion_and_drift_are_declared_in_the_spec() -> None:
    spec = parse_app_spec({
        **BASE,
        "challengers": [
            {"name": "tree", "steps": [{"use": "tree.HoeffdingTreeClassifier"}], "drift": {"action": "challenger"}},
            {"name": "batch", "kind": "retrain", "retrain": {"every": 100, "window": 2000},
             "steps": [{"use": "linear_model.LogisticRegression"}]},
        ],
        "promotion": {"margin": 0.02, "hold_s": 5},
    })
    assert [m.name for m in spec.models] == ["lr", "tree", "batch"]
    assert spec.challengers[1].retrain.window == 2000 and spec.challengers[0].drift.action == "challenger"
    assert spec.promotion.margin == 0.02 and spec.promotion.auto
    one = spec.for_model(spec.challengers[0])
    assert one.model.name == "tree" and one.challengers == () and one.features == spec.features


@pytest.mark.parametrize(("change", "message"), [
    ({"challengers": [{"name": "lr", "steps": [{"use": "linear_model.LogisticRegression"}]}]}, "unique"),
    ({"promotion": {"margin": -1}}, "greater than or equal"),
    ({"challengers": [{"name": "x", "kind": "sometimes", "steps": [{"use": "a.B"}]}]}, "kind"),
    ({"challengers": [{"name": "x", "drift": {"action": "panic"}, "steps": [{"use": "a.B"}]}]}, "action"),
])
def test_bad_model_declarations_are_spec_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_app_spec({**BASE, **change})


def test_start_positions_parse_and_say_what_is_missing() -> None:
    assert StartPosition.parse(None).as_dict() == {"from": "earliest"}
    at = datetime(2026, 11, 29, 10, tzinfo=UTC)
    assert StartPosition.parse({"from": "time", "time": at.isoformat()}).time == at
    assert StartPosition.parse({"from": "offset", "offset": 5}).as_dict() == {"from": "offset", "offset": 5}
    for bad in ({"from": "offset"}, {"from": "time"}, {"from": "offset", "offset": -1}, {"from": "yesterday"}):
        with pytest.raises(ValueError):
            StartPosition.parse(bad)
