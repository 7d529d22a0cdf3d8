"""The web app against a real redis-server and a SQLite registry."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry, migrate
from streamwise_core.contracts.codec import ModelMeta, pack
from streamwise_core.contracts.signing import Signer
from streamwise_webapp.accounts import Accounts, Role
from streamwise_webapp.app import create_app
from streamwise_webapp.settings import WebappSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "examples" / "fraud" / "streamwise.toml"
KEY_ID, SECRET = "k", b"0123456789abcdef0123"
SIGNER = Signer({KEY_ID: SECRET})
DEADLINE_S = 30.0
"""How long a wait for something that happens in milliseconds may take before the test fails."""


@dataclass
class Backends:
    """The web app's settings plus writers standing in for the trainer."""

    settings: WebappSettings
    store: ModelStore
    registry: Registry

    async def publish(self, version: int, *, accuracy: float = 0.9) -> ModelMeta:
        """Publish a version the way the trainer does: Redis first, then the registry."""
        spec = self.settings.spec
        meta = ModelMeta(
            app=spec.name, model=spec.model.name, version=version, task=spec.task,
            examples_seen=version * 500,
            metrics={"accuracy": accuracy, "accuracy_recent": accuracy + 0.01, "log_loss": 0.3},
        )
        signed = pack({"weights": [version]}, meta, SIGNER)
        await self.store.publish(meta.model, version, signed)
        await asyncio.to_thread(self.registry.record_version, meta, KEY_ID)
        return meta


@pytest.fixture
async def backends(redis_server: Any, tmp_path: Path) -> AsyncIterator[Backends]:
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    await asyncio.to_thread(migrate, database_url)
    settings = WebappSettings(
        app_spec=SPEC,
        redis_url=redis_server.url,
        database_url=database_url,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        signing_keys=f"{KEY_ID}:{SECRET.decode()}",
        poll_interval_ms=200,
    )
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, settings.spec.name)
    registry = Registry.from_url(database_url)
    try:
        yield Backends(settings, store, registry)
    finally:
        await store.close()
        registry.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol as a server would."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    async with asyncio.timeout(DEADLINE_S):
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        async with asyncio.timeout(DEADLINE_S):
            assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
            await task


API_KEY = {"X-API-Key": "dev-api-key"}
"""The configured machine key: an admin by default (``STREAMWISE_MACHINE_ROLE``)."""


@asynccontextmanager
async def client_for(settings: WebappSettings, headers: dict[str, str] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webapp", headers=headers) as client:
            yield client


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port in a thread (streams need a real server)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, name="webapp-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during startup"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "uvicorn did not stop"


async def wait_subscribed(redis_url: str, channel: str) -> None:
    """Until someone (the web app's announcement listener) is subscribed to ``channel``."""
    client = aioredis.from_url(redis_url)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while (await client.pubsub_numsub(channel))[0][1] < 1:
            assert time.monotonic() < deadline, f"nobody subscribed to {channel} after {DEADLINE_S}s"
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


class SseReader:
    """Parses a text/event-stream response into events and counts comment lines."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self.comments = 0

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        event, data = "message", []
        async with asyncio.timeout(DEADLINE_S):
            async for line in self._lines:
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data.append(line.partition(":")[2].removeprefix(" "))
                elif line == "" and data:
                    return event, json.loads("\n".join(data))
        raise AssertionError("stream ended")

    async def next_comment(self) -> None:
        seen = self.comments
        async with asyncio.timeout(DEADLINE_S):
            async for line in self._lines:
                if line.startswith(":") and self.comments == seen:
                    self.comments += 1
                    return
        raise AssertionError("stream ended")


class LocalAssets(HTMLParser):
    """Collects the URLs a page loads by itself (scripts, styles, icons, images)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in {"script", "img"} and values.get("src"):
            self.urls.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.urls.append(str(values["href"]))


async def test_current_is_404_until_a_version_is_published(backends: Backends) -> None:
    async with client_for(backends.settings) as client:
        missing = await client.get("/api/v1/models/current")
        assert missing.status_code == 404
        assert missing.json()["detail"]

        await backends.publish(1, accuracy=0.8)
        await backends.publish(2, accuracy=0.85)
        response = await client.get("/api/v1/models/current")
        assert response.status_code == 200
        body = response.json()
        assert (body["app"], body["model"], body["version"]) == ("fraud", "fraud-lr", 2)
        assert body["examples_seen"] == 1000
        assert body["primary_metric"] == "accuracy"
        assert body["metrics"]["accuracy"] == pytest.approx(0.85)
        assert body["recent_value"] == pytest.approx(0.86)
        assert body["published_at"]


async def test_versions_are_listed_oldest_first(backends: Backends) -> None:
    for version in (1, 2, 3):
        await backends.publish(version, accuracy=0.7 + version / 100)
    async with client_for(backends.settings) as client:
        assert (await client.get("/api/v1/models/versions")).status_code == 401
    async with client_for(backends.settings, API_KEY) as client:
        everything = (await client.get("/api/v1/models/versions")).json()
        assert [v["version"] for v in everything] == [1, 2, 3]
        assert everything[0]["metrics"]["accuracy"] == pytest.approx(0.71)
        assert everything[0]["examples_seen"] == 500
        assert everything[0]["created_at"]
        newest_two = (await client.get("/api/v1/models/versions", params={"limit": 2})).json()
        assert [v["version"] for v in newest_two] == [2, 3]
        assert (await client.get("/api/v1/models/versions", params={"limit": 0})).status_code == 422


async def test_forged_current_version_is_reported_not_served(backends: Backends) -> None:
    await backends.publish(1)
    forged = pack({"evil": True}, ModelMeta(app="fraud", model="fraud-lr", version=2, task="binary",
                                            examples_seen=1), Signer({KEY_ID: b"not-the-real-secret!"}))
    await backends.store.publish("fraud-lr", 2, forged)
    async with client_for(backends.settings) as client:
        response = await client.get("/api/v1/models/current")
        assert response.status_code == 502
        assert "refused" in response.json()["detail"]


async def test_health_and_readiness(backends: Backends, tmp_path: Path) -> None:
    async with client_for(backends.settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

    nowhere = backends.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    async with client_for(nowhere) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503


class InitialState(HTMLParser):
    """Reads the JSON the page embeds for its script."""

    def __init__(self) -> None:
        super().__init__()
        self._inside = False
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = tag == "script" and ("id", "initial-state") in attrs

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.text += data


async def _signed_in(client: httpx.AsyncClient, backends: Backends, role: Role = Role.VIEWER) -> None:
    accounts = Accounts.from_url(backends.settings.database_url)
    try:
        await asyncio.to_thread(accounts.ensure_user, "pat", "pat-password-123", role)
    finally:
        accounts.close()
    r = await client.post("/api/v1/session", json={"username": "pat", "password": "pat-password-123"})
    assert r.status_code == 200, r.text


async def test_page_embeds_the_current_state_and_history(backends: Backends) -> None:
    async with client_for(backends.settings) as client:
        await _signed_in(client, backends)
        parser = InitialState()
        parser.feed((await client.get("/")).text)
        before = json.loads(parser.text)
        assert (before["state"]["status"], before["history"]) == ("waiting", [])

    await backends.publish(1)
    await backends.publish(2)
    async with client_for(backends.settings) as client:
        await _signed_in(client, backends)
        parser = InitialState()
        parser.feed((await client.get("/")).text)
        after = json.loads(parser.text)
        assert after["state"]["current"]["version"] == 2
        assert [p["version"] for p in after["history"]] == [1, 2]


async def test_signed_out_pages_show_the_sign_in_form_and_nothing_else(backends: Backends) -> None:
    await backends.publish(1)
    async with client_for(backends.settings) as client:
        for path in ("/", "/models", "/system", "/audit"):
            page = await client.get(path)
            assert page.status_code == 200
            assert 'id="signin-form"' in page.text and 'aria-label="Pages"' not in page.text
            parser = InitialState()
            parser.feed(page.text)
            assert parser.text == "null"  # no model data before sign-in


async def test_pages_load_only_local_files(backends: Backends) -> None:
    async with client_for(backends.settings) as client:
        await _signed_in(client, backends)
        urls: set[str] = set()
        for path in ("/", "/models", "/system", "/audit"):
            page = await client.get(path)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "fraud" in page.text and 'aria-current="page"' in page.text
            parser = LocalAssets()
            parser.feed(page.text)
            urls.update(parser.urls)
        assert any("chart.umd.min.js" in url for url in urls)
        for url in urls:
            assert url.startswith("/static/"), url
            asset = await client.get(url)
            assert asset.status_code == 200, url

        assert (await client.get("/openapi.json")).status_code == 200


async def test_live_stream_follows_new_versions(backends: Backends) -> None:
    # A poll interval of an hour: the new version can only arrive through pub/sub.
    settings = backends.settings.model_copy(update={"poll_interval_ms": 3_600_000, "keepalive_s": 0.2})
    app = create_app(settings)
    with served(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE_S, headers=API_KEY) as client:
            async with client.stream("GET", "/api/v1/live") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                stream = SseReader(response)

                event, state = await stream.next_event()
                assert (event, state["status"], state["current"]) == ("state", "waiting", None)

                # An announcement sent before the app subscribes is lost (and polling is off).
                await wait_subscribed(settings.redis_url, backends.store.channel)
                await backends.publish(1)
                event, state = await stream.next_event()
                assert (event, state["status"], state["current"]["version"]) == ("state", "current", 1)

                await backends.publish(2, accuracy=0.95)
                _, state = await stream.next_event()
                assert state["current"]["version"] == 2
                assert state["current"]["primary_value"] == pytest.approx(0.95)

                await stream.next_comment()  # keep-alive while nothing changes

            # The client is gone: the server must drop its subscription.
            hub = app.state.services.hub
            async with asyncio.timeout(DEADLINE_S):
                while hub.subscribers:
                    await asyncio.sleep(0.02)


async def test_live_stream_starts_with_the_current_version(backends: Backends) -> None:
    await backends.publish(1)
    await backends.publish(2)
    with served(create_app(backends.settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=DEADLINE_S, headers=API_KEY) as client, client.stream("GET", "/api/v1/live") as response:
            _, state = await SseReader(response).next_event()
            assert state["status"] == "current"
            assert state["current"]["version"] == 2
