"""The three places that create topics agree with ``streamwise_core.contracts.topic_config``: the local suite and
compose (whose trainer and ``topics`` step run ``ensure_app_topics`` with their environment) and the
prod overlay's Strimzi ``KafkaTopic`` objects (whose ``spec.config`` repeats the values)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamwise_core.adapters.settings import Settings, Topics
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.topic_config import TopicRetention, topic_configs
from streamwise_devstack.suite import suite_env
from streamwise_trainer import app as trainer_app
from streamwise_trainer.settings import TrainerSettings

from .support import APP_SPEC, compose_command, compose_environment, generated, load_compose, objects, settings_from_env

pytestmark = pytest.mark.deploy

APP = load_app_spec(APP_SPEC).name
KINDS = tuple(Topics.model_fields)
NOT_RETENTION = {"min.insync.replicas"}
"""What a KafkaTopic also sets: durability with three replicas, not the module's business."""


def by_kind(topics: Topics, configs: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Configs by topic kind (``events``...), so places with other prefixes compare."""
    assert sorted(configs) == sorted(topics.all())
    return {kind: configs[getattr(topics, kind)] for kind in KINDS}


def topic_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The shared settings from a place's environment, its topic settings only (the rest is checked elsewhere)."""
    return settings_from_env(monkeypatch, Settings, {k: v for k, v in env.items() if k.startswith("STREAMWISE_TOPIC_")})


def from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, dict[str, str]]:
    """The topic configs the code derives from a place's environment, by kind."""
    settings = topic_settings(monkeypatch, env)
    topics = Topics.for_app(settings.topic_prefix, APP)
    return by_kind(topics, topic_configs(topics, settings.topic_retention))


DEFAULTS = by_kind(Topics.for_app("any", APP), topic_configs(Topics.for_app("any", APP), TopicRetention()))


def test_local_suite_uses_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    env = suite_env(bootstrap="127.0.0.1:9092", idempotence=False, redis_url="redis://127.0.0.1:6379/0",
                    database_url="sqlite:///x.db", app_spec=APP_SPEC)
    assert from_env(monkeypatch, env) == DEFAULTS


def test_compose_uses_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load_compose()
    command = compose_command(compose["services"]["topics"])
    assert "ensure_app_topics(Settings())" in command[-1]
    topics_step = from_env(monkeypatch, compose_environment(compose["services"]["topics"]))
    # The trainer converges the topics at its start with its own settings: the same ones.
    assert topics_step == from_env(monkeypatch, compose_environment(compose["services"]["trainer"])) == DEFAULTS


def test_strimzi_topics_carry_the_modules_values(monkeypatch: pytest.MonkeyPatch) -> None:
    cm = generated("prod", "ConfigMap", "streamwise-settings")["data"]
    settings = topic_settings(monkeypatch, cm)
    topics = Topics.for_app(settings.topic_prefix, APP)
    wanted = topic_configs(topics, settings.topic_retention)
    declared: dict[str, dict[str, Any]] = {t["spec"]["topicName"]: t["spec"]["config"] for t in objects("prod", "KafkaTopic")}
    assert sorted(declared) == sorted(wanted)
    for name, config in declared.items():
        assert {k: str(v) for k, v in config.items() if k not in NOT_RETENTION} == wanted[name], name
    assert by_kind(topics, wanted) == DEFAULTS


def test_the_trainer_creates_the_topics_with_the_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The local suite and compose start the trainer, whose ``prepare_shared`` creates the topics."""
    called: list[Settings] = []

    async def ensure_app_topics(settings: Settings) -> None:
        called.append(settings)

    monkeypatch.setattr(trainer_app, "ensure_app_topics", ensure_app_topics)
    monkeypatch.setattr(trainer_app, "migrate", lambda url: None)
    settings = TrainerSettings(app_spec=APP_SPEC, database_url=f"sqlite:///{tmp_path / 'r.db'}")
    asyncio.run(trainer_app.prepare_shared(settings))
    assert called == [settings]
