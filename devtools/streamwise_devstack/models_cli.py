"""``streamwise models``: list models and versions, promote, roll back, read the audit log.

Reads the same ``STREAMWISE_*`` settings as the services (Redis, registry, signing keys,
app spec) and calls the same lifecycle operations as the web app's JSON API.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamwise_core.lifecycle.operations import Action, LifecycleError, move_current
from streamwise_core.modelstore import ModelStore
from streamwise_core.registry import Registry
from streamwise_core.settings import Settings
from streamwise_core.signing import Signer

models = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, default=str, indent=2))


async def _with_clients(fn: Any) -> Any:
    s = Settings()
    store = ModelStore.from_url(s.redis_url, s.topic_prefix, s.spec.name)
    registry = Registry.from_url(s.database_url)
    try:
        return await fn(s, store, registry)
    finally:
        await store.close()
        registry.close()


@models.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """Every model with the version served now."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> list[dict[str, Any]]:
        summaries = {m.model: m for m in await asyncio.to_thread(registry.models, s.spec.name)}
        out = []
        for name in sorted(summaries.keys() | {s.spec.model.name}):
            pointer = await store.pointer(name)
            m = summaries.get(name)
            out.append({
                "model": name, "served_version": pointer.version if pointer else None,
                "generation": pointer.generation if pointer else None,
                "versions": m.versions if m else 0, "held_back": m.held_back if m else 0,
                "latest_version": m.latest_version if m else None,
            })
        return out

    rows = asyncio.run(_with_clients(run))
    if as_json:
        return _print_json(rows)
    table = Table("model", "served", "generation", "versions", "held back", "latest")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("model", "served_version", "generation", "versions", "held_back", "latest_version")))
    console.print(table)


@models.command("versions")
def versions(
    model: str, limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    status: Annotated[str | None, typer.Option(help="served or held_back")] = None, as_json: JsonOpt = False,
) -> None:
    """Versions newest first, with gate status and reason."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> tuple[Any, Any]:
        rows = await asyncio.to_thread(registry.versions, s.spec.name, model, limit, status=status)
        return rows, await store.pointer(model)

    rows, pointer = asyncio.run(_with_clients(run))
    current = pointer.version if pointer else None
    if as_json:
        return _print_json([{**asdict(r), "current": r.version == current} for r in rows])
    table = Table("version", "", "status", "examples", "metrics", "created", "reason")
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in r.metrics.items() if k.endswith("_recent"))
        table.add_row(str(r.version), "●" if r.version == current else "", r.status, str(r.examples_seen),
                      metrics, str(r.created_at)[:19], r.hold_reason or "")
    console.print(table)


@models.command("show")
def show(model: str, version: int) -> None:
    """One version's lineage, metrics and gate decision (JSON)."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        return await asyncio.to_thread(registry.version, s.spec.name, model, version)

    row = asyncio.run(_with_clients(run))
    if row is None:
        console.print(f"[red]{model} v{version} is not in the registry[/red]")
        raise typer.Exit(1)
    _print_json(asdict(row))


def _move(action: Action, model: str, version: int, reason: str, actor: str | None, as_json: bool) -> None:
    who = actor or f"cli:{getpass.getuser()}"

    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        return await move_current(store, registry, Signer(s.signing_key_map), app=s.spec.name, model=model,
                                  version=version, action=action, actor=who, reason=reason)

    try:
        moved = asyncio.run(_with_clients(run))
    except LifecycleError as exc:
        console.print(f"[red]{action} refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        return _print_json({**asdict(moved), "action": action, "actor": who})
    console.print(f"{action}: {model} v{moved.version_from} → v{moved.version_to} (generation {moved.generation},"
                  f" blob {moved.blob_sha256[:12]}…, audit #{moved.audit_id})")


ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the audit log).")]
ActorOpt = Annotated[str | None, typer.Option(help="Who acts (default: cli:<user>).")]


@models.command("rollback")
def rollback(model: str, version: int, reason: ReasonOpt, actor: ActorOpt = None, as_json: JsonOpt = False) -> None:
    """Serve an earlier stored version; every predictor follows."""
    _move("rollback", model, version, reason, actor, as_json)


@models.command("promote")
def promote(model: str, version: int, reason: ReasonOpt, actor: ActorOpt = None, as_json: JsonOpt = False) -> None:
    """Serve a later stored version, e.g. one the gate held back."""
    _move("promote", model, version, reason, actor, as_json)


@models.command("audit")
def audit(
    model: Annotated[str | None, typer.Option()] = None, action: Annotated[str | None, typer.Option()] = None,
    actor: Annotated[str | None, typer.Option()] = None, limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log, newest first."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        return await asyncio.to_thread(registry.audit, s.spec.name, model=model, action=action, actor=actor, limit=limit)

    entries, total = asyncio.run(_with_clients(run))
    if as_json:
        return _print_json({"total": total, "items": [asdict(e) for e in entries]})
    table = Table("id", "at", "actor", "action", "model", "from", "to", "reason", title=f"{total} entries")
    for e in entries:
        table.add_row(str(e.id), str(e.at)[:19], e.actor, e.action, e.model or "", str(e.version_from), str(e.version_to), e.reason)
    console.print(table)
