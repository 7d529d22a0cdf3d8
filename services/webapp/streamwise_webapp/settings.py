"""Settings of the web app: the shared ones plus refresh cadence and links to sibling services."""

from __future__ import annotations

from pydantic import Field

from streamwise_core.settings import Settings


class WebappSettings(Settings):
    """Read from ``STREAMWISE_*`` environment variables like every other service."""

    poll_interval_ms: int = Field(default=1000, ge=100)
    """How often the current-version pointer is polled, in case a pub/sub message is lost."""
    keepalive_s: float = Field(default=15.0, gt=0)
    """Seconds of silence after which the live stream sends a comment, so proxies keep it open."""
    history_limit: int = Field(default=200, ge=1, le=1000)
    """Versions the page loads for its chart."""
    ingest_url: str = "http://127.0.0.1:8001"
    predictor_url: str = "http://127.0.0.1:8002"
