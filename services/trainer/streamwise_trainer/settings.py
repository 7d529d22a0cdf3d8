"""Trainer settings: the shared ones plus publishing cadence and batching."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from streamwise_core.adapters.settings import Settings


class TrainerSettings(Settings):
    publish_every_n: int = 1000
    """Publish a version after this many newly learned examples..."""
    publish_every_ms: int = 100
    """...or after this many milliseconds with anything new, whichever comes first..."""
    publish_busy_max: float = Field(default=0.01, gt=0.0, le=1.0)
    """...but spend at most this share of the time serialising versions (the CPU time of a
    version without a checkpoint, smoothed; a forked child's wall time). Storing a version and
    the slower learning right after it cost about as much again. A linear model (~0.5 ms) is
    not held back; a Hoeffding tree that takes 15 ms is published every 1.5 s at most
    (docs/benchmarks.md, *Learning throughput*). Raise it for fresher large models, at the cost
    of learning."""
    snapshot_fork_above_kb: int = 1024
    """Serialise in a forked child, learning meanwhile, when the last blobs of the model (and of
    the checkpoint, if this version carries one) came to more than this: pickling a few MB
    takes tens of ms, a fork of the trainer ~5-15 ms. Below it, a worker thread (learning
    waits). -1: never fork."""
    checkpoint_every_ms: int = 2000
    """Checkpoint the whole state with a version at most this often (and on shutdown); a
    restart replays what came after the last checkpoint, exactly once."""
    batch_max: int = 500
    """Most records learned between two turns of the event loop (web, timers, publishing)."""
    batch_wait_ms: int = 20
    """How long a fetch waits for records when none are buffered."""
    fetch_min_kb: int = Field(default=0, ge=0)
    """The broker answers a fetch once this much is there (or after ``fetch_max_wait_ms``):
    larger means fewer, fuller fetches for both, at up to that wait in freshness. 0: at once."""
    fetch_max_wait_ms: int = Field(default=20, ge=0)
    """Longest the broker holds a fetch waiting for ``fetch_min_kb``. Short, because aiokafka
    keeps one fetch in flight per broker: while a fetch for a quiet partition (the labels
    topic, when labels come inline) is held, the busy partition's next fetch waits behind it.
    At aiokafka's 500 ms the trainer spent a quarter of its time waiting for records it was
    behind on; at 20 ms an idle trainer asks 50 times a second."""
    join_capacity: int = 100_000
    dedupe_window: int = 20_000
    """How many recently learned event ids are remembered to ignore redeliveries."""
    writer_lease_ms: int = 15_000
    """The single-writer lease in Redis lasts this long unless renewed (every third of it)."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """uvloop's event loop costs the trainer less per fetch, publication and status read than
    asyncio's (as uvicorn picks it for the predictor and ingest)."""
    gc_freeze: bool = True
    """Move everything alive once started (imports, faust, the restored state) out of the garbage
    collector's reach, so its full passes only walk what learning created since."""
    data_dir: Path = Path("var/trainer")
    """Where faust keeps its local files (nothing the trainer's state depends on)."""
    http_host: str = "127.0.0.1"
    http_port: int = 8003
