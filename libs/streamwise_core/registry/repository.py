"""Registry adapter: write and read model versions in SQLite or PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, Integer, create_engine, event, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..codec import ModelMeta
from ..errors import BackendUnavailable
from .roster import RosterRepository
from .tables import AuditRow, ModelVersionRow

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # A hung database must fail a write in seconds, not hold the writer thread forever.
        connect_args = {"connect_timeout": 5, "options": "-c statement_timeout=5000"}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """Write-ahead logging: readers (the web app, the CLI) no longer block the trainer's
    writes, and a commit costs half as much (one sync per checkpoint of the log rather than
    per transaction; SQLite is the local default, deployments use PostgreSQL). A power cut
    may lose the last commits, not consistency; versions are recorded again from Redis at start."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    make_engine(url).dispose()  # creates the SQLite folder if needed
    command.upgrade(cfg, "head")


@dataclass(frozen=True)
class VersionRow:
    app: str
    model: str
    version: int
    examples_seen: int
    metrics: dict[str, Any]
    offsets: dict[str, Any]
    river_version: str
    blob_sha256: str
    key_id: str
    created_at: datetime
    spec_sha256: str | None = None
    spec: str | None = None
    offsets_from: dict[str, Any] | None = None
    learned_from: datetime | None = None
    learned_to: datetime | None = None
    status: str = "served"
    hold_reason: str | None = None
    gate: dict[str, Any] | None = None


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: the spec, and the offsets and time it learned over."""

    spec_sha256: str | None = None
    spec: str | None = None
    offsets_from: dict[str, int] | None = None
    """The offsets reached by the previous version (exclusive start); ``offsets`` is the end."""
    learned_from: datetime | None = None
    """Wall-clock time the trainer started learning what this version adds."""
    learned_to: datetime | None = None


@dataclass(frozen=True)
class ModelSummary:
    model: str
    versions: int
    held_back: int
    latest_version: int
    latest_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    app: str
    actor: str
    action: str
    model: str | None = None
    version_from: int | None = None
    version_to: int | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: int | None = None


class Registry(RosterRepository):
    """Synchronous repository; async callers run it in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> Registry:
        return cls(make_engine(url))

    def close(self) -> None:
        self._engine.dispose()

    def record_version(
        self, meta: ModelMeta, key_id: str, *, lineage: Lineage | None = None,
        status: str = "served", hold_reason: str | None = None, gate: dict[str, Any] | None = None,
    ) -> bool:
        """Insert a version row; ``False`` when it was already there (a retried write)."""
        lineage = lineage or Lineage()
        row = ModelVersionRow(
            spec_sha256=lineage.spec_sha256,
            spec=lineage.spec,
            offsets_from=lineage.offsets_from,
            learned_from=lineage.learned_from,
            learned_to=lineage.learned_to,
            status=status,
            hold_reason=hold_reason,
            gate=gate,
            app=meta.app,
            model=meta.model,
            version=meta.version,
            examples_seen=meta.examples_seen,
            metrics=meta.metrics,
            offsets=meta.offsets,
            river_version=meta.river_version,
            blob_sha256=meta.blob_sha256,
            key_id=key_id,
            created_at=meta.created_at,
        )
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            return False
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc
        return True

    def versions(
        self, app: str, model: str, limit: int = 100, *, offset: int = 0, status: str | None = None,
    ) -> list[VersionRow]:
        """Newest first."""
        stmt = select(ModelVersionRow).where(ModelVersionRow.app == app, ModelVersionRow.model == model)
        if status is not None:
            stmt = stmt.where(ModelVersionRow.status == status)
        stmt = stmt.order_by(ModelVersionRow.version.desc()).offset(offset).limit(limit)
        try:
            with Session(self._engine) as session:
                return [self._to_row(r) for r in session.scalars(stmt)]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def version(self, app: str, model: str, version: int) -> VersionRow | None:
        stmt = select(ModelVersionRow).where(
            ModelVersionRow.app == app, ModelVersionRow.model == model, ModelVersionRow.version == version
        )
        try:
            with Session(self._engine) as session:
                row = session.scalars(stmt).first()
                return self._to_row(row) if row is not None else None
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def metric_history(
        self, app: str, model: str, limit: int = 500, *, since: datetime | None = None,
    ) -> list[VersionRow]:
        """Metrics of every version at publication, oldest first (the newest ``limit``)."""
        stmt = select(ModelVersionRow).where(ModelVersionRow.app == app, ModelVersionRow.model == model)
        if since is not None:
            stmt = stmt.where(ModelVersionRow.created_at >= since)
        stmt = stmt.order_by(ModelVersionRow.version.desc()).limit(limit)
        return list(reversed(self._select(stmt)))

    def models(self, app: str) -> list[ModelSummary]:
        """Every model of ``app`` with a version, by name."""
        held = func.sum(func.cast(ModelVersionRow.status == "held_back", Integer))
        stmt = (
            select(
                ModelVersionRow.model, func.count(), held, func.max(ModelVersionRow.version),
                func.max(ModelVersionRow.created_at),
            )
            .where(ModelVersionRow.app == app)
            .group_by(ModelVersionRow.model)
            .order_by(ModelVersionRow.model)
        )
        try:
            with Session(self._engine) as session:
                return [
                    ModelSummary(model=m, versions=n, held_back=int(h or 0), latest_version=v, latest_at=at)
                    for m, n, h, v, at in session.execute(stmt)
                ]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def set_status(self, app: str, model: str, version: int, status: str) -> bool:
        """Change a version's status (a promoted held-back version is ``served``)."""
        stmt = (
            update(ModelVersionRow)
            .where(ModelVersionRow.app == app, ModelVersionRow.model == model, ModelVersionRow.version == version)
            .values(status=status)
        )
        try:
            with Session(self._engine) as session, session.begin():
                return bool(session.execute(stmt).rowcount)
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def record_audit(self, entry: AuditEntry) -> int:
        row = AuditRow(
            at=entry.at, app=entry.app, actor=entry.actor, action=entry.action, model=entry.model,
            version_from=entry.version_from, version_to=entry.version_to, reason=entry.reason,
            details=dict(entry.details),
        )
        return self._insert(row)

    def audit(
        self, app: str, *, model: str | None = None, action: str | None = None, actor: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[AuditEntry], int]:
        """Entries newest first, and how many match in all."""
        where = [AuditRow.app == app]
        if model is not None:
            where.append(AuditRow.model == model)
        if action is not None:
            where.append(AuditRow.action == action)
        if actor is not None:
            where.append(AuditRow.actor == actor)
        stmt = select(AuditRow).where(*where).order_by(AuditRow.id.desc()).offset(offset).limit(limit)
        try:
            with Session(self._engine) as session:
                total = session.scalar(select(func.count()).select_from(AuditRow).where(*where)) or 0
                entries = [
                    AuditEntry(
                        id=r.id, at=r.at, app=r.app, actor=r.actor, action=r.action, model=r.model,
                        version_from=r.version_from, version_to=r.version_to, reason=r.reason,
                        details=dict(r.details or {}),
                    )
                    for r in session.scalars(stmt)
                ]
                return entries, total
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def _select(self, stmt: Any) -> list[VersionRow]:
        try:
            with Session(self._engine) as session:
                return [self._to_row(r) for r in session.scalars(stmt)]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    @staticmethod
    def _to_row(r: ModelVersionRow) -> VersionRow:
        return VersionRow(
            app=r.app,
            model=r.model,
            version=r.version,
            examples_seen=r.examples_seen,
            metrics=dict(r.metrics),
            offsets=dict(r.offsets),
            river_version=r.river_version,
            blob_sha256=r.blob_sha256,
            key_id=r.key_id,
            created_at=r.created_at,
            spec_sha256=r.spec_sha256,
            spec=r.spec,
            offsets_from=dict(r.offsets_from) if r.offsets_from is not None else None,
            learned_from=r.learned_from,
            learned_to=r.learned_to,
            status=r.status,
            hold_reason=r.hold_reason,
            gate=dict(r.gate) if r.gate is not None else None,
        )
