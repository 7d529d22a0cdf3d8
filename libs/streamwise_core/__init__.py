"""streamwise_core in three layers: ``contracts``, ``domain``, ``adapters``.

Models and checkpoints are pickles, and a pickle names the module of every class in it. Those
stored before the layers existed name the flat modules (``streamwise_core.pipeline``,
``streamwise_core.progressive``, ...): ``MOVED`` resolves those names to the modules as they
are now, so every version and checkpoint in Redis stays loadable. Nothing else should import
them by the old names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "appspec": "contracts", "codec": "contracts", "errors": "contracts", "events": "contracts",
    "record_schemas": "contracts", "retention": "contracts", "schema": "contracts", "signing": "contracts",
    "topic_config": "contracts",
    "inference": "domain", "lifecycle": "domain", "pipeline": "domain", "progressive": "domain", "retrain": "domain",
    "http": "adapters", "kafka": "adapters", "kafka_access": "adapters", "modelstore": "adapters",
    "redis_access": "adapters", "registry": "adapters", "settings": "adapters", "telemetry": "adapters",
}
"""The modules of the flat layout, by the layer they are in now."""


def moved_to(fullname: str) -> str | None:
    """Where a module of the flat layout is now (``None``: it did not move).

    >>> moved_to("streamwise_core.pipeline"), moved_to("streamwise_core.lifecycle.gate")
    ('streamwise_core.domain.pipeline', 'streamwise_core.domain.lifecycle.gate')
    >>> moved_to("streamwise_core.domain.pipeline") is None
    True
    """
    parts = fullname.split(".")
    if len(parts) < 2 or parts[0] != __name__ or parts[1] not in MOVED:
        return None
    return ".".join([__name__, MOVED[parts[1]], *parts[1:]])


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self._target)

    def exec_module(self, module: ModuleType) -> None:
        return None  # the module it stands for is loaded already


class _MovedModules(importlib.abc.MetaPathFinder):
    """Finds an old module name as the module it moved to (the same module object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        now = moved_to(fullname)
        return importlib.machinery.ModuleSpec(fullname, _Alias(now)) if now is not None else None


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())  # before the path finder, which would load a second copy of a submodule
