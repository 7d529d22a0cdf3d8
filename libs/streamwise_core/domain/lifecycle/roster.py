"""Add and retire challengers, and change the champion: the roster operations, audit-logged.

The registry's ``models`` table is the roster trainers follow (they poll it and start or stop
a learner per model); Redis holds the champion predictors serve and the list of models they
may shadow. Each operation writes both and an audit entry saying who, when, what and why.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from streamwise_core.adapters.registry import CHALLENGER, CHAMPION, AuditEntry, ModelExists, Registry, RosterEntry
from streamwise_core.contracts.appspec import AppSpec, ModelSpec
from streamwise_core.contracts.errors import SpecError
from streamwise_core.contracts.store_ports import Pointers
from streamwise_core.contracts.store_types import PointerMoved

from .operations import Conflict, LifecycleError, VersionNotFound


class StartPosition(BaseModel):
    """Where a new model starts reading the events topic: it replays from there, then goes
    on live. ``positions`` names the last offset already behind it per ``topic:partition``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    from_: Literal["earliest", "latest", "offset", "time", "positions"] = "earliest"
    offset: int | None = None
    time: datetime | None = None
    positions: dict[str, int] | None = None

    @model_validator(mode="after")
    def _complete(self) -> StartPosition:
        needed = {"offset": self.offset, "time": self.time, "positions": self.positions}
        if self.from_ in needed and needed[self.from_] is None:
            raise ValueError(f"start from {self.from_!r} needs {self.from_!r}")
        if self.offset is not None and self.offset < 0:
            raise ValueError("offset must not be negative")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"from": self.from_, **self.model_dump(mode="json", exclude={"from_"}, exclude_none=True)}

    @classmethod
    def parse(cls, data: dict[str, Any] | None) -> StartPosition:
        data = dict(data or {})
        if "from" in data:
            data["from_"] = data.pop("from")
        return cls.model_validate(data)


def check_buildable(app: AppSpec, model: ModelSpec) -> None:
    """Raise ``SpecError`` unless ``model`` can be built for this app (checked before it is added)."""
    from streamwise_core.domain.pipeline import build_model
    from streamwise_core.domain.retrain import build_estimator

    one = app.for_model(model)
    if model.kind == "retrain":
        build_estimator(one, model)
    else:
        build_model(one)


async def publish_roster(store: Pointers, registry: Registry, app: str) -> list[RosterEntry]:
    entries = await asyncio.to_thread(registry.roster, app)
    await store.set_roster([e.name for e in entries])
    return entries


async def add_challenger(
    store: Pointers, registry: Registry, app: AppSpec, model: ModelSpec, start: StartPosition, *,
    actor: str, reason: str,
) -> RosterEntry:
    try:
        check_buildable(app, model)
    except SpecError as exc:
        raise InvalidModel(str(exc)) from exc
    entry = RosterEntry(
        app=app.name, name=model.name, role=CHALLENGER, kind=model.kind, spec=model.model_dump(mode="json"),
        start=start.as_dict(), created_by=actor, created_at=datetime.now(UTC), reason=reason,
    )
    try:
        await asyncio.to_thread(registry.add_model, entry)
    except ModelExists as exc:
        raise Conflict(f"{exc}; model names are never reused, pick another") from exc
    await asyncio.to_thread(registry.record_audit, AuditEntry(
        app=app.name, actor=actor, action="challenger_added", model=model.name, reason=reason,
        details={"kind": model.kind, "start": entry.start, "spec": entry.spec},
    ))
    await publish_roster(store, registry, app.name)
    return entry


async def retire(store: Pointers, registry: Registry, app: str, name: str, *, actor: str, reason: str) -> None:
    entry = await asyncio.to_thread(registry.roster_entry, app, name)
    if entry is None:
        raise VersionNotFound(f"no model {name} in {app}")
    if entry.role == CHAMPION:
        raise Conflict(f"{name} is the champion: make another model champion before retiring it")
    if not await asyncio.to_thread(registry.retire, app, name, reason):
        raise Conflict(f"{name} is retired already")
    await asyncio.to_thread(registry.record_audit, AuditEntry(
        app=app, actor=actor, action="challenger_retired", model=name, reason=reason, details={"role_before": entry.role},
    ))
    await publish_roster(store, registry, app)


async def make_champion(
    store: Pointers, registry: Registry, app: str, name: str, *, actor: str, reason: str,
    details: dict[str, Any] | None = None,
) -> int:
    """Serve ``name`` by default from now on (every predictor switches at once); return the
    champion generation. The model must be an active challenger with a served version."""
    entry = await asyncio.to_thread(registry.roster_entry, app, name)
    if entry is None:
        raise VersionNotFound(f"no model {name} in {app}")
    if entry.role == CHAMPION:
        raise Conflict(f"{name} is the champion already")
    if entry.role != CHALLENGER:
        raise Conflict(f"{name} is {entry.role}: only an active challenger can become champion")
    pointer = await store.pointer(name)
    if pointer is None:
        raise Conflict(f"{name} has no served version yet")
    before = await store.champion()
    try:
        champion = await store.set_champion(name, expect=before.model if before is not None else None)
    except PointerMoved as exc:
        raise Conflict(f"the champion changed meanwhile ({exc}); try again") from exc
    await asyncio.to_thread(registry.set_champion, app, name)
    await asyncio.to_thread(registry.record_audit, AuditEntry(
        app=app, actor=actor, action="champion_changed", model=name, version_to=pointer.version, reason=reason,
        details={
            "champion_before": before.model if before is not None else None,
            "champion_generation": champion.generation, **(details or {}),
        },
    ))
    return champion.generation


class InvalidModel(LifecycleError):
    status = 422
