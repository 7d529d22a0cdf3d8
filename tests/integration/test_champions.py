"""Champion and challengers on real Redis and SQL (SQLite and PostgreSQL): the roster, the
champion pointer predictors follow, the roster operations with their audit entries, drifts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import CHALLENGER, CHAMPION, DriftEntry, ModelExists, Registry, RosterEntry
from streamwise_core.contracts.appspec import ModelSpec, load_app_spec
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_types import PointerMoved
from streamwise_core.domain.lifecycle.operations import Conflict, VersionNotFound
from streamwise_core.domain.lifecycle.roster import InvalidModel, StartPosition, add_challenger, make_champion, retire
from streamwise_devstack import ExternalRedis, RedisServer
from streamwise_predictor.holder import ModelHolder
from streamwise_predictor.watcher import VersionWatcher

from .test_registry_sql import ROOT, db_url, registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
SIGNER = Signer({"k1": b"integration-test-signing-key-1"})
TREE = ModelSpec.model_validate({"name": "fraud-tree", "steps": [{"use": "tree.HoeffdingTreeClassifier"}]})


@pytest.fixture
async def store(redis_server: RedisServer | ExternalRedis) -> AsyncIterator[ModelStore]:
    s = ModelStore.from_url(redis_server.url, f"it{uuid.uuid4().hex[:8]}", SPEC.name)
    yield s
    await s.close()


def _signed(model: str, version: int) -> SignedBlob:
    meta = ModelMeta(app=SPEC.name, model=model, version=version, task="binary", examples_seen=version)
    return pack({"model": model, "version": version}, meta, SIGNER)


def _entry(name: str, role: str) -> RosterEntry:
    return RosterEntry(
        app=SPEC.name, name=name, role=role, kind="online", spec={"name": name}, start={"from": "earliest"},
        created_by="test", created_at=datetime.now(UTC),
    )


def test_the_roster_keeps_one_champion_and_never_reuses_a_name(registry: Registry) -> None:  # noqa: F811
    registry.add_model(_entry("a", CHAMPION))
    registry.add_model(_entry("b", CHALLENGER))
    with pytest.raises(ModelExists):
        registry.add_model(_entry("b", CHALLENGER))
    registry.set_champion(SPEC.name, "b")
    assert [(e.name, e.role) for e in registry.roster(SPEC.name)] == [("b", CHAMPION), ("a", CHALLENGER)]
    assert registry.retire(SPEC.name, "a", "worse")
    assert not registry.retire(SPEC.name, "a", "again")
    assert [e.name for e in registry.roster(SPEC.name)] == ["b"]
    retired = registry.roster_entry(SPEC.name, "a")
    assert retired is not None and retired.role == "retired" and retired.reason == "worse" and retired.retired_at is not None
    with pytest.raises(ModelExists):
        registry.add_model(_entry("a", CHALLENGER))


def test_drifts_are_stored_with_time_and_offsets(registry: Registry) -> None:  # noqa: F811
    at = datetime(2026, 11, 29, 12, tzinfo=UTC)
    for i in range(3):
        registry.record_drift(DriftEntry(
            app=SPEC.name, model="a" if i < 2 else "b", version=10 + i, examples_seen=1000 * i, detected_at=at,
            offsets={"events:0": 999 * i}, detector="adwin(delta=0.002)", action="challenger", details={"error_after": 0.3},
        ))
    found = registry.drifts(SPEC.name, model="a")
    assert [(d.version, d.offsets) for d in found] == [(11, {"events:0": 999}), (10, {"events:0": 0})]
    assert found[0].detected_at.replace(tzinfo=UTC) == at and found[0].details == {"error_after": 0.3}
    assert len(registry.drifts(SPEC.name)) == 3


async def test_the_champion_is_claimed_once_and_moved_only_as_expected(store: ModelStore) -> None:
    assert await store.champion() is None
    first = await store.claim_champion("a")
    assert (first.model, await store.claim_champion("b")) == ("a", first), "claiming never overrides"
    moved = await store.set_champion("b", expect="a")
    assert moved.model == "b" and moved.generation > first.generation
    with pytest.raises(PointerMoved):
        await store.set_champion("c", expect="a")
    await store.set_roster(["b", "a"])
    assert await store.roster() == ["a", "b"]


async def test_roster_operations_check_their_preconditions_and_audit(store: ModelStore, registry: Registry) -> None:  # noqa: F811
    registry.add_model(_entry(SPEC.model.name, CHAMPION))
    await store.claim_champion(SPEC.model.name)
    entry = await add_challenger(store, registry, SPEC, TREE, StartPosition.parse({"from": "latest"}), actor="alice", reason="try a tree")
    assert entry.role == CHALLENGER and entry.start == {"from": "latest"}
    assert await store.roster() == sorted([SPEC.model.name, "fraud-tree"])
    with pytest.raises(Conflict):
        await add_challenger(store, registry, SPEC, TREE, StartPosition(), actor="alice", reason="twice")
    broken = TREE.model_copy(update={"name": "broken", "steps": TREE.steps[:0] + (TREE.steps[0].model_copy(update={"use": "tree.Nope"}),)})
    with pytest.raises(InvalidModel):
        await add_challenger(store, registry, SPEC, broken, StartPosition(), actor="alice", reason="typo")

    with pytest.raises(Conflict, match="no served version"):
        await make_champion(store, registry, SPEC.name, "fraud-tree", actor="bob", reason="too early")
    await store.publish("fraud-tree", 1, _signed("fraud-tree", 1))
    generation = await make_champion(store, registry, SPEC.name, "fraud-tree", actor="bob", reason="better")
    champion = await store.champion()
    assert champion is not None and (champion.model, champion.generation) == ("fraud-tree", generation)
    assert [(e.name, e.role) for e in registry.roster(SPEC.name)] == [("fraud-tree", CHAMPION), (SPEC.model.name, CHALLENGER)]

    with pytest.raises(Conflict, match="champion"):
        await retire(store, registry, SPEC.name, "fraud-tree", actor="bob", reason="no")
    with pytest.raises(VersionNotFound):
        await retire(store, registry, SPEC.name, "ghost", actor="bob", reason="no")
    await retire(store, registry, SPEC.name, SPEC.model.name, actor="bob", reason="the tree won")
    assert await store.roster() == ["fraud-tree"]

    entries, total = registry.audit(SPEC.name)
    assert total == 3
    assert [(e.action, e.actor, e.model) for e in entries] == [
        ("challenger_retired", "bob", SPEC.model.name), ("champion_changed", "bob", "fraud-tree"), ("challenger_added", "alice", "fraud-tree"),
    ]
    assert entries[1].details["champion_before"] == SPEC.model.name and entries[1].version_to == 1


async def test_predictors_follow_the_champion_and_never_go_back_to_a_stale_one(store: ModelStore) -> None:
    holder = ModelHolder()
    watcher = VersionWatcher(store, SIGNER, holder, SPEC.model.name, 0.05)
    for v in (1, 2, 3):
        await store.publish(SPEC.model.name, v, _signed(SPEC.model.name, v))
    await watcher.check()
    assert holder.current is not None and holder.current.meta.model == SPEC.model.name, "no champion set: the configured model"
    await store.claim_champion(SPEC.model.name)
    await store.publish("fraud-tree", 1, _signed("fraud-tree", 1))
    await store.set_champion("fraud-tree")
    await watcher.check()
    served: Any = holder.current
    assert (served.meta.model, served.meta.version, served.model) == ("fraud-tree", 1, {"model": "fraud-tree", "version": 1})
    # The old champion goes on publishing: its versions are higher, its pointer newer; not served.
    await store.publish(SPEC.model.name, 4, _signed(SPEC.model.name, 4))
    await watcher.check()
    assert holder.current is not None and holder.current.meta.model == "fraud-tree"
    await store.publish("fraud-tree", 2, _signed("fraud-tree", 2))
    await watcher.check()
    assert holder.current is not None and (holder.current.meta.model, holder.current.meta.version) == ("fraud-tree", 2)
    await store.set_champion(SPEC.model.name)
    await watcher.check()
    assert holder.current is not None and (holder.current.meta.model, holder.current.meta.version) == (SPEC.model.name, 4)


async def test_drift_challengers_are_capped_across_the_app(store: ModelStore, registry: Registry, tmp_path: Any) -> None:  # noqa: F811
    from streamwise_trainer.drift import Drift
    from streamwise_trainer.settings import TrainerSettings
    from streamwise_trainer.supervisor import DRIFT_ACTOR, Supervisor

    settings = TrainerSettings(app_spec=ROOT / "examples" / "fraud" / "lifecycle.toml", _env_file=None)  # type: ignore[call-arg]
    supervisor = Supervisor(settings, SIGNER, "test-writer")
    supervisor._store, supervisor._registry = store, registry  # noqa: SLF001 - the clients run() would open
    registry.add_model(_entry(SPEC.model.name, CHAMPION))
    champion = settings.spec.model
    assert champion.drift.action == "challenger" and champion.drift.max_challengers == 2
    for i in range(3):
        found = Drift(
            examples_seen=1000 * (i + 1), offsets={"events:0": 999 * (i + 1)}, detected_at=datetime.now(UTC),
            error_after=0.2, detector="adwin", action="challenger",
        )
        await supervisor._drift_challenger(champion, found)  # noqa: SLF001
    spawned = [e for e in registry.roster(SPEC.name) if e.created_by == DRIFT_ACTOR]
    assert [(e.name, e.start) for e in spawned] == [
        ("fraud-lr-d1", {"from": "positions", "positions": {"events:0": 999}}),
        ("fraud-lr-d2", {"from": "positions", "positions": {"events:0": 1998}}),
    ], "two at most; the third drift only records"
    # A drift challenger that became champion and drifts in turn counts against the same cap,
    # and names are never reused once one is retired.
    registry.retire(SPEC.name, "fraud-lr-d1", "lost")
    await supervisor._drift_challenger(ModelSpec.model_validate(spawned[1].spec), found)  # noqa: SLF001
    names = [e.name for e in registry.roster(SPEC.name) if e.created_by == DRIFT_ACTOR]
    assert names == ["fraud-lr-d2", "fraud-lr-d2-d1"]
    await supervisor._drift_challenger(champion, found)  # noqa: SLF001
    assert len([e for e in registry.roster(SPEC.name) if e.created_by == DRIFT_ACTOR]) == 2


async def test_a_stopping_supervisor_starts_no_model_again(  # noqa: F811
    store: ModelStore, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shutdown stops every model while the roster loop still turns: a reconcile after ``stop``
    must not start them again (the worker then never exited)."""
    from streamwise_trainer import supervisor as supervisor_module
    from streamwise_trainer.settings import TrainerSettings
    from streamwise_trainer.supervisor import Supervisor

    settings = TrainerSettings(app_spec=ROOT / "examples" / "fraud" / "lifecycle.toml", _env_file=None)  # type: ignore[call-arg]
    supervisor = Supervisor(settings, SIGNER, "test-writer")
    supervisor._store, supervisor._registry = store, registry  # noqa: SLF001 - the clients run() would open
    registry.add_model(_entry(SPEC.model.name, CHAMPION))
    starts: list[str] = []

    async def prepare_model(settings: TrainerSettings, *args: Any, **kwargs: Any) -> Any:
        starts.append(settings.spec.model.name)
        raise RuntimeError("no Kafka in this test")

    monkeypatch.setattr(supervisor_module, "prepare_model", prepare_model)
    monkeypatch.setattr(store, "close", _no_close)  # the fixture closes it
    monkeypatch.setattr(registry, "close", lambda: None)
    await supervisor.reconcile()
    assert starts == [SPEC.model.name], "a roster model not running is started"
    await supervisor.stop()
    supervisor._retry_at.clear()  # noqa: SLF001 - no back-off hides a start
    await supervisor.reconcile()
    assert starts == [SPEC.model.name], "started again after stop"
    await asyncio.wait_for(supervisor.run(), timeout=60)  # the roster loop ends


async def _no_close() -> None:
    return None
