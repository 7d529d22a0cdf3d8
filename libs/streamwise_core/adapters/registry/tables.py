"""SQLAlchemy tables of the registry. Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("app", "model", "version", name="uq_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    examples_seen: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)
    river_version: Mapped[str] = mapped_column(String(32))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # lineage and gate (migration 0002)
    spec_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    spec: Mapped[str | None] = mapped_column(Text, nullable=True)
    offsets_from: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    learned_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    learned_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="served", server_default="served")
    """``served``: made current when published (or promoted since); ``held_back`` by the gate."""
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # compaction (migration 0005)
    stands_for: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """How many versions this row represents: itself and the older rows compaction merged into it."""
    held_back_absorbed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many of the merged rows (not this one) had been held back by the gate."""


class AuditRow(Base):
    """Who did what to which model, when and why; general enough for every lifecycle action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    app: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version_to: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ModelRow(Base):
    """A model learning from the app's stream: the champion, a challenger, or retired."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("app", "name", name="uq_models_app_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[str] = mapped_column(Text)
    start: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class DriftRow(Base):
    __tablename__ = "drift_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    examples_seen: Mapped[int] = mapped_column(Integer)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON)
    detector: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
