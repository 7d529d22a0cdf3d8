"""The whole loop on a Redis that speaks only TLS and only to ACL users: the trainer, predictor and
web app each connect as their own user with only its ``redis_access`` rights (the ingest service,
which does not use Redis, gets no credentials at all); events are learned, versions served, the web
app's pages answer, and an operator's pin and rollback reach the predictor."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS
from streamwise_devstack.accounts import ensure_demo_accounts
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.redis_secured import ADMIN, SecuredRedisServer

from .conftest import APP_SPEC, start_suite
from .loop_client import API_KEY, LoopClient, wait_for

pytestmark = pytest.mark.e2e
MODEL = "fraud-lr"


def test_every_service_works_as_its_own_redis_user_over_tls(tmp_path: Path, kafka_broker) -> None:  # type: ignore[no-untyped-def]
    prefix = f"rsec{uuid.uuid4().hex[:8]}"
    with SecuredRedisServer(tmp_path / "redis") as redis:
        for service in SERVICE_OPERATIONS:
            redis.grant(service, service, prefix, "fraud")
        ensure_demo_accounts(f"sqlite:///{tmp_path / 'registry.db'}")
        suite = start_suite(
            # Every service but ingest is given its own user; the shared URL has no credentials.
            tmp_path, kafka_broker.bootstrap, True, redis.url_of(None), ("trainer", "ingest", "predictor", "webapp"),
            app_spec=APP_SPEC, topic_prefix=prefix, service_env={s: redis.env(s) for s in SERVICE_OPERATIONS},
        )
        try:
            client = LoopClient(suite.url("ingest"), suite.url("predictor"))
            stream = FraudStream(seed=17, run_id=prefix)
            served_versions = set()
            for sent in (500, 1000, 1500):
                client.send(stream.take(500), batch=500)
                served_versions.add(client.wait_examples(sent, timeout_s=180)["meta"]["version"])
            assert client.accuracy(FraudStream(seed=18).take(200)) > 0.5
            current = client.served()
            assert current is not None and len(served_versions) >= 2, served_versions

            webapp = httpx.Client(base_url=suite.url("webapp"), timeout=10)
            # The web app reads the champion, the pointer and the blob as its own user.
            assert webapp.get("/readyz").status_code == 200
            wait_for(lambda: (r := webapp.get("/api/v1/models/current")).status_code == 200
                     and r.json()["version"] == current["meta"]["version"], 60, "the web app showing the served version")

            def stored() -> list[int]:
                r = webapp.get(f"/api/v1/models/{MODEL}/versions", headers=API_KEY)
                assert r.status_code == 200, r.text
                return [v["version"] for v in r.json() if v["stored"]]

            wait_for(lambda: set(served_versions) <= set(stored()), 60, "the served versions listed as stored")
            signed_in = webapp.post("/api/v1/session", json={"username": "viewer", "password": "viewer-password"})
            assert signed_in.status_code == 200, signed_in.text
            for page in ("/", "/models"):
                shown = webapp.get(page)
                assert shown.status_code == 200 and 'aria-current="page"' in shown.text, page
                assert f'"version":{current["meta"]["version"]}' in shown.text, f"{page} shows no served version"

            # An operator pins an earlier version and rolls back to it: the predictor follows.
            target = min(served_versions)
            operator = {**API_KEY, "X-Actor": "e2e"}
            pinned = webapp.post(f"/api/v1/models/{MODEL}/versions/{target}/pin", json={"reason": "e2e"}, headers=operator)
            assert pinned.status_code == 200, pinned.text
            rolled = webapp.post(f"/api/v1/models/{MODEL}/rollback", json={"version": target, "reason": "e2e"}, headers=operator)
            assert rolled.status_code == 200, rolled.text
            served = wait_for(lambda: (s := client.served()) and s["meta"]["version"] == target and s, 120, f"v{target} served")
            assert served["generation"] == rolled.json()["generation"]

            # Each connected as its own user, and none was refused anything on the way (a refusal
            # a service retries or works around, such as lost announcements, shows up here).
            admin = redis.admin()
            try:
                users = {f.split("=", 1)[1] for line in admin.execute_command("CLIENT", "LIST").decode().splitlines()
                         for f in line.split() if f.startswith("user=")}
                assert set(SERVICE_OPERATIONS) <= users <= {*SERVICE_OPERATIONS, ADMIN}, users
                refusals = admin.execute_command("ACL", "LOG")
                assert not refusals, [{k: refusal[k] for k in (b"username", b"reason", b"object")} for refusal in refusals]
            finally:
                admin.close()
        finally:
            suite.stop()
