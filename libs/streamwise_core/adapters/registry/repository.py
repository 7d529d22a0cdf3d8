"""Registry adapter: write and read model versions in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import BigInteger, CursorResult, Engine, Integer, create_engine, delete, event, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import BackendUnavailable, StreamwiseError

from .roster import RosterRepository
from .tables import AuditRow, ModelVersionRow

MIGRATIONS = Path(__file__).with_name("migrations")
COMPACT_CHUNK = 5000
"""Most rows one compaction transaction reads, so deletes: a first compaction of a large table holds no long lock."""
DELETE_BATCH = 500
"""Values per ``IN (...)`` list (well under SQLite's limit on bound parameters)."""


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


class MigrationRefused(StreamwiseError):
    """The database refused a migration to this role: only the registry's owner changes the schema."""


def migrate(url: str, *, roles: Mapping[str, str] | None = None) -> None:
    """Bring the database at ``url`` to the newest schema.

    ``roles`` (service → PostgreSQL role; PostgreSQL only): also give each role exactly its rights
    (``access.py``) in the migration's transaction, so the new schema and its rights commit
    together. A service's own role finds the schema at head and changes nothing (it reads
    ``alembic_version``); behind head, or on an empty database, it raises ``MigrationRefused``.
    """
    if roles and not url.startswith("postgresql"):
        raise ValueError("roles and grants need PostgreSQL (the registry URL is not postgresql+psycopg://...)")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # the config parser interpolates %: a URL-encoded password has them
    cfg.attributes["grant_roles"] = dict(roles or {})
    make_engine(url).dispose()  # creates the SQLite folder if needed
    try:
        command.upgrade(cfg, "head")
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise MigrationRefused(
            f"the registry refused this role ({exc.orig}): a service's role only finds the schema at head; the owner "
            "migrates it and grants the roles (`streamwise registry migrate --grant` with the owner's URL)"
        ) from exc


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
    stands_for: int = 1
    """Versions this row represents: itself and the older ones compaction merged into it (their
    learning ranges included: ``offsets_from`` and ``learned_from`` reach back to the earliest)."""
    held_back_absorbed: int = 0
    """How many of the merged versions (not this one) the gate had held back."""


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
    """Versions recorded, compacted ones included (not the rows left)."""
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
        before: int | None = None,
    ) -> list[VersionRow]:
        """Newest first; ``before``: only versions below it (a cursor: the last version of the previous page)."""
        stmt = select(ModelVersionRow).where(ModelVersionRow.app == app, ModelVersionRow.model == model)
        if status is not None:
            stmt = stmt.where(ModelVersionRow.status == status)
        if before is not None:
            stmt = stmt.where(ModelVersionRow.version < before)
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
        """Metrics at publication, oldest first, over the model's whole life (or since ``since``): every
        row, or at most ``limit`` of them spread evenly over the version numbers, first and newest included."""
        if limit < 1:
            return []
        mv = ModelVersionRow
        where = [mv.app == app, mv.model == model]
        if since is not None:
            where.append(mv.created_at >= since)
        stmt = select(mv).where(*where).order_by(mv.version)
        try:
            with Session(self._engine) as session:
                span = select(func.count(), func.min(mv.version), func.max(mv.version)).where(*where)
                rows, first, last = session.execute(span).one()
                if rows <= limit:
                    return [self._to_row(r) for r in session.scalars(stmt)]
                if limit == 1:
                    return [self._to_row(r) for r in session.scalars(stmt.where(mv.version == last))]
                # limit - 1 buckets of equal version span, the newest version alone in one more; the first row of each.
                # Picked first, then read: as one statement PostgreSQL may re-run the grouping for every row.
                bucket = func.cast(mv.version - first, BigInteger) * (limit - 1) // (last - first)
                picked = sorted(session.scalars(select(func.min(mv.version)).where(*where).group_by(bucket)))
                return [
                    self._to_row(r)
                    for i in range(0, len(picked), DELETE_BATCH)
                    for r in session.scalars(stmt.where(mv.version.in_(picked[i:i + DELETE_BATCH])))
                ]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def models(self, app: str) -> list[ModelSummary]:
        """Every model of ``app`` with a version, by name."""
        held = func.sum(func.cast(ModelVersionRow.status == "held_back", Integer) + ModelVersionRow.held_back_absorbed)
        stmt = (
            select(
                ModelVersionRow.model, func.sum(ModelVersionRow.stands_for), held, func.max(ModelVersionRow.version),
                func.max(ModelVersionRow.created_at),
            )
            .where(ModelVersionRow.app == app)
            .group_by(ModelVersionRow.model)
            .order_by(ModelVersionRow.model)
        )
        try:
            with Session(self._engine) as session:
                return [
                    ModelSummary(model=m, versions=int(n), held_back=int(h or 0), latest_version=v, latest_at=at)
                    for m, n, h, v, at in session.execute(stmt)
                ]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def compact_versions(
        self, app: str, model: str, *, keep_full: int, keep_sampled: int, keep: Collection[int] = (),
        keep_held_back: int = 10,
    ) -> int:
        """Bound the rows of ``model``; returns how many were deleted.

        The newest ``keep_full`` versions stay. Of the older ones stay the first version and the multiples
        of a stride, the smallest power of two that leaves fewer than ``keep_sampled`` multiples: as the
        model ages the stride doubles and the sample thins to a subset of itself, so compacting again
        changes nothing and a chart keeps its points. Whatever their age, the versions an audit entry of
        the model names stay, those in ``keep`` (pinned, current), and the newest ``keep_held_back`` held
        back by the gate (the latest reasons an operator may look for).

        A deleted row's learning range and count pass to the next kept row, so the kept rows' ranges
        still tile the model's history. Runs in transactions of at most ``COMPACT_CHUNK`` rows; one
        compaction at a time per model (the trainer, the single writer, calls it).
        """
        if keep_full < 1 or keep_sampled < 1 or keep_held_back < 0:
            raise ValueError("keep_full and keep_sampled must be at least 1, keep_held_back at least 0")
        mv = ModelVersionRow
        of_model = (mv.app == app, mv.model == model)
        try:
            with Session(self._engine) as session:
                first, last = session.execute(select(func.min(mv.version), func.max(mv.version)).where(*of_model)).one()
                if last is None or last - keep_full <= first:
                    return 0
                boundary = last - keep_full  # versions above it stay in full
                protected = {first, *keep}
                audited = select(AuditRow.version_from, AuditRow.version_to).where(AuditRow.app == app, AuditRow.model == model)
                protected.update(v for pair in session.execute(audited) for v in pair if v is not None)
                protected.update(session.scalars(
                    select(mv.version).where(*of_model, mv.status == "held_back", mv.version <= boundary)
                    .order_by(mv.version.desc()).limit(keep_held_back)
                ))
                stride = _stride(boundary, keep_sampled)
                above = session.execute(
                    select(*_Absorber.COLUMNS).where(*of_model, mv.version > boundary).order_by(mv.version).limit(1)
                ).one()
            absorber = _Absorber(above)
            deleted, cursor = 0, boundary + 1
            while True:
                with Session(self._engine) as session, session.begin():
                    page = session.execute(
                        select(*_Absorber.COLUMNS).where(*of_model, mv.version < cursor).order_by(mv.version.desc())
                        .limit(COMPACT_CHUNK)
                    ).all()
                    doomed: list[int] = []
                    # newest first: a kept row absorbs the deleted ones right below it, so each commit leaves the ranges tiled
                    for row in page:
                        if row.version % stride == 0 or row.version in protected:
                            absorber.save(session)
                            absorber = _Absorber(row)
                        else:
                            absorber.absorb(row)
                            doomed.append(row.id)
                    absorber.save(session)
                    for i in range(0, len(doomed), DELETE_BATCH):
                        session.execute(delete(mv).where(mv.id.in_(doomed[i:i + DELETE_BATCH])))
                deleted += len(doomed)
                if len(page) < COMPACT_CHUNK:
                    return deleted
                cursor = page[-1].version
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
                return bool(cast(CursorResult[Any], session.execute(stmt)).rowcount)
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
            stands_for=r.stands_for,
            held_back_absorbed=r.held_back_absorbed,
        )


def _stride(old: int, most: int) -> int:
    """The smallest power of two with fewer than ``most`` multiples in 1..``old``: with the first
    version, at most ``most`` rows sample the old versions."""
    stride = 1
    while old // stride >= most:
        stride *= 2
    return stride


def _earliest(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per partition, the lower of two offset maps (a partition only one of them knows keeps its offset)."""
    if a is None or b is None:
        return a if b is None else b
    out = dict(a)
    for key, offset in b.items():
        out[key] = min(out[key], offset) if key in out else offset
    return out


class _Absorber:
    """A kept row while compaction merges the deleted rows below it into it."""

    COLUMNS = (
        ModelVersionRow.id, ModelVersionRow.version, ModelVersionRow.status, ModelVersionRow.stands_for,
        ModelVersionRow.held_back_absorbed, ModelVersionRow.offsets_from, ModelVersionRow.learned_from,
    )

    def __init__(self, row: Any) -> None:
        self.id: int = row.id
        self.stands_for: int = row.stands_for
        self.held_back_absorbed: int = row.held_back_absorbed
        self.offsets_from: dict[str, Any] | None = row.offsets_from
        self.learned_from: datetime | None = row.learned_from
        self.changed = False

    def absorb(self, row: Any) -> None:
        self.stands_for += row.stands_for
        self.held_back_absorbed += row.held_back_absorbed + int(row.status == "held_back")
        self.offsets_from = _earliest(self.offsets_from, row.offsets_from)
        if row.learned_from is not None and (self.learned_from is None or row.learned_from < self.learned_from):
            self.learned_from = row.learned_from
        self.changed = True

    def save(self, session: Session) -> None:
        if not self.changed:
            return
        values: dict[str, Any] = {"stands_for": self.stands_for, "held_back_absorbed": self.held_back_absorbed}
        if self.offsets_from is not None:  # else it stays NULL (a JSON null would read back the same)
            values["offsets_from"] = self.offsets_from
        if self.learned_from is not None:
            values["learned_from"] = self.learned_from
        session.execute(update(ModelVersionRow).where(ModelVersionRow.id == self.id).values(**values))
        self.changed = False
