"""The model being served, replaced by one reference assignment (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamwise_core.contracts.codec import ModelMeta


@dataclass(frozen=True)
class ServedModel:
    meta: ModelMeta
    model: Any
    generation: int = 0
    """The generation of the current pointer that named this version (see ``Pointer``)."""
    champion_generation: int = 0
    """The generation of the champion choice that named this model (see ``Champion``)."""

    @property
    def order(self) -> tuple[int, int, int]:
        """Newer is greater: a new champion, then a newer pointer of the same model, then a
        higher version within one pointer generation."""
        return (self.champion_generation, self.generation, self.meta.version)


class ModelHolder:
    """Requests read ``current`` once and use that object throughout, so a swap in
    between never mixes two versions; the event loop makes the assignment atomic.

    >>> from types import SimpleNamespace
    >>> def served(version, generation=0, champion_generation=0):
    ...     return ServedModel(SimpleNamespace(version=version), None, generation, champion_generation)
    >>> holder = ModelHolder()
    >>> holder.offer(served(3)), holder.version
    (True, 3)
    >>> holder.offer(served(2))  # a stale announcement never takes it back
    False
    >>> holder.offer(served(2, generation=1)), holder.version  # a rollback: a newer pointer generation
    (True, 2)
    >>> holder.offer(served(1, champion_generation=1)), holder.swaps  # a new champion
    (True, 3)
    """

    def __init__(self) -> None:
        self.current: ServedModel | None = None
        self.swaps = 0

    @property
    def version(self) -> int | None:
        return self.current.meta.version if self.current else None

    @property
    def generation(self) -> int | None:
        return self.current.generation if self.current else None

    def offer(self, candidate: ServedModel) -> bool:
        """Serve ``candidate`` if it is newer than what is served (``ServedModel.order``): a new
        champion, a newer pointer generation (a rollback goes to a lower version on purpose),
        or, within one generation, a higher version. A stale pointer or announcement never
        takes the served model back."""
        if self.current is not None and candidate.order <= self.current.order:
            return False
        self.current = candidate
        self.swaps += 1
        return True
