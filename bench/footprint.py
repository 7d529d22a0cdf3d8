"""Footprint of one model: bytes of a version in Redis (blob hash, checkpoint) and of a version
row in the SQL registry (SQLite file size and PostgreSQL ``pg_total_relation_size`` over many
rows), the figures ``docs/retention.md`` multiplies out.

Models are trained in-process (``Trainer``, no Kafka) on the demo's fraud stream; Redis and
PostgreSQL are private servers started from the devstack. Registry rows carry what the trainer
writes: the version's real metadata, the spec JSON, lineage and a gate record.

    .venv/bin/python bench/footprint.py                  # 20,000 rows, 20,000 training events
    .venv/bin/python bench/footprint.py --rows 2000 --events 2000 --no-postgres   # quick
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import redis
import sqlalchemy as sa
import typer

from streamwise_core.adapters.registry import migrate
from streamwise_core.adapters.registry.tables import ModelVersionRow
from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import AppSpec, load_app_spec
from streamwise_core.contracts.events import EventReceived
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import PostgresServer, RedisServer
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.learning import Record, Snapshot, Trainer

ROOT = Path(__file__).resolve().parents[1]
SIGNER = Signer({"k1": b"footprint-signing-key-0123456789"})


def _train(spec: AppSpec, events: int) -> Snapshot:
    topics = Topics.for_app("streamwise", spec.name)
    trainer = Trainer(spec, topics)
    stream = FraudStream(seed=3, drift_at=10**9).take(events)
    records = [
        Record(topics.events, 0, i, g.id.encode(),
               EventReceived(id=g.id, features=g.features, label=g.label, timestamp=datetime.now(UTC)).to_bytes())
        for i, g in enumerate(stream)
    ]
    for i in range(0, len(records), 500):
        trainer.handle_many(records[i:i + 500])
    return trainer.snapshot(SIGNER)


def _fields(signed: Any, gate: dict[str, Any]) -> dict[str, Any]:
    """A version hash as ``ModelStore.publish_gated`` writes it."""
    return {"meta": signed.meta, "blob": signed.blob, "kid": signed.signature.key_id, "sig": signed.signature.digest,
            "gate": json.dumps(gate)}


def _rows(snap: Snapshot, spec_json: str, gate: dict[str, Any], n: int) -> list[dict[str, Any]]:
    meta, start = snap.meta, datetime(2026, 3, 1, tzinfo=UTC)
    events, labels = "streamwise.fraud.events:0", "streamwise.fraud.labels:0"
    return [
        {
            "app": "fraud", "model": meta.model, "version": v, "examples_seen": 1000 * v, "metrics": meta.metrics,
            "offsets": {events: 1000 * v, labels: 300 * v}, "river_version": meta.river_version,
            "blob_sha256": hashlib.sha256(str(v).encode()).hexdigest(), "key_id": "k1",
            "created_at": start + timedelta(milliseconds=100 * v), "spec_sha256": hashlib.sha256(spec_json.encode()).hexdigest(),
            "spec": spec_json, "offsets_from": {events: 1000 * (v - 1), labels: 300 * (v - 1)},
            "learned_from": start + timedelta(milliseconds=100 * (v - 1)), "learned_to": start + timedelta(milliseconds=100 * v),
            "status": "served", "hold_reason": None, "gate": gate,
        }
        for v in range(1, n + 1)
    ]


def _insert(url: str, rows: list[dict[str, Any]]) -> None:
    engine = sa.create_engine(url)
    try:
        for i in range(0, len(rows), 5000):
            with engine.begin() as conn:
                conn.execute(sa.insert(ModelVersionRow), rows[i:i + 5000])
    finally:
        engine.dispose()


def main(
    rows: Annotated[int, typer.Option(help="registry rows to measure over")] = 20_000,
    events: Annotated[int, typer.Option(help="training events before the snapshot")] = 20_000,
    postgres: Annotated[bool, typer.Option(help="also measure PostgreSQL")] = True,
) -> None:
    fraud = load_app_spec(ROOT / "examples/fraud/streamwise.toml")
    lifecycle = load_app_spec(ROOT / "examples/fraud/lifecycle.toml")
    tree_spec = lifecycle.for_model(lifecycle.challengers[0])
    gate = {"status": "served", "reason": "accuracy_recent 0.9712 >= 0.9705 - 0.005", "metric": "accuracy_recent",
            "candidate": 0.9712, "served": 0.9705, "compare": "same", "common_examples": 1000}
    snaps = {"fraud-lr": _train(fraud, events), "fraud-tree": _train(tree_spec, events)}
    with tempfile.TemporaryDirectory() as tmp:
        with RedisServer(Path(tmp) / "redis") as server:
            r = redis.Redis.from_url(server.url)
            for name, snap in snaps.items():
                r.hset(f"v:{name}", mapping=_fields(snap.model, gate))
                if snap.checkpoint is not None:
                    r.hset(f"c:{name}", mapping=_fields(snap.checkpoint, gate))
                print(f"{name}: model blob {len(snap.model.blob):,} B, meta {len(snap.model.meta):,} B, "
                      f"Redis version hash {r.memory_usage(f'v:{name}', samples=0):,} B, "
                      f"checkpoint blob {len(snap.checkpoint.blob) if snap.checkpoint else 0:,} B, "
                      f"Redis checkpoint hash {r.memory_usage(f'c:{name}', samples=0) or 0:,} B")
            for i in range(1, 1001):  # the per-version index entries (versions and served sorted sets)
                r.zadd("versions", {str(i): i})
                r.zadd("served", {str(i): 1_770_000_000_000 + i})
            per_entry = ((r.memory_usage("versions", samples=0) or 0) + (r.memory_usage("served", samples=0) or 0)) / 1000
            print(f"index entries: {per_entry:.0f} B per version (versions + served sorted sets, 1,000 entries)")
            r.close()

        spec_json = fraud.model_dump_json()
        data = _rows(snaps["fraud-lr"], spec_json, gate, rows)
        print(f"row content: spec JSON {len(spec_json):,} B, metrics {len(json.dumps(data[0]['metrics'])):,} B")
        db = Path(tmp) / "registry.db"
        migrate(f"sqlite:///{db}")
        before = db.stat().st_size
        _insert(f"sqlite:///{db}", data)
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"SQLite: {(db.stat().st_size - before) / rows:,.0f} B per row ({rows:,} rows, file {db.stat().st_size:,} B)")
        if postgres:
            with PostgresServer(Path(tmp) / "pg") as pg:
                url = pg.url.rsplit("/", 1)[0] + f"/fp_{uuid.uuid4().hex[:8]}"
                with sa.create_engine(pg.url, isolation_level="AUTOCOMMIT").connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
                migrate(url)
                _insert(url, data)
                engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(sa.text("VACUUM ANALYZE model_versions"))
                    total = conn.execute(sa.text("SELECT pg_total_relation_size('model_versions')")).scalar_one()
                    heap = conn.execute(sa.text("SELECT pg_relation_size('model_versions')")).scalar_one()
                    toast = conn.execute(sa.text(
                        "SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) FROM pg_class WHERE relname = 'model_versions'"
                    )).scalar_one()
                engine.dispose()
                print(f"PostgreSQL: {total / rows:,.0f} B per row with indexes and TOAST ({rows:,} rows, {total:,} B; "
                      f"heap {heap:,} B, TOAST {toast:,} B)")


if __name__ == "__main__":
    typer.run(main)
