"""Registry lifecycle tables (migration 0002) on real SQLite and PostgreSQL: lineage and gate
status per version, metric history, the audit log, and upgrading a database made by 0001."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from streamwise_core.adapters.registry import AuditEntry, Lineage, Registry, migrate
from streamwise_core.adapters.registry.repository import make_engine

from .test_registry_sql import HEAD, _alembic_config, _alembic_heads, _as_utc, _meta, db_url, registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def test_migrating_an_existing_0001_database_keeps_its_rows(db_url: str) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    make_engine(db_url).dispose()  # creates the SQLite folder
    command.upgrade(cfg, "0001")
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            meta = _meta("app", 1)
            conn.execute(sa.text(
                "INSERT INTO model_versions (app, model, version, examples_seen, metrics, offsets, river_version,"
                " blob_sha256, key_id, created_at) VALUES ('app', 'fraud-lr', 1, 100, :m, :o, 'x', :b, 'k1', :c)"
            ), {"m": '{"accuracy": 0.51}', "o": "{}", "b": meta.blob_sha256, "c": meta.created_at})
    finally:
        engine.dispose()
    migrate(db_url)
    assert _alembic_heads(db_url) == [HEAD]
    reg = Registry.from_url(db_url)
    try:
        [old] = reg.versions("app", "fraud-lr")
        assert (old.version, old.status, old.spec_sha256, old.hold_reason) == (1, "served", None, None)
        assert old.metrics == {"accuracy": 0.51}
        assert reg.record_version(_meta("app", 2), "k1", status="held_back", hold_reason="worse")
        assert reg.audit("app") == ([], 0)
    finally:
        reg.close()
    command.downgrade(cfg, "0001")  # and back: 0002's downgrade leaves 0001's table
    assert _alembic_heads(db_url) == ["0001"]
    command.upgrade(cfg, "head")


def test_lineage_status_and_metric_history(registry: Registry) -> None:  # noqa: F811
    app = f"app-{uuid.uuid4().hex[:8]}"
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    for v in (1, 2, 3):
        lineage = Lineage(
            spec_sha256="ab" * 32, spec='{"name": "fraud"}', offsets_from={"t:0": 10 * (v - 1)},
            learned_from=start + timedelta(minutes=v - 1), learned_to=start + timedelta(minutes=v),
        )
        held = v == 2
        assert registry.record_version(
            _meta(app, v), "k1", lineage=lineage, status="held_back" if held else "served",
            hold_reason="accuracy_recent 0.5 is worse" if held else None,
            gate={"status": "held_back" if held else "served", "candidate": 0.5},
        )
    registry.record_version(_meta(app, 1, model="other"), "k1")
    row = registry.version(app, "fraud-lr", 2)
    assert row is not None and row.status == "held_back" and row.hold_reason == "accuracy_recent 0.5 is worse"
    assert row.offsets_from == {"t:0": 10} and row.spec_sha256 == "ab" * 32 and row.gate == {"status": "held_back", "candidate": 0.5}
    assert _as_utc(row.learned_from) == start + timedelta(minutes=1)
    assert _as_utc(row.learned_to) == start + timedelta(minutes=2)
    assert registry.version(app, "fraud-lr", 99) is None
    assert [r.version for r in registry.versions(app, "fraud-lr", status="held_back")] == [2]
    assert [r.version for r in registry.versions(app, "fraud-lr", limit=1, offset=1)] == [2]

    history = registry.metric_history(app, "fraud-lr", limit=2)
    assert [(h.version, h.metrics["accuracy"]) for h in history] == [(1, 0.51), (3, 0.53)]  # spread: first and newest

    summaries = {s.model: s for s in registry.models(app)}
    assert set(summaries) == {"fraud-lr", "other"}
    assert (summaries["fraud-lr"].versions, summaries["fraud-lr"].held_back, summaries["fraud-lr"].latest_version) == (3, 1, 3)

    assert registry.set_status(app, "fraud-lr", 2, "served") is True
    assert registry.version(app, "fraud-lr", 2).status == "served"  # type: ignore[union-attr]
    assert registry.set_status(app, "fraud-lr", 42, "served") is False


def test_audit_log_filters_and_pages(registry: Registry) -> None:  # noqa: F811
    app = f"app-{uuid.uuid4().hex[:8]}"
    ids = [
        registry.record_audit(AuditEntry(app=app, actor="alice", action="rollback", model="fraud-lr",
                                         version_from=5, version_to=3, reason="bad", details={"generation": 6})),
        registry.record_audit(AuditEntry(app=app, actor="bob", action="promote", model="fraud-lr",
                                         version_from=3, version_to=7, reason="looked fine")),
        registry.record_audit(AuditEntry(app=app, actor="alice", action="promote", model="other",
                                         version_from=None, version_to=1, reason="")),
    ]
    registry.record_audit(AuditEntry(app=f"{app}-x", actor="alice", action="promote", model="fraud-lr"))
    assert ids == sorted(ids)
    entries, total = registry.audit(app)
    assert total == 3 and [e.id for e in entries] == ids[::-1]
    first = entries[-1]
    assert (first.actor, first.action, first.version_from, first.version_to, first.reason, first.details) == (
        "alice", "rollback", 5, 3, "bad", {"generation": 6})
    assert first.at.tzinfo is not None or isinstance(first.at, datetime)
    assert [e.id for e in registry.audit(app, model="fraud-lr")[0]] == ids[1::-1]
    assert [e.id for e in registry.audit(app, action="promote")[0]] == [ids[2], ids[1]]
    assert [e.id for e in registry.audit(app, actor="alice")[0]] == [ids[2], ids[0]]
    page, total = registry.audit(app, limit=1, offset=1)
    assert total == 3 and [e.id for e in page] == [ids[1]]
