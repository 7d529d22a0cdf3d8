"""The model being served, replaced by one reference assignment (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamwise_core.codec import ModelMeta


@dataclass(frozen=True)
class ServedModel:
    meta: ModelMeta
    model: Any


class ModelHolder:
    """Requests read ``current`` once and use that object throughout, so a swap in
    between never mixes two versions; the event loop makes the assignment atomic."""

    def __init__(self) -> None:
        self.current: ServedModel | None = None
        self.swaps = 0

    @property
    def version(self) -> int | None:
        return self.current.meta.version if self.current else None

    def offer(self, candidate: ServedModel) -> bool:
        """Serve ``candidate`` if it is newer than what is served; versions never go back."""
        if self.current is not None and candidate.meta.version <= self.current.meta.version:
            return False
        self.current = candidate
        self.swaps += 1
        return True
