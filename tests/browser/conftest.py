"""The whole suite on Apache Kafka and Redis, and the web app driven in Debian's headless Chromium.

Screenshots go to ``STREAMWISE_SCREENSHOT_DIR`` (default ``var/artifacts/screenshots``, git-ignored).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamwise_core.adapters.settings import Topics
from streamwise_devstack.browser import chromium_args, ensure_chromium
from streamwise_devstack.suite import Suite

from ..e2e.conftest import start_suite
from ..e2e.loop_client import API_KEY, wait_for

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' brings playwright")

ROOT = Path(__file__).resolve().parents[2]
ADMIN_PASSWORD = "browser-admin-password"
PASSWORDS = {"admin": ADMIN_PASSWORD, "olivia": "operator-password-1", "victor": "viewer-password-1"}
ROLES = {"admin": "admin", "olivia": "operator", "victor": "viewer"}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def screenshot_dir() -> Path:
    path = Path(os.environ.get("STREAMWISE_SCREENSHOT_DIR", ROOT / "var" / "artifacts" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Stack:
    suite: Suite
    bootstrap: str

    def url(self, name: str) -> str:
        return self.suite.url(name)

    def last_offsets(self) -> dict[str, int]:
        """The offset of the last record of every partition of the events and labels topics that
        holds any, named as the trainer's status names its offsets (``topic:partition``)."""
        topics = Topics.for_app(self.suite.env["STREAMWISE_TOPIC_PREFIX"], "fraud")

        async def read() -> dict[str, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                described = await admin.describe_topics([topics.events, topics.labels])
            finally:
                await admin.close()
            partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
            await consumer.start()
            try:
                ends = await consumer.end_offsets(partitions)
            finally:
                await consumer.stop()
            return {f"{tp.topic}:{tp.partition}": end - 1 for tp, end in ends.items() if end > 0}

        # Playwright's sync API keeps an event loop in this thread: asyncio runs in another one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, read()).result()

    def trainer_status(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url('trainer')}/v1/status", headers=API_KEY, timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def served(self) -> dict[str, Any] | None:
        r = httpx.get(f"{self.url('predictor')}/v1/model", timeout=10)
        return r.json() if r.status_code == 200 else None

    def send_events(self, events: list[dict[str, Any]]) -> None:
        r = httpx.post(f"{self.url('ingest')}/v1/events", json=events, headers=API_KEY, timeout=30)
        assert r.status_code == 202, r.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_broker: Any, redis_server: Any) -> Iterator[Stack]:
    suite = start_suite(
        tmp_path_factory.mktemp("browser"), kafka_broker.bootstrap, True, redis_server.url,
        ("trainer", "ingest", "predictor", "webapp"),
        extra_env={
            "STREAMWISE_ADMIN_PASSWORD": ADMIN_PASSWORD, "STREAMWISE_FEED_RATE": "20", "STREAMWISE_SYSTEM_POLL_S": "1",
            "STREAMWISE_PUBLISH_EVERY_N": "100", "STREAMWISE_POLL_INTERVAL_MS": "200",
        },
    )
    try:
        webapp = suite.url("webapp")
        # The admin comes from the environment once the trainer has migrated the registry.
        wait_for(lambda: httpx.get(f"{webapp}/api/v1/users", headers=API_KEY, timeout=30).status_code == 200, 60,
                 "the accounts tables")
        for user in ("olivia", "victor"):
            r = httpx.post(f"{webapp}/api/v1/users", headers=API_KEY, timeout=10,
                           json={"username": user, "password": PASSWORDS[user], "role": ROLES[user]})
            assert r.status_code == 201, r.text
        yield Stack(suite, kafka_broker.bootstrap)
    finally:
        suite.stop()


@pytest.fixture(scope="module")
def trained(stack: Stack) -> Stack:
    """A few versions published and served, so there is something to predict with and roll back to."""
    from streamwise_devstack.fraud import FraudStream

    stream = FraudStream(seed=11, drift_at=10**9, run_id=f"b{uuid.uuid4().hex[:6]}")
    for _ in range(4):
        before = (stack.served() or {"meta": {"version": 0}})["meta"]["version"]
        stack.send_events([{"id": e.id, "features": e.features, "label": e.label} for e in stream.take(150)])
        wait_for(lambda: (s := stack.served()) and s["meta"]["version"] > before, 60, "a new version served")
    return stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Playwright's sync API runs an event loop in this thread while it is open: it must be
    closed before any other module's test calls ``asyncio.run`` (module scope, not session)."""
    executable = ensure_chromium()
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=chromium_args(), headless=True)
        yield launched
        launched.close()


@dataclass
class Session:
    """A signed-in browser page that remembers every console error and page error."""

    page: Any
    errors: list[str] = field(default_factory=list)
    name: str = ""

    def goto(self, stack: Stack, path: str) -> None:
        self.page.goto(stack.url("webapp") + path)

    def screenshot(self, label: str) -> Path:
        path = screenshot_dir() / f"{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _watch(page: Any, errors: list[str]) -> None:
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))


@pytest.fixture
def sign_in(browser: Any, stack: Stack) -> Iterator[Callable[..., Session]]:
    contexts: list[Any] = []
    sessions: list[Session] = []

    def open_as(user: str | None, viewport: dict[str, int] = DESKTOP) -> Session:
        context = browser.new_context(viewport=viewport, base_url=stack.url("webapp"))
        contexts.append(context)
        page = context.new_page()
        session = Session(page, name=user or "anonymous")
        _watch(page, session.errors)
        sessions.append(session)
        page.goto("/")
        if user is not None:
            page.fill("#username", user)
            page.fill("#password", PASSWORDS[user])
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("nav.pages")
        return session

    yield open_as
    try:
        for session in sessions:
            assert not session.errors, f"{session.name}: {session.errors}"
    finally:
        for context in contexts:
            context.close()
