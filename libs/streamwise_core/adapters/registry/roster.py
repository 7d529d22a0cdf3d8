"""Which models learn from an app's stream (champion, challengers, retired) and their drifts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from streamwise_core.contracts.errors import BackendUnavailable

from .tables import AuditRow, DriftRow, ModelRow

CHAMPION, CHALLENGER, RETIRED = "champion", "challenger", "retired"


@dataclass(frozen=True)
class RosterEntry:
    app: str
    name: str
    role: str
    kind: str
    spec: dict[str, Any]
    start: dict[str, Any]
    created_by: str
    created_at: datetime
    retired_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class DriftEntry:
    app: str
    model: str
    version: int | None
    examples_seen: int
    detected_at: datetime
    offsets: dict[str, int]
    detector: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


class ModelExists(Exception):
    """A model of that name was already added to the app (retired names are not reused)."""


class RosterRepository:
    """Mixed into ``Registry``: the roster and drift rows, on its engine."""

    _engine: Engine

    def _insert(self, row: ModelRow | DriftRow | AuditRow) -> int:
        """Add ``row`` in its own transaction and return its new id."""
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
                session.flush()
                return row.id
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def add_model(self, entry: RosterEntry) -> None:
        row = ModelRow(
            app=entry.app, name=entry.name, role=entry.role, kind=entry.kind, spec=json.dumps(entry.spec),
            start=dict(entry.start), created_by=entry.created_by, created_at=entry.created_at, reason=entry.reason,
        )
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
        except IntegrityError as exc:
            raise ModelExists(f"model {entry.name} already exists in {entry.app}") from exc
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def roster(self, app: str, *, include_retired: bool = False) -> list[RosterEntry]:
        """The app's models, the champion first, then by creation."""
        stmt = select(ModelRow).where(ModelRow.app == app)
        if not include_retired:
            stmt = stmt.where(ModelRow.role != RETIRED)
        try:
            with Session(self._engine) as session:
                rows = [_entry(r) for r in session.scalars(stmt.order_by(ModelRow.id))]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc
        return sorted(rows, key=lambda e: e.role != CHAMPION)

    def roster_entry(self, app: str, name: str) -> RosterEntry | None:
        try:
            with Session(self._engine) as session:
                row = session.scalar(select(ModelRow).where(ModelRow.app == app, ModelRow.name == name))
                return _entry(row) if row is not None else None
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def set_champion(self, app: str, name: str) -> None:
        """``name`` becomes the champion and the previous champion a challenger, in one transaction."""
        try:
            with Session(self._engine) as session, session.begin():
                for row in session.scalars(select(ModelRow).where(ModelRow.app == app, ModelRow.role != RETIRED)):
                    if row.name == name:
                        row.role = CHAMPION
                    elif row.role == CHAMPION:
                        row.role = CHALLENGER
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def retire(self, app: str, name: str, reason: str) -> bool:
        try:
            with Session(self._engine) as session, session.begin():
                row = session.scalar(select(ModelRow).where(ModelRow.app == app, ModelRow.name == name))
                if row is None or row.role == RETIRED:
                    return False
                row.role, row.retired_at, row.reason = RETIRED, datetime.now(UTC), reason
                return True
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc

    def record_drift(self, entry: DriftEntry) -> int:
        row = DriftRow(
            app=entry.app, model=entry.model, version=entry.version, examples_seen=entry.examples_seen,
            detected_at=entry.detected_at, offsets=dict(entry.offsets), detector=entry.detector,
            action=entry.action, details=dict(entry.details),
        )
        return self._insert(row)

    def drifts(self, app: str, *, model: str | None = None, limit: int = 100) -> list[DriftEntry]:
        """Drifts newest first."""
        stmt = select(DriftRow).where(DriftRow.app == app)
        if model is not None:
            stmt = stmt.where(DriftRow.model == model)
        try:
            with Session(self._engine) as session:
                return [
                    DriftEntry(
                        id=r.id, app=r.app, model=r.model, version=r.version, examples_seen=r.examples_seen,
                        detected_at=r.detected_at, offsets=dict(r.offsets), detector=r.detector, action=r.action,
                        details=dict(r.details or {}),
                    )
                    for r in session.scalars(stmt.order_by(DriftRow.id.desc()).limit(limit))
                ]
        except OperationalError as exc:
            raise BackendUnavailable(f"registry: {exc.orig}") from exc


def _entry(r: ModelRow) -> RosterEntry:
    return RosterEntry(
        app=r.app, name=r.name, role=r.role, kind=r.kind, spec=json.loads(r.spec), start=dict(r.start),
        created_by=r.created_by, created_at=r.created_at, retired_at=r.retired_at, reason=r.reason,
    )
