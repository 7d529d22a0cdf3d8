"""The examples in the docstrings of the small pure pieces run, as river's do."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import streamwise_core
from streamwise_core.contracts import events, schema, store_types, topic_config
from streamwise_core.domain.lifecycle import challenge, gate
from streamwise_predictor import holder
from streamwise_trainer import join, publish_policy

MODULES: list[ModuleType] = [streamwise_core, store_types, topic_config, challenge, gate, holder, join, publish_policy, schema, events]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
