"""What the model store answers, shared by its ports and adapters: pointers, champions, the gate's callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pointer:
    """Which version is current, and the generation of that choice.

    Every move of the pointer (a publication that passed the gate, a promotion, a rollback)
    increments the generation in the same transaction, so predictors follow the newest
    generation: an intentional rollback is told apart from a stale pointer or announcement.
    """

    version: int
    generation: int


@dataclass(frozen=True)
class Champion:
    """The model predictors serve by default, and the generation of that choice (every change
    of champion increments it, so predictors tell a new choice from a stale one)."""

    model: str
    generation: int


def serving(champion: Champion | None, configured: str) -> Champion:
    """What predictions are served from now: the champion, or before any champion is set the
    app spec's model, at generation 0. The one answer the predictor, the web app and the
    control plane share.

    >>> serving(None, "fraud-lr")
    Champion(model='fraud-lr', generation=0)
    >>> serving(Champion("fraud-tree", 3), "fraud-lr")
    Champion(model='fraud-tree', generation=3)
    """
    return champion if champion is not None else Champion(configured, 0)


GateCallback = Callable[[int | None, bytes | None], tuple[bool, dict[str, Any]]]
"""Given the current version and its metadata bytes, say whether the new version becomes
current, and what to record about that decision."""


class PointerMoved(Exception):
    """The current pointer is no longer the version the caller expected."""
