"""The whole loop with the registry on a PostgreSQL that speaks only TLS and only to password roles:
the owner migrates and grants (as the web app's init container would), then trainer, ingest,
predictor and web app each run with their own ``STREAMWISE_DATABASE_URL`` (their own role,
``sslmode=verify-full``). Events are learned, versions served and recorded in the registry by the
trainer's role and read, pinned and audited through the web app's role; ingest and the predictor,
whose roles may not even connect, never try."""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import httpx
import pytest

from streamwise_core.adapters.registry import migrate
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.postgres_secured import SecuredPostgresServer

from .conftest import APP_SPEC, start_suite
from .loop_client import API_KEY, LoopClient, wait_for

pytestmark = pytest.mark.e2e

SERVICES = ("trainer", "ingest", "predictor", "webapp")


def test_every_service_uses_the_registry_as_its_own_role_over_tls(tmp_path: Path, kafka_broker, redis_server) -> None:  # type: ignore[no-untyped-def]
    run = f"pg{uuid.uuid4().hex[:8]}"
    admin_password = secrets.token_urlsafe(16)
    with SecuredPostgresServer(tmp_path / "pg") as pg:
        migrate(pg.owner_url, roles=pg.roles)
        service_env = {s: pg.env(s) for s in SERVICES}
        service_env["webapp"]["STREAMWISE_ADMIN_PASSWORD"] = admin_password  # created through the web app's role
        suite = start_suite(tmp_path, kafka_broker.bootstrap, True, redis_server.url, SERVICES,
                            app_spec=APP_SPEC, topic_prefix=run, service_env=service_env)
        try:
            client = LoopClient(suite.url("ingest"), suite.url("predictor"))
            events = FraudStream(seed=23, run_id=run).take(1_500)
            client.send(events, batch=500)
            served = client.wait_examples(len(events), timeout_s=180)
            assert served["meta"]["examples_seen"] == len(events)
            assert client.accuracy(FraudStream(seed=24).take(200)) > 0.5
            version = served["meta"]["version"]

            webapp = httpx.Client(base_url=suite.url("webapp"), headers=API_KEY, timeout=30)
            # The trainer's role recorded the versions; the web app's role reads them.
            rows = wait_for(
                lambda: (r := webapp.get("/api/v1/models/fraud-lr/versions")).status_code == 200
                and any(v["version"] == version and v["current"] for v in r.json()) and r.json(),
                120, f"v{version} recorded and read through the web app")
            assert [v["version"] for v in rows] == sorted((v["version"] for v in rows), reverse=True)
            assert rows[0]["examples_seen"] <= len(events) and rows[-1]["version"] >= 1
            # The trainer's role seeded the roster; the web app's role reads it.
            models = webapp.get("/api/v1/models")
            assert models.status_code == 200, models.text
            assert "fraud-lr" in models.text
            # An operator's action: the web app's role writes the audit log and reads it back.
            pinned = webapp.post(f"/api/v1/models/fraud-lr/versions/{version}/pin", json={"reason": "keep it"})
            assert pinned.status_code == 200, pinned.text
            audit = webapp.get("/api/v1/audit", params={"action": "pin"})
            assert audit.status_code == 200, audit.text
            assert [(i["action"], i["version_to"]) for i in audit.json()["items"]] == [("pin", version)]
            # People: the admin bootstrapped from STREAMWISE_ADMIN_PASSWORD signs in (a session row).
            people = httpx.Client(base_url=suite.url("webapp"), timeout=30)
            signed_in = wait_for(
                lambda: (r := people.post("/api/v1/session", json={"username": "admin", "password": admin_password}))
                .status_code == 200 and r, 60, "the admin's sign-in")
            assert signed_in.json()["name"] == "admin"
            assert people.get("/api/v1/me").json()["via"] == "session"
        finally:
            suite.stop()
        log = pg.log_path.read_text(errors="replace")

    authorized = set(re.findall(r"connection authorized: user=(\S+) database=\S+ .*SSL enabled", log))
    assert authorized >= {pg.roles["trainer"], pg.roles["webapp"]}, authorized
    assert not {pg.roles["ingest"], pg.roles["predictor"]} & set(re.findall(r"user=(\S+)", log)), \
        "ingest and the predictor have no registry work: they never connect"
    assert "no pg_hba.conf entry" not in log and "permission denied" not in log
