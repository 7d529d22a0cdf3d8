"""The lifecycle JSON API of the web app on real Redis and SQLite: models, versions with their
gate status, metric history, promote and rollback with the audit log, and precise 4xx."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from streamwise_core.contracts.codec import ModelMeta, pack
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.lifecycle.operations import Conflict, VersionNotFound, move_current

from .test_webapp import API_KEY, KEY_ID, SIGNER, Backends, backends, client_for  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
KEY = API_KEY


async def _publish(b: Backends, version: int, *, served: bool = True, accuracy: float = 0.9) -> ModelMeta:
    spec = b.settings.spec
    meta = ModelMeta(
        app=spec.name, model=spec.model.name, version=version, task=spec.task, examples_seen=version * 500,
        metrics={"accuracy": accuracy, "accuracy_recent": accuracy},
    )
    signed = pack({"weights": [version]}, meta, SIGNER)
    await b.store.publish(meta.model, version, signed, make_current=served)
    meta = meta.model_copy(update={"blob_sha256": hashlib.sha256(signed.blob).hexdigest()})
    await asyncio.to_thread(
        b.registry.record_version, meta, KEY_ID, status="served" if served else "held_back",
        hold_reason=None if served else "accuracy_recent 0.5000 is worse than served 0.9000 by more than 0.02",
    )
    return meta


async def test_read_endpoints(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    for v in (1, 2):
        await _publish(backends, v)
    await _publish(backends, 3, served=False, accuracy=0.5)
    async with client_for(backends.settings) as client:
        for path in ("/api/v1/models", f"/api/v1/models/{model}/versions", f"/api/v1/models/{model}/metrics", "/api/v1/audit"):
            assert (await client.get(path)).status_code == 401, path
    async with client_for(backends.settings, KEY) as client:
        [info] = (await client.get("/api/v1/models")).json()
        assert (info["model"], info["served_version"], info["versions"], info["held_back"], info["latest_version"]) == (
            model, 2, 3, 1, 3)
        versions = (await client.get(f"/api/v1/models/{model}/versions")).json()
        assert [(v["version"], v["status"], v["current"]) for v in versions] == [
            (3, "held_back", False), (2, "served", True), (1, "served", False)]
        assert "worse than served" in versions[0]["hold_reason"]
        held = (await client.get(f"/api/v1/models/{model}/versions", params={"status": "held_back"})).json()
        assert [v["version"] for v in held] == [3]
        history = (await client.get(f"/api/v1/models/{model}/metrics")).json()
        assert [(p["version"], p["metrics"]["accuracy"]) for p in history] == [(1, 0.9), (2, 0.9), (3, 0.5)]
        assert (await client.get("/api/v1/models/nope/versions")).status_code == 404
        assert (await client.get("/api/v1/models/Bad!/metrics")).status_code == 422
        assert (await client.get(f"/api/v1/models/{model}/versions", params={"limit": 0})).status_code == 422
        assert (await client.get(f"/api/v1/models/{model}/versions", params={"status": "x"})).status_code == 422
        assert (await client.get("/api/v1/audit", params={"offset": -1})).status_code == 422
        assert (await client.get("/api/v1/audit")).json() == {"total": 0, "limit": 50, "offset": 0, "items": []}


async def test_promote_rollback_and_audit(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    metas = {v: await _publish(backends, v) for v in (1, 2)}
    metas[3] = await _publish(backends, 3, served=False, accuracy=0.5)
    url = f"/api/v1/models/{model}"
    async with client_for(backends.settings) as client:
        # writes need the key, and the key is checked before the body
        assert (await client.post(f"{url}/promote", json={"version": 3, "reason": "x"})).status_code == 401
        assert (await client.post(f"{url}/promote", content=b"{", headers={"X-API-Key": "wrong"})).status_code == 401
        for body in ({}, {"version": 3}, {"version": 0, "reason": "x"}, {"version": 3, "reason": ""},
                     {"version": "3", "reason": "x", "extra": 1}, {"version": 2**40, "reason": "x"}):
            r = await client.post(f"{url}/promote", json=body, headers=KEY)
            assert r.status_code == 422, (body, r.text)
        r = await client.post(f"{url}/promote", content=b"not json", headers={**KEY, "content-type": "application/json"})
        assert r.status_code == 422
        assert (await client.post(f"{url}/promote", content=b"\x00", headers={"content-type": "application/json"})).status_code == 401
        r = await client.post(f"{url}/promote", content=b"version=3", headers={**KEY, "content-type": "text/plain"})
        assert r.status_code == 415
        r = await client.post(f"{url}/promote", content=b"{" + b" " * 20_000 + b"}", headers={**KEY, "content-type": "application/json"})
        assert r.status_code == 413
        r = await client.post(f"{url}/promote", json={"version": 3, "reason": 7}, headers=KEY)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
        assert (await client.post(f"{url}/promote", json={"version": 9, "reason": "x"}, headers=KEY)).status_code == 404
        assert (await client.post(f"{url}/promote", json={"version": 1, "reason": "x"}, headers=KEY)).status_code == 409
        assert (await client.post(f"{url}/rollback", json={"version": 2, "reason": "x"}, headers=KEY)).status_code == 409
        assert (await client.post("/api/v1/models/nope/rollback", json={"version": 1, "reason": "x"}, headers=KEY)).status_code == 404

        r = await client.post(f"{url}/promote", json={"version": 3, "reason": "reviewed"}, headers={**KEY, "X-Actor": "alice"})
        assert r.status_code == 200, r.text
        promoted = r.json()
        assert (promoted["version_from"], promoted["version_to"], promoted["actor"]) == (2, 3, "alice")
        assert promoted["blob_sha256"] == metas[3].blob_sha256
        assert await backends.store.current_version(model) == 3
        assert backends.registry.version(backends.settings.spec.name, model, 3).status == "served"  # type: ignore[union-attr]

        r = await client.post(f"{url}/rollback", json={"version": 1, "reason": "v3 misbehaves"}, headers=KEY)
        assert r.status_code == 200, r.text
        rolled = r.json()
        assert rolled["generation"] > promoted["generation"] and rolled["actor"].startswith("api-key:")
        assert "dev-api-key" not in rolled["actor"]
        pointer = await backends.store.pointer(model)
        assert pointer is not None and (pointer.version, pointer.generation) == (1, rolled["generation"])

        page = (await client.get("/api/v1/audit", params={"model": model}, headers=KEY)).json()
        assert page["total"] == 2
        assert [(i["action"], i["version_from"], i["version_to"], i["reason"]) for i in page["items"]] == [
            ("rollback", 3, 1, "v3 misbehaves"), ("promote", 2, 3, "reviewed")]
        assert page["items"][0]["details"]["blob_sha256"] == metas[1].blob_sha256
        assert [i["action"] for i in (await client.get("/api/v1/audit", params={"actor": "alice"}, headers=KEY)).json()["items"]] == ["promote"]
        assert (await client.get("/api/v1/audit", params={"action": "rollback", "limit": 1}, headers=KEY)).json()["total"] == 1
        [info] = (await client.get("/api/v1/models", headers=KEY)).json()
        assert info["served_version"] == 1 and info["held_back"] == 0


async def test_a_version_that_fails_verification_is_never_pointed_at(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    await _publish(backends, 1)
    await _publish(backends, 2)
    signer = Signer({"other": b"another-signing-key-0123456789"})
    with pytest.raises(Conflict, match="fails verification"):
        await move_current(backends.store, backends.registry, signer, app=backends.settings.spec.name, model=model,
                           version=1, action="rollback", actor="t", reason="r")
    with pytest.raises(VersionNotFound):
        await move_current(backends.store, backends.registry, SIGNER, app=backends.settings.spec.name, model=model,
                           version=5, action="promote", actor="t", reason="r")
    assert await backends.store.current_version(model) == 2
    entries: Any = backends.registry.audit(backends.settings.spec.name)
    assert entries == ([], 0)


def test_operator_cli(redis_server: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json as jsonlib
    import uuid

    from typer.testing import CliRunner

    from streamwise_core.adapters.modelstore import ModelStore
    from streamwise_core.adapters.registry import Registry, migrate
    from streamwise_devstack.cli import cli
    from streamwise_webapp.settings import WebappSettings

    from .test_webapp import SECRET, SPEC

    db = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(db)
    env = {
        "STREAMWISE_APP_SPEC": str(SPEC), "STREAMWISE_REDIS_URL": redis_server.url, "STREAMWISE_DATABASE_URL": db,
        "STREAMWISE_TOPIC_PREFIX": f"cli{uuid.uuid4().hex[:8]}", "STREAMWISE_SIGNING_KEYS": f"{KEY_ID}:{SECRET.decode()}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = WebappSettings()

    async def setup() -> None:
        b = Backends(settings, ModelStore.from_url(settings.redis_url, settings.topic_prefix, settings.spec.name),
                     Registry.from_url(db))
        try:
            for v in (1, 2):
                await _publish(b, v)
            await _publish(b, 3, served=False, accuracy=0.5)
        finally:
            await b.store.close()
            b.registry.close()

    asyncio.run(setup())
    runner = CliRunner()
    model = settings.spec.model.name
    listed = jsonlib.loads(runner.invoke(cli, ["models", "list", "--json"]).stdout)
    assert listed[0]["served_version"] == 2 and listed[0]["held_back"] == 1
    assert runner.invoke(cli, ["models", "versions", model]).exit_code == 0
    versions = jsonlib.loads(runner.invoke(cli, ["models", "versions", model, "--json"]).stdout)
    assert [(v["version"], v["status"], v["current"]) for v in versions] == [(3, "held_back", False), (2, "served", True), (1, "served", False)]
    assert "worse than served" in versions[0]["hold_reason"]
    refused = runner.invoke(cli, ["models", "rollback", model, "5", "-r", "x"])
    assert refused.exit_code == 1 and "rollback refused" in refused.stdout
    done = runner.invoke(cli, ["models", "promote", model, "3", "-r", "checked by hand", "--actor", "ops", "--json"])
    assert done.exit_code == 0, done.stdout
    assert jsonlib.loads(done.stdout)["version_to"] == 3
    back = runner.invoke(cli, ["models", "rollback", model, "1", "-r", "undo"])
    assert back.exit_code == 0 and "v3" in back.stdout and "v1" in back.stdout
    audit = jsonlib.loads(runner.invoke(cli, ["models", "audit", "--json"]).stdout)
    assert [(i["action"], i["actor"]) for i in audit["items"]][:2] == [("rollback", audit["items"][0]["actor"]), ("promote", "ops")]
    shown = jsonlib.loads(runner.invoke(cli, ["models", "show", model, "3"]).stdout)
    assert shown["status"] == "served" and shown["version"] == 3

    pinned = runner.invoke(cli, ["models", "pin", model, "2", "-r", "known good", "--actor", "ops", "--json"])
    assert pinned.exit_code == 0, pinned.stdout
    assert jsonlib.loads(pinned.stdout)["pinned"] is True
    again = runner.invoke(cli, ["models", "pin", model, "2", "-r", "again"])
    assert again.exit_code == 1 and "pinned already" in again.stdout
    assert runner.invoke(cli, ["models", "pin", model, "9", "-r", "x"]).exit_code == 1
    page = jsonlib.loads(runner.invoke(cli, ["models", "versions", model, "--limit", "2", "--json"]).stdout)
    assert [(v["version"], v["stored"], v["pinned"]) for v in page] == [(3, True, False), (2, True, True)]
    older = jsonlib.loads(runner.invoke(cli, ["models", "versions", model, "--limit", "2", "--before", "2", "--json"]).stdout)
    assert [v["version"] for v in older] == [1]
    table = runner.invoke(cli, ["models", "versions", model, "--limit", "2"])
    assert table.exit_code == 0 and "pinned" in table.stdout and "--before 2" in table.stdout
    unpinned = runner.invoke(cli, ["models", "unpin", model, "2", "-r", "not needed"])
    assert unpinned.exit_code == 0 and "unpin" in unpinned.stdout
    audit = jsonlib.loads(runner.invoke(cli, ["models", "audit", "--json"]).stdout)
    assert [(i["action"], i["version_to"]) for i in audit["items"]][:2] == [("unpin", 2), ("pin", 2)]
