"""Registry adapter: write and read model versions in SQLite or PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..codec import ModelMeta
from ..errors import BackendUnavailable
from .tables import ModelVersionRow

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        # A hung database must fail a write in seconds, not hold the writer thread forever.
        connect_args = {"connect_timeout": 5, "options": "-c statement_timeout=5000"}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


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


class Registry:
    """Synchronous repository; async callers run it in a worker thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def from_url(cls, url: str) -> Registry:
        return cls(make_engine(url))

    def close(self) -> None:
        self._engine.dispose()

    def record_version(self, meta: ModelMeta, key_id: str) -> bool:
        """Insert a version row; ``False`` when it was already there (a retried write)."""
        row = ModelVersionRow(
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

    def versions(self, app: str, model: str, limit: int = 100) -> list[VersionRow]:
        """Newest first."""
        stmt = (
            select(ModelVersionRow)
            .where(ModelVersionRow.app == app, ModelVersionRow.model == model)
            .order_by(ModelVersionRow.version.desc())
            .limit(limit)
        )
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
        )
