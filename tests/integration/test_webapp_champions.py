"""The champion/challenger JSON API of the web app on real Redis and SQLite (and PostgreSQL through
the registry tests): list the roster, add and retire challengers, change the champion, drifts;
operators only, with precise 4xx and an audit entry per write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from streamwise_core.adapters.registry import CHAMPION, DriftEntry, RosterEntry
from streamwise_core.contracts.codec import ModelMeta, pack

from .test_webapp import API_KEY, SIGNER, Backends, backends, client_for  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
TREE = {"name": "fraud-tree", "steps": [{"use": "tree.HoeffdingTreeClassifier"}]}


async def _seed(b: Backends) -> str:
    spec = b.settings.spec
    await asyncio.to_thread(b.registry.add_model, RosterEntry(
        app=spec.name, name=spec.model.name, role=CHAMPION, kind="online", spec=spec.model.model_dump(mode="json"),
        start={"from": "earliest"}, created_by="spec", created_at=datetime.now(UTC),
    ))
    await b.store.claim_champion(spec.model.name)
    return spec.model.name


async def _publish(b: Backends, model: str, version: int) -> None:
    meta = ModelMeta(app=b.settings.spec.name, model=model, version=version, task="binary", examples_seen=version)
    await b.store.publish(model, version, pack({"model": model}, meta, SIGNER))


async def test_add_promote_retire_and_drifts(backends: Backends) -> None:  # noqa: F811
    champion = await _seed(backends)
    async with client_for(backends.settings) as anonymous:
        assert (await anonymous.post("/api/v1/challengers", json={"spec": TREE, "reason": "x"})).status_code == 401
        assert (await anonymous.get("/api/v1/drifts")).status_code == 401
    async with client_for(backends.settings, API_KEY) as client:
        for bad, status in (
            ({"name": "other", "spec": TREE}, 422), ({"spec": {"name": "Bad Name", "steps": []}, "reason": "x"}, 422),
            ({"spec": TREE, "start": {"from": "offset"}, "reason": "x"}, 422),
            ({"spec": {**TREE, "steps": [{"use": "tree.Nope"}]}, "reason": "x"}, 422),
        ):
            r = await client.post("/api/v1/challengers", json=bad)
            assert r.status_code == status, (bad, r.text)
        # As the Models page sends it: the name beside the spec, no reason (the default one is recorded).
        r = await client.post("/api/v1/challengers", json={"name": "fraud-tree", "spec": {"steps": TREE["steps"]}, "start": {"from": "latest"}})
        assert r.status_code == 201, r.text
        assert r.json()["start"] == {"from": "latest"} and r.json()["created_by"].startswith("api-key:")
        assert (await client.post("/api/v1/challengers", json={"spec": TREE, "reason": "again"})).status_code == 409

        models = (await client.get("/api/v1/models")).json()
        assert [(m["name"], m["role"], m["status"]) for m in models] == [
            (champion, "champion", "waiting"), ("fraud-tree", "challenger", "waiting")]

        r = await client.post("/api/v1/models/fraud-tree/champion", json={"reason": "better"})
        assert r.status_code == 409 and "no served version" in r.json()["detail"]
        await _publish(backends, "fraud-tree", 1)
        r = await client.post("/api/v1/models/fraud-tree/champion", json={"reason": "better"}, headers={"X-Actor": "alice"})
        assert r.status_code == 200, r.text
        assert r.json()["champion"] == "fraud-tree" and r.json()["actor"] == "alice"
        assert (await backends.store.champion()).model == "fraud-tree"  # type: ignore[union-attr]
        assert (await client.post("/api/v1/models/ghost/champion", json={"reason": "x"})).status_code == 404

        assert (await client.request("DELETE", "/api/v1/challengers/fraud-tree", json={"reason": "x"})).status_code == 409
        assert (await client.delete(f"/api/v1/challengers/{champion}")).status_code == 422, "a reason is required"
        assert (await client.delete(f"/api/v1/challengers/{champion}", params={"reason": "the tree won"})).status_code == 204
        models = (await client.get("/api/v1/models")).json()
        assert [(m["name"], m["role"]) for m in models] == [("fraud-tree", "champion"), (champion, "retired")]

        audit = (await client.get("/api/v1/audit")).json()["items"]
        assert [a["action"] for a in audit] == ["challenger_retired", "champion_changed", "challenger_added"]
        assert audit[1]["actor"] == "alice"

        await asyncio.to_thread(backends.registry.record_drift, DriftEntry(
            app=backends.settings.spec.name, model="fraud-tree", version=1, examples_seen=500,
            detected_at=datetime.now(UTC), offsets={"events:0": 499}, detector="adwin(delta=0.002)", action="alert",
            details={"error_after": 0.31},
        ))
        [drift] = (await client.get("/api/v1/drifts", params={"model": "fraud-tree"})).json()
        assert (drift["examples_seen"], drift["offsets"], drift["error_after"]) == (500, {"events:0": 499}, 0.31)
        assert (await client.get("/api/v1/drifts", params={"model": "Bad!"})).status_code == 422
