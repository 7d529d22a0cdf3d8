"""A bounded registry on real SQLite and PostgreSQL: compaction thins a model's old version rows to a
nested, evenly spread sample, keeps the audited, pinned and newest held-back versions, and the
kept rows' learning ranges still tile the model's whole history; metric history spans all of it."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from streamwise_core.adapters.registry import AuditEntry, Registry, VersionRow, migrate, repository
from streamwise_core.adapters.registry.repository import make_engine
from streamwise_core.adapters.registry.tables import ModelVersionRow

from .test_registry_sql import HEAD, _alembic_config, _alembic_heads, _as_utc, _meta, db_url, registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, tzinfo=UTC)
TOPIC = "streamwise.app.events:0"
FULL, SAMPLED = 1000, 500


def _insert(url: str, app: str, model: str, versions: Iterable[int], held: Collection[int] = ()) -> None:
    """Version rows as the trainer writes them (each learned 10 offsets over one second), in one executemany."""
    rows: list[dict[str, Any]] = [
        {
            "app": app, "model": model, "version": v, "examples_seen": 10 * v,
            "metrics": {"accuracy": 0.5 + (v % 1000) / 10_000}, "offsets": {TOPIC: 10 * v}, "river_version": "0.23",
            "blob_sha256": f"{v:064x}", "key_id": "k1", "created_at": START + timedelta(seconds=v),
            "spec_sha256": "ab" * 32, "spec": None, "offsets_from": {TOPIC: 10 * (v - 1)},
            "learned_from": START + timedelta(seconds=v - 1), "learned_to": START + timedelta(seconds=v),
            "status": "held_back" if v in held else "served", "hold_reason": "worse" if v in held else None, "gate": None,
        }
        for v in versions
    ]
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(ModelVersionRow), rows)
    finally:
        engine.dispose()


def _all(registry: Registry, app: str, model: str) -> list[VersionRow]:
    """Every row, oldest first."""
    return registry.versions(app, model, limit=10**9)[::-1]


def _assert_tiled(rows: list[VersionRow], last: int) -> None:
    """The kept rows' ranges cover versions 1..last with neither gap nor overlap."""
    assert rows[0].version == 1 and rows[0].offsets_from == {TOPIC: 0}
    assert _as_utc(rows[0].learned_from) == START  # type: ignore[arg-type]
    for before, row in zip(rows, rows[1:], strict=False):
        assert row.offsets_from == before.offsets, (before.version, row.version)
        assert row.learned_from == before.learned_to, (before.version, row.version)
    assert rows[-1].version == last and rows[-1].offsets == {TOPIC: 10 * last}
    assert _as_utc(rows[-1].learned_to) == START + timedelta(seconds=last)  # type: ignore[arg-type]
    assert sum(r.stands_for for r in rows) == last
    for before, row in zip(rows, rows[1:], strict=False):  # each row stands for the versions since the previous one
        assert row.stands_for == row.version - before.version


def test_compaction_bounds_rows_keeps_lineage_and_is_nested(registry: Registry, db_url: str) -> None:  # noqa: F811
    app, model = f"app-{uuid.uuid4().hex[:8]}", "fraud-lr"
    held = set(range(97, 34_001, 97))
    _insert(db_url, app, model, range(1, 20_001), held)
    _insert(db_url, app, "other", range(1, 3001))
    registry.record_audit(AuditEntry(app=app, actor="alice", action="rollback", model=model, version_from=5001, version_to=777))
    registry.record_audit(AuditEntry(app=app, actor="bob", action="promote", model=model, version_from=None, version_to=9999))
    registry.record_audit(AuditEntry(app=app, actor="bob", action="rollback", model="other", version_from=3, version_to=2))
    pinned = {1234, 4321}
    protected = {5001, 777, 9999} | pinned

    deleted = registry.compact_versions(app, model, keep_full=FULL, keep_sampled=SAMPLED, keep=pinned)
    rows = _all(registry, app, model)
    versions = {r.version for r in rows}
    assert deleted == 20_000 - len(rows)
    # boundary 19000: stride 64 leaves 296 multiples; the first version, the protected and 10 held back besides
    assert len(rows) <= FULL + SAMPLED + len(protected) + 10
    held_old = sorted(v for v in held if v <= 19_000)
    assert versions == (
        set(range(19_001, 20_001)) | {1} | set(range(64, 19_001, 64)) | protected | set(held_old[-10:])
    )
    _assert_tiled(rows, 20_000)
    assert all(r.stands_for == 1 for r in rows if r.version > 19_001)  # the newest ones stay as they were
    assert registry.version(app, model, 19_001).stands_for == 19_001 - 18_944  # type: ignore[union-attr]
    # what users see stays true: versions published and held back, not rows left
    summary = {s.model: s for s in registry.models(app)}[model]
    held_so_far = len([v for v in held if v <= 20_000])
    assert (summary.versions, summary.held_back, summary.latest_version) == (20_000, held_so_far, 20_000)
    assert len(_all(registry, app, "other")) == 3000  # another model is not touched

    # idempotent: nothing more to delete, nothing changes
    assert registry.compact_versions(app, model, keep_full=FULL, keep_sampled=SAMPLED, keep=pinned) == 0
    assert _all(registry, app, model) == rows

    # the model ages (boundary 33000): the stride doubles and the old sample is a subset of the previous one
    _insert(db_url, app, model, range(20_001, 34_001), held)
    registry.compact_versions(app, model, keep_full=FULL, keep_sampled=SAMPLED, keep=pinned)
    later = _all(registry, app, model)
    later_versions = {r.version for r in later}
    assert later_versions & set(range(1, 20_001)) <= versions
    held_old = sorted(v for v in held if v <= 33_000)
    assert later_versions == (
        set(range(33_001, 34_001)) | {1} | set(range(128, 33_001, 128)) | protected | set(held_old[-10:])
    )
    assert len(later) <= FULL + SAMPLED + len(protected) + 10
    _assert_tiled(later, 34_000)
    summary = {s.model: s for s in registry.models(app)}[model]
    assert (summary.versions, summary.held_back) == (34_000, len(held))
    assert registry.compact_versions(app, model, keep_full=FULL, keep_sampled=SAMPLED, keep=pinned) == 0

    # the chart still reaches back to the first version, evenly
    history = registry.metric_history(app, model, limit=500)
    points = [h.version for h in history]
    assert points[0] == 1 and points[-1] == 34_000 and points == sorted(points)
    assert 250 <= len(points) <= 500
    assert max(b - a for a, b in zip(points, points[1:], strict=False)) <= 2 * 34_000 // 499 + 128


def test_chunked_compaction_matches_one_pass(
    registry: Registry, db_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    held = set(range(5, 700, 11))
    for model in ("one-pass", "chunked"):
        _insert(db_url, app, model, range(1, 701), held)
    # stride 64 over 690 old versions: groups of 63 deleted rows, spread over chunks of 7 rows
    one = registry.compact_versions(app, "one-pass", keep_full=10, keep_sampled=11, keep=[300], keep_held_back=2)
    monkeypatch.setattr(repository, "COMPACT_CHUNK", 7)
    monkeypatch.setattr(repository, "DELETE_BATCH", 3)
    assert registry.compact_versions(app, "chunked", keep_full=10, keep_sampled=11, keep=[300], keep_held_back=2) == one
    strip = lambda rows: [r.__dict__ | {"model": ""} for r in rows]  # noqa: E731
    assert strip(_all(registry, app, "chunked")) == strip(_all(registry, app, "one-pass"))
    rows = _all(registry, app, "chunked")
    assert [r.version for r in rows if r.version <= 690] == [1, 64, 128, 192, 256, 300, 320, 384, 448, 512, 576, 640, 676, 687]
    _assert_tiled(rows, 700)
    assert sum(r.held_back_absorbed + (r.status == "held_back") for r in rows) == len(held)


def test_small_models_and_bad_arguments(registry: Registry, db_url: str) -> None:  # noqa: F811
    app = f"app-{uuid.uuid4().hex[:8]}"
    assert registry.compact_versions(app, "none", keep_full=1, keep_sampled=1) == 0
    _insert(db_url, app, "m", range(1, 51))
    assert registry.compact_versions(app, "m", keep_full=49, keep_sampled=1) == 0  # only the first is older
    assert registry.compact_versions(app, "m", keep_full=10, keep_sampled=100) == 0  # room for all
    assert registry.compact_versions(app, "m", keep_full=10, keep_sampled=1) == 39  # the first and the newest ten
    rows = _all(registry, app, "m")
    assert [r.version for r in rows] == [1, *range(41, 51)] and rows[1].stands_for == 40
    _assert_tiled(rows, 50)
    with pytest.raises(ValueError):
        registry.compact_versions(app, "m", keep_full=0, keep_sampled=1)


def test_metric_history_spreads_over_the_whole_life(registry: Registry, db_url: str) -> None:  # noqa: F811
    app = f"app-{uuid.uuid4().hex[:8]}"
    _insert(db_url, app, "m", range(1, 101))
    assert [h.version for h in registry.metric_history(app, "m", limit=100)] == list(range(1, 101))
    assert [h.version for h in registry.metric_history(app, "m", limit=5)] == [1, 26, 51, 76, 100]
    assert [h.version for h in registry.metric_history(app, "m", limit=2)] == [1, 100]
    assert [h.version for h in registry.metric_history(app, "m", limit=1)] == [100]
    assert [h.version for h in registry.metric_history(app, "m", limit=3, since=START + timedelta(seconds=91))] == [91, 96, 100]
    assert registry.metric_history(app, "missing", limit=5) == []
    _insert(db_url, app, "big", range(1, 1501))  # more points than one IN list takes
    points = [h.version for h in registry.metric_history(app, "big", limit=1200)]
    assert len(points) == 1200 and points == sorted(points) and (points[0], points[-1]) == (1, 1500)


def test_migrating_an_existing_0004_database(db_url: str) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    make_engine(db_url).dispose()  # creates the SQLite folder
    command.upgrade(cfg, "0004_champions")
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            for v in (1, 2, 3):
                meta = _meta("app", v)
                conn.execute(sa.text(
                    "INSERT INTO model_versions (app, model, version, examples_seen, metrics, offsets, river_version,"
                    " blob_sha256, key_id, created_at, offsets_from, status) VALUES ('app', 'fraud-lr', :v, 100, :m, :o,"
                    " 'x', :b, 'k1', :c, :f, :s)"
                ), {"v": v, "m": '{"accuracy": 0.5}', "o": f'{{"t:0": {v}}}', "f": f'{{"t:0": {v - 1}}}',
                    "b": meta.blob_sha256, "c": meta.created_at, "s": "held_back" if v == 2 else "served"})
    finally:
        engine.dispose()
    migrate(db_url)
    assert _alembic_heads(db_url) == [HEAD]
    reg = Registry.from_url(db_url)
    try:
        assert [(r.version, r.stands_for, r.held_back_absorbed) for r in reg.versions("app", "fraud-lr")] == [
            (3, 1, 0), (2, 1, 0), (1, 1, 0)]
        assert reg.compact_versions("app", "fraud-lr", keep_full=1, keep_sampled=1, keep_held_back=0) == 1
        [newest, first] = reg.versions("app", "fraud-lr")
        assert (newest.version, newest.stands_for, newest.held_back_absorbed, newest.offsets_from) == (3, 2, 1, {"t:0": 1})
        [summary] = reg.models("app")
        assert (summary.versions, summary.held_back) == (3, 1)
        assert reg.record_version(_meta("app", 4), "k1")
        assert reg.version("app", "fraud-lr", 4).stands_for == 1  # type: ignore[union-attr]
    finally:
        reg.close()
    command.downgrade(cfg, "0004_champions")  # and back: 0005's downgrade leaves 0004's table
    assert _alembic_heads(db_url) == ["0004_champions"]
    command.upgrade(cfg, "head")
    assert _alembic_heads(db_url) == [HEAD]
