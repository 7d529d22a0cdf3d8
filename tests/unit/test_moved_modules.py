"""Models and checkpoints pickled before streamwise_core had layers name its flat modules: they
still load, as the classes of today (one module object under both names, never a copy)."""

from __future__ import annotations

import importlib
import pickle

import pytest

import streamwise_core
from streamwise_core.contracts.retention import Retention


@pytest.mark.parametrize("old", sorted(streamwise_core.MOVED))
def test_an_old_module_name_is_the_module_it_moved_to(old: str) -> None:
    now = importlib.import_module(f"streamwise_core.{streamwise_core.MOVED[old]}.{old}")
    assert importlib.import_module(f"streamwise_core.{old}") is now


@pytest.mark.parametrize("old, now", [
    ("streamwise_core.lifecycle.gate", "streamwise_core.domain.lifecycle.gate"),
    ("streamwise_core.registry.repository", "streamwise_core.adapters.registry.repository"),
])
def test_a_submodule_of_a_moved_package_is_not_loaded_twice(old: str, now: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(now)


def test_a_pickle_that_names_a_flat_module_loads_as_todays_class() -> None:
    kept = Retention(keep_last=7)
    written = pickle.dumps(kept, protocol=0)  # protocol 0 names classes as plain text
    assert b"streamwise_core.contracts.retention" in written
    old = written.replace(b"streamwise_core.contracts.retention", b"streamwise_core.retention")
    loaded = pickle.loads(old)  # noqa: S301 - the test's own bytes
    assert type(loaded) is Retention and loaded == kept
