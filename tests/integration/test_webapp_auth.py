"""Sign-in, roles, CSRF and the application endpoints' refusals, on real Redis and SQLite."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from streamwise_webapp.accounts import Accounts, Role

from .test_webapp import API_KEY, Backends, backends, client_for  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
PASSWORD = "a-long-password-1"


async def _people(backends: Backends) -> None:  # noqa: F811
    accounts = Accounts.from_url(backends.settings.database_url)
    try:
        for name, role in (("vic", Role.VIEWER), ("ops", Role.OPERATOR), ("ada", Role.ADMIN)):
            await asyncio.to_thread(accounts.ensure_user, name, PASSWORD, role)
    finally:
        accounts.close()


async def _sign_in(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await client.post("/api/v1/session", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


async def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_it(backends: Backends) -> None:  # noqa: F811
    await _people(backends)
    async with client_for(backends.settings) as client:
        assert (await client.get("/api/v1/me")).status_code == 401
        r = await client.post("/api/v1/session", json={"username": "vic", "password": "wrong-password"})
        assert r.status_code == 401
        r = await client.post("/api/v1/session", json={"username": "vic", "password": PASSWORD})
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # development; production sets it
        me = (await client.get("/api/v1/me")).json()
        assert (me["name"], me["role"], me["via"], me["can"]) == ("vic", "viewer", "session",
                                                                  {"read": True, "operate": False, "administer": False})
        csrf = {"X-CSRF-Token": me["csrf_token"]}
        assert (await client.delete("/api/v1/session", headers={"origin": "http://evil.example", **csrf})).status_code == 403
        assert (await client.delete("/api/v1/session")).status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401


async def test_cross_site_sign_in_and_password_spraying_are_refused(backends: Backends) -> None:  # noqa: F811
    await _people(backends)
    async with client_for(backends.settings) as client:
        r = await client.post("/api/v1/session", json={"username": "vic", "password": PASSWORD},
                              headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        for _ in range(5):
            assert (await client.post("/api/v1/session", json={"username": "ops", "password": "nope-nope"})).status_code == 401
        r = await client.post("/api/v1/session", json={"username": "ops", "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


async def test_every_write_checks_the_role(backends: Backends) -> None:  # noqa: F811
    await backends.publish(1)
    await backends.publish(2)
    await _people(backends)
    model = backends.settings.spec.model.name
    move = {"version": 1, "reason": "test"}
    async with client_for(backends.settings) as client:
        csrf = await _sign_in(client, "vic")
        assert (await client.get("/api/v1/models")).status_code == 200  # a viewer reads
        for method, path, body in (
            ("POST", f"/api/v1/models/{model}/rollback", move), ("POST", "/api/v1/feedback", {"id": "e1", "label": True}),
            ("GET", "/api/v1/users", None), ("POST", "/api/v1/api-keys", {"name": "k", "role": "viewer"}),
        ):
            r = await client.request(method, path, json=body, headers=csrf)
            assert r.status_code == 403, (path, r.text)
        assert await backends.store.current_version(model) == 2

    async with client_for(backends.settings) as client:
        csrf = await _sign_in(client, "ops")
        # without its CSRF token, the cookie alone cannot write
        assert (await client.post(f"/api/v1/models/{model}/rollback", json=move)).status_code == 403
        r = await client.post(f"/api/v1/models/{model}/rollback", json=move, headers=csrf)
        assert r.status_code == 200 and r.json()["actor"] == "ops"
        assert (await client.get("/api/v1/users", headers=csrf)).status_code == 403


async def test_admins_manage_people_and_keys(backends: Backends) -> None:  # noqa: F811
    await _people(backends)
    async with client_for(backends.settings) as client:
        csrf = await _sign_in(client, "ada")
        r = await client.post("/api/v1/users", json={"username": "newbie", "password": PASSWORD, "role": "viewer"}, headers=csrf)
        assert r.status_code == 201 and r.json()["role"] == "viewer"
        assert (await client.post("/api/v1/users", json={"username": "newbie", "password": PASSWORD, "role": "viewer"},
                                  headers=csrf)).status_code == 409
        assert (await client.post("/api/v1/users", json={"username": "Bad Name", "password": PASSWORD, "role": "viewer"},
                                  headers=csrf)).status_code == 422
        r = await client.patch("/api/v1/users/newbie", json={"role": "operator"}, headers=csrf)
        assert r.json()["role"] == "operator"
        created = (await client.post("/api/v1/api-keys", json={"name": "bot", "role": "viewer"}, headers=csrf)).json()
        key = created["key"]
        assert key.startswith("swk_") and created["role"] == "viewer"
        assert "key" not in (await client.get("/api/v1/api-keys")).json()[0]
        audit = (await client.get("/api/v1/audit")).json()
        assert [(i["action"], i["actor"]) for i in audit["items"]] == [
            ("api_key_added", "ada"), ("user_changed", "ada"), ("user_added", "ada")]

    async with client_for(backends.settings) as machine:
        bot = {"X-API-Key": key}
        assert (await machine.get("/api/v1/me", headers=bot)).json()["name"] == "key:bot"
        assert (await machine.post("/api/v1/feedback", json={"id": "e", "label": True}, headers=bot)).status_code == 403
    async with client_for(backends.settings) as client:
        csrf = await _sign_in(client, "ada")
        assert (await client.delete("/api/v1/api-keys/bot", headers=csrf)).status_code == 204
        assert (await client.get("/api/v1/me", headers={"X-API-Key": key})).status_code == 401


async def test_application_endpoints_refuse_bad_input_clearly(backends: Backends) -> None:  # noqa: F811
    async with client_for(backends.settings, API_KEY) as client:
        info = (await client.get("/api/v1/app")).json()
        assert info["task"] == "binary" and info["classes"] == [False, True]
        assert {f["name"] for f in info["features"]} >= {"amount", "merchant"}
        r = await client.post("/api/v1/feedback", json={"id": "e1", "label": "maybe"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "label"]
        assert (await client.post("/api/v1/feedback", json={"id": "bad id!", "label": True})).status_code == 422
        r = await client.post("/api/v1/predict", json={"features": {"amount": "lots", "colour": 1}})
        assert r.status_code == 422
        assert {tuple(e["loc"]) for e in r.json()["detail"]} >= {("body", "features", "amount"), ("body", "features", "colour")}
        r = await client.post("/api/v1/predict", content=b"\xff\xfe", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert (await client.get("/api/v1/live", params={"channels": "state,nope"})).status_code == 422
        assert (await client.get("/api/v1/dead-letters", params={"limit": 0})).status_code == 422
        assert (await client.get("/api/v1/feed")).json() == []
