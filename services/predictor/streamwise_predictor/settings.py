"""Predictor settings: the shared ones plus swap polling and request limits."""

from __future__ import annotations

from streamwise_core.settings import Settings


class PredictorSettings(Settings):
    poll_interval_ms: int = 1000
    """Also poll the current version, since Redis pub/sub can drop a message."""
    max_batch: int = 1000
    max_body_bytes: int = 2 * 1024 * 1024
