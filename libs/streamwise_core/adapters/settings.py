"""Typed settings shared by every service: one env prefix, nested with ``__``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from streamwise_core.contracts.appspec import AppSpec, load_app_spec
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.topic_config import TopicRetention, Topics
from streamwise_core.domain.lifecycle.gate import GateSettings

DEV_SIGNING_KEY = "dev:streamwise-development-signing-key"
DEV_API_KEY = "dev-api-key"
DEV_PASSWORD_MARK = "streamwise-dev-"
"""Every development password of docker-compose.yml and the dev overlay starts with this: the
owner's and each service's PostgreSQL and Redis password. Production refuses any of them."""
DEV_DATABASE_PASSWORD = DEV_PASSWORD_MARK + "password"
"""The PostgreSQL owner's password of docker-compose.yml and the dev overlay unless one is given."""


def _url_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


def _is_dev_password(password: str | None) -> bool:
    return password is not None and password.startswith(DEV_PASSWORD_MARK)


def _redis_guarded(url: str) -> bool:
    """A password (with or without a user) or a client certificate (``ssl_certfile``)."""
    parts = urlsplit(url)
    return bool(parts.password) or "ssl_certfile" in parse_qs(parts.query)


def _database_guarded(url: str) -> bool:
    """SQLite is a file, not a link; PostgreSQL needs a password, a client certificate (``sslcert``)
    or a Unix socket (the server's own peer authentication)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    if not parsed.drivername.startswith("postgresql"):
        return True
    host = parsed.query.get("host") or parsed.host or ""
    return bool(parsed.password) or "sslcert" in parsed.query or str(host).startswith("/")


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """``SASL_SSL`` in production: encrypted, and each service authenticated as its own user."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: Path | None = None
    """The CA of the brokers' certificates (default: the system's CAs)."""
    ssl_certfile: Path | None = None
    """The client's certificate, for mutual TLS (with ``ssl_keyfile``)."""
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    idempotence: bool = True
    """Idempotent producer; on for Apache Kafka, off for brokers that refuse it (Tansu)."""
    partitions: int = 1
    replication_factor: int = 1
    """Replicas of topics the services create; set to the cluster's (e.g. 3) in production."""
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500
    request_timeout_ms: int = 15000

    @model_validator(mode="after")
    def _complete_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password.get_secret_value()):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile and ssl_keyfile")
        if not self.security_protocol.endswith("SSL") and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(f"TLS files are set but security_protocol is {self.security_protocol}: use SSL or SASL_SSL")
        return self

    @property
    def encrypted(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def authenticated(self) -> bool:
        return self.security_protocol.startswith("SASL_") or self.ssl_certfile is not None


class Settings(BaseSettings):
    """Settings every service reads; a service adds its own fields in a subclass."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMWISE_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    app_spec: Path = Path("examples/fraud/streamwise.toml")
    topic_prefix: str = "streamwise"
    kafka: KafkaSettings = KafkaSettings()
    topic_retention: TopicRetention = TopicRetention()
    """How long the topics keep records (``STREAMWISE_TOPIC_RETENTION__EVENTS_MS``...): replay reaches
    back no further than the events and labels retention (see ``topic_config.py``)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "sqlite:///var/streamwise.db"
    signing_keys: SecretStr = SecretStr(DEV_SIGNING_KEY)
    """Comma-separated ``key_id:secret`` pairs; the first signs, all verify."""
    api_keys: SecretStr = SecretStr(DEV_API_KEY)
    """Comma-separated keys accepted on write endpoints."""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "text"
    """``json``: one JSON object per line (the image sets it); ``text``: lines for people."""
    otel: bool = False
    """FastAPI's native OpenTelemetry in the HTTP services (``telemetry.fastapi_telemetry``);
    off by default: they export Prometheus metrics, and the per-request check costs CPU."""
    gate: GateSettings = GateSettings()
    """The validation gate a new version passes before it is served (``STREAMWISE_GATE__*``)."""
    retention: Retention = Retention()
    """Which version blobs stay in Redis (``STREAMWISE_RETENTION__KEEP_LAST``, ...; see retention.py)."""

    @field_validator("topic_prefix")
    @classmethod
    def _safe_prefix(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError("topic_prefix may hold letters, digits, '-' and '_' only")
        return value

    links: ClassVar[frozenset[Literal["kafka", "redis", "database"]]] = frozenset({"kafka", "redis", "database"})
    """The backing services this service talks to; a service's subclass names fewer."""

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> Settings:
        if self.environment == "production":
            found = self.development_secrets() + self.open_links()
            if found:
                raise ValueError("not allowed in production: " + "; ".join(found))
        return self

    def open_links(self) -> list[str]:
        """Each link to Kafka, Redis or PostgreSQL that these settings configure without a guard.

        Only links the environment sets and the service uses are judged. Kafka's security protocol
        must be chosen, not left at its default: ``SASL_SSL``, or ``PLAINTEXT`` said explicitly for a
        broker on a private network (compose). Redis and PostgreSQL need a password or a client
        certificate."""
        found = []
        if "kafka" in self.links and "kafka" in self.model_fields_set and "security_protocol" not in self.kafka.model_fields_set:
            found.append("Kafka without a chosen security protocol (set STREAMWISE_KAFKA__SECURITY_PROTOCOL: "
                         "SASL_SSL, or PLAINTEXT on a private network)")
        if "redis" in self.links and "redis_url" in self.model_fields_set and not _redis_guarded(self.redis_url):
            found.append("Redis without a password (give STREAMWISE_REDIS_URL a user and password)")
        if "database" in self.links and "database_url" in self.model_fields_set and not _database_guarded(self.database_url):
            found.append("PostgreSQL without a password (give STREAMWISE_DATABASE_URL one, or sslcert)")
        return found

    def development_secrets(self) -> list[str]:
        """Each development secret these settings hold, with the variable that replaces it."""
        found = []
        dev_kid, _, dev_secret = DEV_SIGNING_KEY.partition(":")
        keys = self.signing_key_map
        if dev_kid in keys or dev_secret.encode() in keys.values():
            found.append("the development signing key (set STREAMWISE_SIGNING_KEYS)")
        if DEV_API_KEY in self.api_key_list:
            found.append("the development API key (set STREAMWISE_API_KEYS)")
        if _is_dev_password(_url_password(self.database_url)):
            found.append("a development database password (set POSTGRES_PASSWORD, or STREAMWISE_DATABASE_URL)")
        if _is_dev_password(urlsplit(self.redis_url).password):
            found.append("a development Redis password (set STREAMWISE_REDIS_URL)")
        return found

    @property
    def signing_key_map(self) -> dict[str, bytes]:
        """Signing keys by id, in order; the first one signs."""
        keys: dict[str, bytes] = {}
        for pair in self.signing_keys.get_secret_value().split(","):
            kid, sep, secret = pair.strip().partition(":")
            if not sep or not kid or len(secret) < 16:
                raise ValueError("each signing key must be 'key_id:secret' with a secret of 16+ chars")
            keys[kid] = secret.encode()
        return keys

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    @cached_property
    def spec(self) -> AppSpec:
        return load_app_spec(self.app_spec)

    @property
    def topics(self) -> Topics:
        return Topics.for_app(self.topic_prefix, self.spec.name)


class MigrationSettings(Settings):
    """The registry's owner migrating it, a one-shot step: it uses the database only."""

    links: ClassVar[frozenset[Literal["kafka", "redis", "database"]]] = frozenset({"database"})
