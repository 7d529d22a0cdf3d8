"""Settings of the web app: the shared ones plus sign-in, the services it watches and the feed."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from streamwise_core.adapters.settings import Settings

DEV_ADMIN_PASSWORD = "admin-password"
"""The first admin's password of docker-compose.yml and the dev overlay unless one is given."""


class Upstream(BaseModel):
    """Where the web app itself reaches the other services (``STREAMWISE_UPSTREAM__*``)."""

    ingest: str = "http://127.0.0.1:8001"
    predictor: str = "http://127.0.0.1:8002"
    trainer: str = "http://127.0.0.1:8003"
    timeout_s: float = Field(default=3.0, gt=0)


class WebappSettings(Settings):
    """Read from ``STREAMWISE_*`` environment variables like every other service."""

    poll_interval_ms: int = Field(default=1000, ge=100)
    """How often the current-version pointer is polled, in case a pub/sub message is lost."""
    keepalive_s: float = Field(default=15.0, gt=0)
    """Seconds of silence after which the live stream sends a comment, so proxies keep it open."""
    history_limit: int = Field(default=200, ge=1, le=1000)
    """Versions the page loads for its chart."""
    ingest_url: str = "http://127.0.0.1:8001"
    """Public URL of ingest, for links the browser follows."""
    predictor_url: str = "http://127.0.0.1:8002"
    """Public URL of the predictor, for links the browser follows."""
    upstream: Upstream = Upstream()

    admin_user: str = Field(default="admin", pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")
    admin_password: SecretStr | None = None
    """When set, an admin of this name is created at start unless the user exists."""
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    cookie_secure: bool | None = None
    """``Secure`` session cookie (HTTPS only); default: on in production, off in development."""
    machine_role: Literal["viewer", "operator", "admin"] = "admin"
    """Role of the keys in ``STREAMWISE_API_KEYS`` (the deployment's shared machine keys)."""

    feed_rate: float = Field(default=2.0, gt=0, le=50)
    """Events per second, at most, that the live feed samples and asks the predictor about."""
    feed_size: int = Field(default=50, ge=1, le=500)
    """Feed items kept in memory (and shown)."""
    system_poll_s: float = Field(default=2.0, ge=0.2)
    """How often health, metrics and lag of the services are read."""
    dead_letters_kept: int = Field(default=500, ge=1, le=10_000)

    def development_secrets(self) -> list[str]:
        found = super().development_secrets()
        if self.admin_password is not None and self.admin_password.get_secret_value() == DEV_ADMIN_PASSWORD:
            found.append("the development admin password (set STREAMWISE_ADMIN_PASSWORD)")
        return found

    @model_validator(mode="after")
    def _secure_cookies_in_production(self) -> WebappSettings:
        if self.environment == "production" and self.cookie_secure is False:
            raise ValueError("STREAMWISE_COOKIE_SECURE=false is not allowed in production")
        return self

    @property
    def secure_cookies(self) -> bool:
        return self.cookie_secure if self.cookie_secure is not None else self.environment == "production"
