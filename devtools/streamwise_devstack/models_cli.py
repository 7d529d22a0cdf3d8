"""``streamwise models``: the champion and challengers, versions, promote, roll back, pin, add,
retire and replay challengers, drifts, and the audit log.

Reads the same ``STREAMWISE_*`` settings as the services (Redis, registry, signing keys,
app spec) and calls the same lifecycle operations as the web app's JSON API.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry
from streamwise_core.adapters.settings import Settings
from streamwise_core.contracts.appspec import ModelSpec
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.lifecycle.operations import Action, LifecycleError, PinAction, VersionNotFound, move_current
from streamwise_core.domain.lifecycle.operations import pin as pin_version
from streamwise_core.domain.lifecycle.operations import unpin as unpin_version
from streamwise_core.domain.lifecycle.roster import StartPosition, add_challenger, make_champion, retire

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
    """Every model: its role (champion, challenger), kind, and the version served now."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> list[dict[str, Any]]:
        summaries = {m.model: m for m in await asyncio.to_thread(registry.models, s.spec.name)}
        roster = {e.name: e for e in await asyncio.to_thread(registry.roster, s.spec.name)}
        champion = await store.champion()
        out = []
        for name in sorted(summaries.keys() | roster.keys() | {s.spec.model.name}):
            pointer = await store.pointer(name)
            m, entry = summaries.get(name), roster.get(name)
            role = "champion" if champion is not None and champion.model == name else (entry.role if entry else "retired")
            out.append({
                "model": name, "role": role, "kind": entry.kind if entry else None,
                "served_version": pointer.version if pointer else None,
                "generation": pointer.generation if pointer else None,
                "versions": m.versions if m else 0, "held_back": m.held_back if m else 0,
                "latest_version": m.latest_version if m else None,
            })
        return sorted(out, key=lambda r: (r["role"] != "champion", r["role"] == "retired", r["model"]))

    rows = asyncio.run(_with_clients(run))
    if as_json:
        return _print_json(rows)
    table = Table("model", "role", "kind", "served", "generation", "versions", "held back", "latest")
    keys = ("model", "role", "kind", "served_version", "generation", "versions", "held_back", "latest_version")
    for r in rows:
        table.add_row(*(str(r[k]) for k in keys))
    console.print(table)


@models.command("versions")
def versions(
    model: str, limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 20,
    before: Annotated[int | None, typer.Option(min=1, help="Only versions below this one (the next page's cursor).")] = None,
    status: Annotated[str | None, typer.Option(help="served or held_back")] = None, as_json: JsonOpt = False,
) -> None:
    """Versions newest first, a page at a time: gate status and reason, pinned, blob still stored."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> tuple[Any, ...]:
        rows = await asyncio.to_thread(registry.versions, s.spec.name, model, limit + 1, status=status, before=before)
        return rows, await store.pointer(model), set(await store.stored_versions(model)), set(await store.pinned(model))

    rows, pointer, stored, pinned = asyncio.run(_with_clients(run))
    rows, more = rows[:limit], len(rows) > limit
    current = pointer.version if pointer else None
    if as_json:
        return _print_json([
            {**asdict(r), "current": r.version == current, "stored": r.version in stored, "pinned": r.version in pinned}
            for r in rows
        ])
    table = Table("version", "", "status", "blob", "examples", "metrics", "created", "reason")
    for r in rows:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in r.metrics.items() if k.endswith("_recent"))
        blob = "pinned" if r.version in pinned else "stored" if r.version in stored else "deleted"
        table.add_row(str(r.version), "●" if r.version == current else "", r.status, blob, str(r.examples_seen),
                      metrics, str(r.created_at)[:19], r.hold_reason or "")
    console.print(table)
    if more:
        console.print(f"older versions: --before {rows[-1].version}")


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


def _pin(action: PinAction, model: str, version: int, reason: str, actor: str | None, as_json: bool) -> None:
    who = actor or f"cli:{getpass.getuser()}"
    operation = pin_version if action == "pin" else unpin_version

    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        return await operation(store, registry, app=s.spec.name, model=model, version=version, actor=who, reason=reason)

    try:
        changed = asyncio.run(_with_clients(run))
    except LifecycleError as exc:
        console.print(f"[red]{action} refused:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        return _print_json({**asdict(changed), "action": action, "actor": who})
    effect = "retention keeps its blob" if changed.pinned else "retention may delete its blob again"
    console.print(f"{action}: {model} v{version}, {effect} (audit #{changed.audit_id})")


@models.command("pin")
def pin(model: str, version: int, reason: ReasonOpt, actor: ActorOpt = None, as_json: JsonOpt = False) -> None:
    """Keep a stored version's blob whatever the retention (something to roll back to)."""
    _pin("pin", model, version, reason, actor, as_json)


@models.command("unpin")
def unpin(model: str, version: int, reason: ReasonOpt, actor: ActorOpt = None, as_json: JsonOpt = False) -> None:
    """Let retention delete a pinned version's blob again."""
    _pin("unpin", model, version, reason, actor, as_json)


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


FromOpt = Annotated[str, typer.Option("--from", help="earliest, latest, offset or time: where the new model starts reading.")]
OffsetOpt = Annotated[int | None, typer.Option(help="With --from offset: the first offset of every events partition.")]
TimeOpt = Annotated[str | None, typer.Option(help="With --from time: an ISO 8601 time, e.g. 2026-11-29T10:00:00Z.")]


def _start(start_from: str, offset: int | None, at: str | None) -> StartPosition:
    try:
        return StartPosition.parse({"from": start_from, "offset": offset, "time": at})
    except ValueError as exc:
        console.print(f"[red]bad start position:[/red] {exc}")
        raise typer.Exit(2) from exc


def _add(spec_of: Any, start: StartPosition, reason: str, actor: str | None, as_json: bool) -> None:
    who = actor or f"cli:{getpass.getuser()}"

    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        model = await spec_of(s, registry)
        return await add_challenger(store, registry, s.spec, model, start, actor=who, reason=reason)

    try:
        entry = asyncio.run(_with_clients(run))
    except LifecycleError as exc:
        console.print(f"[red]not added:[/red] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        return _print_json(asdict(entry))
    console.print(f"added challenger {entry.name} ({entry.kind}), starting from {entry.start}; the trainer picks it up within seconds")


def _read_spec(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return data.get("model", data)


@models.command("add")
def add(
    spec_file: Annotated[Path, typer.Argument(help="A TOML or JSON file holding one model table (name, kind, steps...).")],
    reason: ReasonOpt, start_from: FromOpt = "earliest", offset: OffsetOpt = None, at: TimeOpt = None,
    actor: ActorOpt = None, as_json: JsonOpt = False,
) -> None:
    """Add a challenger declared in a file; it replays the events from --from, then learns live."""
    try:
        model = ModelSpec.model_validate(_read_spec(spec_file))
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read a model spec from {spec_file}:[/red] {exc}")
        raise typer.Exit(2) from exc

    async def spec_of(s: Settings, registry: Registry) -> ModelSpec:
        return model

    _add(spec_of, _start(start_from, offset, at), reason, actor, as_json)


@models.command("replay")
def replay(
    source: Annotated[str, typer.Argument(help="The model whose spec is replayed.")],
    name: Annotated[str, typer.Option("--as", help="The new challenger's name.")],
    reason: ReasonOpt, start_from: FromOpt = "earliest", offset: OffsetOpt = None, at: TimeOpt = None,
    actor: ActorOpt = None, as_json: JsonOpt = False,
) -> None:
    """Rebuild a model from the events topic: a challenger with SOURCE's spec, replaying from --from."""
    async def spec_of(s: Settings, registry: Registry) -> ModelSpec:
        declared = {m.name: m for m in s.spec.models}
        entry = await asyncio.to_thread(registry.roster_entry, s.spec.name, source)
        if source in declared:
            model = declared[source]
        elif entry is not None:
            model = ModelSpec.model_validate(entry.spec)
        else:
            raise VersionNotFound(f"no model {source}")
        return model.model_copy(update={"name": name})

    _add(spec_of, _start(start_from, offset, at), reason, actor, as_json)


@models.command("retire")
def retire_model(name: str, reason: ReasonOpt, actor: ActorOpt = None) -> None:
    """Stop a challenger learning (its versions stay in the registry)."""
    who = actor or f"cli:{getpass.getuser()}"

    async def run(s: Settings, store: ModelStore, registry: Registry) -> None:
        await retire(store, registry, s.spec.name, name, actor=who, reason=reason)

    try:
        asyncio.run(_with_clients(run))
    except LifecycleError as exc:
        console.print(f"[red]not retired:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"retired {name}")


@models.command("champion")
def champion(name: str, reason: ReasonOpt, actor: ActorOpt = None) -> None:
    """Make a challenger the champion: every predictor serves it from now on."""
    who = actor or f"cli:{getpass.getuser()}"

    async def run(s: Settings, store: ModelStore, registry: Registry) -> int:
        return await make_champion(store, registry, s.spec.name, name, actor=who, reason=reason)

    try:
        generation = asyncio.run(_with_clients(run))
    except LifecycleError as exc:
        console.print(f"[red]not made champion:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{name} is the champion (champion generation {generation})")


@models.command("drifts")
def drifts(
    model: Annotated[str | None, typer.Option()] = None, limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Drifts detected, newest first: when, at which offsets, and the action taken."""
    async def run(s: Settings, store: ModelStore, registry: Registry) -> Any:
        return await asyncio.to_thread(registry.drifts, s.spec.name, model=model, limit=limit)

    found = asyncio.run(_with_clients(run))
    if as_json:
        return _print_json([asdict(d) for d in found])
    table = Table("id", "detected", "model", "version", "examples", "offsets", "action", "error after")
    for d in found:
        table.add_row(str(d.id), str(d.detected_at)[:19], d.model, str(d.version), str(d.examples_seen),
                      json.dumps(d.offsets), d.action, f"{d.details.get('error_after', float('nan')):.3f}")
    console.print(table)
