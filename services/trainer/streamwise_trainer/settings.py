"""Trainer settings: the shared ones plus publishing cadence and batching."""

from __future__ import annotations

from pathlib import Path

from streamwise_core.settings import Settings


class TrainerSettings(Settings):
    publish_every_n: int = 1000
    """Publish a version after this many newly learned examples..."""
    publish_every_ms: int = 200
    """...or after this many milliseconds with anything new, whichever comes first."""
    batch_max: int = 1000
    batch_within_ms: int = 20
    join_capacity: int = 100_000
    dedupe_window: int = 20_000
    """How many recently learned event ids are remembered to ignore redeliveries."""
    data_dir: Path = Path("var/trainer")
    """Where faust keeps its local files (nothing the trainer's state depends on)."""
    http_host: str = "127.0.0.1"
    http_port: int = 8003
