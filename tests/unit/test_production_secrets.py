"""No development secret in production: every service refuses to start with one, and says which
(``Settings.development_secrets``); docker-compose.yml's defaults are exactly those secrets, so
``STREAMWISE_ENVIRONMENT=production docker compose up`` without real ones stops at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from streamwise_core.settings import DEV_API_KEY, DEV_DATABASE_PASSWORD, DEV_SIGNING_KEY, Settings
from streamwise_webapp.settings import DEV_ADMIN_PASSWORD, WebappSettings

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
    assert _default(common["STREAMWISE_DATABASE_URL"], "POSTGRES_PASSWORD") == DEV_DATABASE_PASSWORD
    admin = compose["services"]["webapp"]["environment"]["STREAMWISE_ADMIN_PASSWORD"]
    assert _default(admin, "STREAMWISE_ADMIN_PASSWORD") == DEV_ADMIN_PASSWORD


def test_compose_publishes_every_port_on_loopback_unless_told_otherwise() -> None:
    published = [(name, port) for name, service in _compose()["services"].items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert str(port).startswith("${STREAMWISE_PUBLISH_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"
