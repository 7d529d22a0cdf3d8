"""Pins and the paged versions list of the lifecycle API, on real Redis and SQLite: a pinned
version survives retention, an unpinned one goes at the next pruning, only operators pin, every
pin lands in the audit log, and the cursor walks every version exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.codec import ModelMeta, pack
from streamwise_core.contracts.retention import Retention

from .test_webapp import API_KEY, KEY_ID, SIGNER, Backends, backends, client_for  # noqa: F401 - fixture
from .test_webapp_auth import _people, _sign_in

pytestmark = pytest.mark.integration
PRUNE_ALL = Retention(keep_last=1, rollback_window=0, grace_s=0)
"""Keeps the newest version, the current one and the pinned ones."""


class Clock:
    """A minute later at every reading: each version is made current at a distinct time, and a
    pruning comes after all of them, also after the moves the web app makes on the wall clock."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 60.0
        return self.now


async def _clocked_store(b: Backends) -> ModelStore:
    s = b.settings
    return ModelStore.from_url(s.redis_url, s.topic_prefix, s.spec.name, clock=Clock())


async def _publish(b: Backends, store: ModelStore, versions: range) -> dict[int, str]:
    """Publish each version as the trainer does; their blobs' digests."""
    spec = b.settings.spec
    digests = {}
    for v in versions:
        meta = ModelMeta(app=spec.name, model=spec.model.name, version=v, task=spec.task, examples_seen=v * 100,
                         metrics={"accuracy": 0.9})
        signed = pack({"weights": [v]}, meta, SIGNER)
        await store.publish(meta.model, v, signed)
        digests[v] = hashlib.sha256(signed.blob).hexdigest()
        await asyncio.to_thread(b.registry.record_version, meta.model_copy(update={"blob_sha256": digests[v]}), KEY_ID)
    return digests


def _flags(versions: list[dict[str, Any]]) -> list[tuple[int, bool, bool]]:
    return [(v["version"], v["stored"], v["pinned"]) for v in versions]


async def test_a_pinned_version_survives_retention_until_unpinned(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    store = await _clocked_store(backends)
    try:
        digests = await _publish(backends, store, range(1, 6))
        url = f"/api/v1/models/{model}/versions"
        async with client_for(backends.settings, API_KEY | {"X-Actor": "alice"}) as client:
            r = await client.post(f"{url}/2/pin", json={"reason": "last known good"})
            assert r.status_code == 200, r.text
            pinned = r.json()
            assert (pinned["model"], pinned["version"], pinned["pinned"], pinned["actor"]) == (model, 2, True, "alice")
            r = await client.post(f"{url}/2/pin", json={"reason": "again"})
            assert r.status_code == 409 and "pinned already" in r.json()["detail"]

            assert await store.prune(model, PRUNE_ALL) == 3
            assert await store.stored_versions(model) == [2, 5]
            assert _flags((await client.get(url)).json()) == [
                (5, True, False), (4, False, False), (3, False, False), (2, True, True), (1, False, False)]

            r = await client.post(f"{url}/3/pin", json={"reason": "too late"})
            assert r.status_code == 404 and "deleted by retention" in r.json()["detail"]
            r = await client.post(f"{url}/99/pin", json={"reason": "never was"})
            assert r.status_code == 404 and "does not exist" in r.json()["detail"]
            r = await client.post(f"/api/v1/models/{model}/rollback", json={"version": 3, "reason": "pruned"})
            assert r.status_code == 404 and "deleted by retention" in r.json()["detail"]
            r = await client.post(f"/api/v1/models/{model}/rollback", json={"version": 2, "reason": "the pinned one"})
            assert r.status_code == 200, r.text
            r = await client.post(f"/api/v1/models/{model}/promote", json={"version": 5, "reason": "back to the newest"})
            assert r.status_code == 200, r.text

            r = await client.post(f"{url}/2/unpin", json={"reason": "v5 is fine"})
            assert r.status_code == 200 and r.json()["pinned"] is False
            r = await client.post(f"{url}/2/unpin", json={"reason": "again"})
            assert r.status_code == 409 and "not pinned" in r.json()["detail"]
            assert await store.prune(model, PRUNE_ALL) == 1
            assert await store.stored_versions(model) == [5]
            assert _flags((await client.get(url, params={"limit": 2})).json()) == [(5, True, False), (4, False, False)]

            audit = (await client.get("/api/v1/audit", params={"model": model})).json()["items"]
            pins = [(e["action"], e["actor"], e["version_to"], e["reason"]) for e in audit if e["action"] in ("pin", "unpin")]
            assert pins == [("unpin", "alice", 2, "v5 is fine"), ("pin", "alice", 2, "last known good")]
            assert [e["details"]["blob_sha256"] for e in audit if e["action"] == "pin"] == [digests[2]]
    finally:
        await store.close()


async def test_only_operators_pin_and_bad_requests_are_refused(backends: Backends) -> None:  # noqa: F811
    await backends.publish(1)
    await _people(backends)
    model = backends.settings.spec.model.name
    pin = f"/api/v1/models/{model}/versions/1/pin"
    why = {"reason": "keep it"}
    async with client_for(backends.settings) as client:
        assert (await client.post(pin, json=why)).status_code == 401
        csrf = await _sign_in(client, "vic")
        for action in ("pin", "unpin"):
            r = await client.post(f"/api/v1/models/{model}/versions/1/{action}", json=why, headers=csrf)
            assert r.status_code == 403, r.text
    async with client_for(backends.settings) as client:
        csrf = await _sign_in(client, "ops")
        assert (await client.post(pin, json=why)).status_code == 403  # the cookie alone, without its CSRF token
        for body in ({}, {"reason": ""}, {"reason": "x", "extra": 1}, {"reason": 7}):
            r = await client.post(pin, json=body, headers=csrf)
            assert r.status_code == 422, (body, r.text)
        r = await client.post(pin, content=b"reason=x", headers={**csrf, "content-type": "text/plain"})
        assert r.status_code == 415
        assert (await client.post(f"/api/v1/models/{model}/versions/0/pin", json=why, headers=csrf)).status_code == 422
        assert (await client.post("/api/v1/models/nope/versions/1/pin", json=why, headers=csrf)).status_code == 404
        r = await client.post(pin, json=why, headers=csrf)
        assert r.status_code == 200 and r.json()["actor"] == "ops"
    assert await backends.store.pinned(model) == [1]
    entries, total = backends.registry.audit(backends.settings.spec.name, action="pin")
    assert total == 1 and (entries[0].actor, entries[0].version_to) == ("ops", 1)


async def test_pins_answer_503_when_redis_is_down(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    nowhere = backends.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with client_for(nowhere, API_KEY) as client:
        for action in ("pin", "unpin"):
            r = await client.post(f"/api/v1/models/{model}/versions/1/{action}", json={"reason": "x"})
            assert r.status_code == 503, r.text
    assert backends.registry.audit(backends.settings.spec.name) == ([], 0)


async def _walk(client: httpx.AsyncClient, url: str, limit: int, *, between: Any = None) -> list[list[int]]:
    pages: list[list[int]] = []
    params: dict[str, Any] = {"limit": limit}
    while True:
        r = await client.get(url, params=params)
        assert r.status_code == 200, r.text
        pages.append([v["version"] for v in r.json()])
        cursor = r.headers.get("X-Next-Before")
        if cursor is None:
            assert "Link" not in r.headers
            return pages
        assert r.headers["Link"] == f'<{url}?limit={limit}&before={cursor}>; rel="next"'
        params = {"limit": limit, "before": int(cursor)}
        if between is not None:
            await between()
            between = None


async def test_the_cursor_walks_every_version_exactly_once(backends: Backends) -> None:  # noqa: F811
    model = backends.settings.spec.model.name
    for v in range(1, 8):
        await backends.publish(v)
    url = f"/api/v1/models/{model}/versions"
    async with client_for(backends.settings, API_KEY) as client:
        assert await _walk(client, url, 3) == [[7, 6, 5], [4, 3, 2], [1]]
        assert await _walk(client, url, 7) == [[7, 6, 5, 4, 3, 2, 1]]

        async def publish_more() -> None:
            await backends.publish(8)

        # a version published meanwhile moves no page: it is on the first one of the next walk
        assert await _walk(client, url, 2, between=publish_more) == [[7, 6], [5, 4], [3, 2], [1]]
        assert await _walk(client, url, 500) == [[8, 7, 6, 5, 4, 3, 2, 1]]
        assert [v["version"] for v in (await client.get(url, params={"before": 3})).json()] == [2, 1]
        assert (await client.get(url, params={"before": 1})).json() == []
        assert len((await client.get(url)).json()) == 8  # the default page holds 50
        for bad in ({"limit": 501}, {"limit": 0}, {"before": 0}, {"before": "x"}):
            assert (await client.get(url, params=bad)).status_code == 422, bad
