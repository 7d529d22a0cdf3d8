"""No development secret in production: every service refuses to start with one, and says which
(``Settings.development_secrets``); docker-compose.yml's defaults are exactly those secrets, so
``STREAMWISE_ENVIRONMENT=production docker compose up`` without real ones stops at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from streamwise_core.adapters.settings import DEV_API_KEY, DEV_DATABASE_PASSWORD, DEV_PASSWORD_MARK, DEV_SIGNING_KEY, Settings
from streamwise_webapp.settings import DEV_ADMIN_PASSWORD, WebappSettings
from tests.deploy.support import SETTINGS_CLASSES, compose_environment, load_compose, settings_from_env

ROOT = Path(__file__).resolve().parents[2]
REAL = {
    "signing_keys": SecretStr("prod:0123456789abcdef0123"), "api_keys": SecretStr("a-real-key"),
    "database_url": "postgresql+psycopg://streamwise:a%40real-password@db:5432/streamwise",
}


def test_real_secrets_start_in_production() -> None:
    assert WebappSettings(environment="production", admin_password=SecretStr("a-real-admin-password"), **REAL).development_secrets() == []  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "named"), [
    ("signing_keys", SecretStr(DEV_SIGNING_KEY), "STREAMWISE_SIGNING_KEYS"),
    ("api_keys", SecretStr(f"a-real-key,{DEV_API_KEY}"), "STREAMWISE_API_KEYS"),
    ("database_url", f"postgresql+psycopg://streamwise:{DEV_DATABASE_PASSWORD}@db:5432/streamwise", "POSTGRES_PASSWORD"),
    ("admin_password", SecretStr(DEV_ADMIN_PASSWORD), "STREAMWISE_ADMIN_PASSWORD"),
])
def test_each_development_secret_is_refused_in_production_by_name(field: str, value: object, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        WebappSettings(environment="production", **{**REAL, field: value})  # type: ignore[arg-type]
    WebappSettings(environment="development", **{**REAL, field: value})  # type: ignore[arg-type]


def test_every_development_secret_is_named_at_once() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(environment="production", database_url=f"postgresql://u:{DEV_DATABASE_PASSWORD}@db/s")
    assert all(name in str(refused.value) for name in ("STREAMWISE_SIGNING_KEYS", "STREAMWISE_API_KEYS", "POSTGRES_PASSWORD"))


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _default(value: str, variable: str) -> str:
    match = re.search(r"\$\{" + variable + r":-([^}]*)\}", value)
    assert match, f"{variable} has no default in {value!r}"
    return match.group(1)


def test_compose_defaults_are_the_development_secrets_the_services_refuse_in_production() -> None:
    compose = _compose()
    common = compose["x-streamwise-env"]
    assert _default(common["STREAMWISE_SIGNING_KEYS"], "STREAMWISE_SIGNING_KEYS") == DEV_SIGNING_KEY
    assert _default(common["STREAMWISE_API_KEYS"], "STREAMWISE_API_KEYS") == DEV_API_KEY
    admin = compose["services"]["webapp"]["environment"]["STREAMWISE_ADMIN_PASSWORD"]
    assert _default(admin, "STREAMWISE_ADMIN_PASSWORD") == DEV_ADMIN_PASSWORD
    text = (ROOT / "docker-compose.yml").read_text()
    passwords = re.findall(r"\$\{([A-Z_]*PASSWORD):-([^}]*)\}", text)
    assert len({name for name, _ in passwords}) >= 7, passwords
    for name, default in passwords:
        assert default.startswith(DEV_PASSWORD_MARK) or name == "STREAMWISE_ADMIN_PASSWORD", f"{name}: {default}"


@pytest.mark.parametrize(("service", "named"), [
    ("trainer", ["a development database password", "a development Redis password"]),
    ("predictor", ["a development Redis password"]),
    ("webapp", ["a development database password", "a development Redis password", "STREAMWISE_ADMIN_PASSWORD"]),
    ("migrate", ["a development database password"]),
])
def test_compose_in_production_with_default_passwords_is_refused_by_name(
    service: str, named: list[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``STREAMWISE_ENVIRONMENT=production docker compose up`` with real keys but the default
    passwords: each service that uses one stops and names it."""
    shell = {"STREAMWISE_ENVIRONMENT": "production", "STREAMWISE_SIGNING_KEYS": "prod:0123456789abcdef0123",
             "STREAMWISE_API_KEYS": "a-real-key"}
    env = compose_environment(load_compose(shell)["services"][service])
    with pytest.raises(ValidationError) as refused:
        settings_from_env(monkeypatch, SETTINGS_CLASSES[service], env)
    assert all(n in str(refused.value) for n in named), str(refused.value)


def test_compose_in_production_with_real_passwords_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = {"STREAMWISE_ENVIRONMENT": "production", "STREAMWISE_SIGNING_KEYS": "prod:0123456789abcdef0123",
             "STREAMWISE_API_KEYS": "a-real-key", "STREAMWISE_ADMIN_PASSWORD": "a-real-admin-password",
             **{v: f"real-{v.lower()}" for v in ("POSTGRES_PASSWORD", "POSTGRES_TRAINER_PASSWORD", "POSTGRES_WEBAPP_PASSWORD",
                                                 "REDIS_TRAINER_PASSWORD", "REDIS_PREDICTOR_PASSWORD", "REDIS_WEBAPP_PASSWORD")}}
    services = load_compose(shell)["services"]
    for service in ("trainer", "ingest", "predictor", "webapp", "migrate", "topics"):
        settings = settings_from_env(monkeypatch, SETTINGS_CLASSES[service], compose_environment(services[service]))
        assert settings.environment == "production"


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise() -> None:
    published = [(name, port) for name, service in _compose()["services"].items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("${STREAMWISE_PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


GUARDED = {**REAL, "redis_url": "rediss://streamwise_webapp:a-real-password@redis:6379/0",
           "kafka": {"bootstrap": "kafka:9093", "security_protocol": "SASL_SSL", "sasl_username": "webapp",
                     "sasl_password": "a-real-password"}}


@pytest.mark.parametrize(("field", "value", "named"), [
    ("kafka", {"bootstrap": "kafka:9092"}, "STREAMWISE_KAFKA__SECURITY_PROTOCOL"),
    ("redis_url", "redis://redis:6379/0", "Redis without a password"),
    ("database_url", "postgresql+psycopg://streamwise@db:5432/streamwise", "PostgreSQL without a password"),
])
def test_an_unguarded_link_is_refused_in_production(field: str, value: object, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(environment="production", **{**GUARDED, field: value})  # type: ignore[arg-type]
    Settings(environment="development", **{**GUARDED, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value"), [
    ("kafka", {"bootstrap": "kafka:9092", "security_protocol": "PLAINTEXT"}),  # chosen for a private network
    ("redis_url", "rediss://redis:6379/0?ssl_certfile=/tls/tls.crt&ssl_keyfile=/tls/tls.key"),
    ("database_url", "postgresql+psycopg://streamwise@db/streamwise?sslcert=/tls/tls.crt&sslkey=/tls/tls.key"),
    ("database_url", "postgresql+psycopg://streamwise@/streamwise?host=/var/run/postgresql"),
    ("database_url", "sqlite:////data/registry.db"),
])
def test_a_guarded_or_chosen_link_starts_in_production(field: str, value: object) -> None:
    assert Settings(environment="production", **{**GUARDED, field: value}).open_links() == []  # type: ignore[arg-type]


def test_only_the_links_a_service_uses_are_judged() -> None:
    """Ingest uses neither Redis nor the registry: an unguarded default URL of theirs is no link."""
    from streamwise_ingest.settings import IngestSettings
    from streamwise_predictor.settings import PredictorSettings

    ingest = {**GUARDED, "redis_url": "redis://redis:6379/0", "database_url": "postgresql://u@db/s"}
    assert IngestSettings(environment="production", **ingest).open_links() == []  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Redis without a password"):
        PredictorSettings(environment="production", **ingest)  # type: ignore[arg-type]
