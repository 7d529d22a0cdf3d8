"""Who is asking, and may they: sessions for people, API keys for machines, a role per route.

- A person signs in with a password and gets a session cookie (HttpOnly, SameSite=Strict,
  Secure outside development). A write with that cookie also needs the session's CSRF token
  in ``X-CSRF-Token`` and, when the browser sends ``Origin``, this host as its origin.
- A machine sends ``X-API-Key``: one of ``STREAMWISE_API_KEYS`` (role ``machine_role``, admin
  by default) or a key an admin created (its own role). ``X-Actor`` may name who it acts for.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader

from streamwise_core.adapters.http import API_KEY_HEADER, api_key_matches

from .accounts import Accounts, Role, csrf_token
from .views import Problem

SESSION_COOKIE = "streamwise_session"
CSRF_HEADER = "X-CSRF-Token"
ACTOR_HEADER = "X-Actor"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ACTOR_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))

api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="For machines.")
session_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="For people: sign in first.")


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    name: str
    """The username, ``key:<name>`` for a created key, ``api-key:<fingerprint>`` for a configured one."""
    role: Role
    via: Literal["session", "api_key"]
    csrf: str | None = None
    """The session's anti-forgery token (sessions only)."""
    on_behalf_of: str | None = None
    """``X-Actor`` of a machine request."""

    @property
    def actor(self) -> str:
        """The name the audit log records."""
        return self.on_behalf_of or self.name


def key_fingerprint(key: str) -> str:
    return "api-key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class LoginThrottle:
    """At most ``attempts`` failed sign-ins per user name in ``window_s``; then 429 until it passes."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._attempts = attempts
        self._window_s = window_s
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, username: str) -> float:
        """Seconds to wait before trying again (0: go ahead)."""
        now = self._clock()
        recent = [t for t in self._failures.get(username, []) if now - t < self._window_s]
        if recent:
            self._failures[username] = recent
        else:
            self._failures.pop(username, None)
        return 0.0 if len(recent) < self._attempts else self._window_s - (now - recent[0])

    def failed(self, username: str) -> None:
        self._failures.setdefault(username, []).append(self._clock())
        if len(self._failures) > 10_000:  # bounded memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, username: str) -> None:
        self._failures.pop(username, None)


class Authenticator:
    """Resolves a request's principal from its API key or session cookie."""

    def __init__(self, accounts: Accounts, machine_keys: list[str], machine_role: Role) -> None:
        self.accounts = accounts
        self._machine_keys = machine_keys
        self._machine_role = machine_role
        self.throttle = LoginThrottle()

    async def principal(self, request: Request, api_key: str | None, session: str | None) -> Principal | None:
        if api_key:
            return await self._machine(request, api_key)
        if session:
            user = await asyncio.to_thread(self.accounts.session_user, session)
            if user is not None:
                return Principal(user.username, user.role, "session", csrf=csrf_token(session))
        return None

    async def _machine(self, request: Request, key: str) -> Principal | None:
        actor = request.headers.get(ACTOR_HEADER)
        if actor is not None and not (0 < len(actor) <= 128 and set(actor) <= _ACTOR_CHARS):
            raise HTTPException(status_code=422, detail=f"{ACTOR_HEADER}: 1 to 128 printable ASCII characters")
        if api_key_matches(self._machine_keys, key):
            return Principal(key_fingerprint(key), self._machine_role, "api_key", on_behalf_of=actor)
        found = await asyncio.to_thread(self.accounts.api_key, key)
        if found is None:
            return None
        return Principal(f"key:{found.name}", found.role, "api_key", on_behalf_of=actor)


def same_origin(request: Request) -> bool:
    """No ``Origin`` (not a cross-site browser request) or the one of this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return bool(origin != "null" and urlsplit(origin).netloc == request.headers.get("host"))


def check_csrf(request: Request, principal: Principal) -> None:
    """A cookie-authenticated write must come from our own page: its origin and its token."""
    if principal.via != "session" or request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    given = request.headers.get(CSRF_HEADER, "")
    if not (principal.csrf and hmac.compare_digest(given.encode(), principal.csrf.encode())):
        raise HTTPException(status_code=403, detail=f"missing or invalid {CSRF_HEADER}")


def authenticator_of(request: Request) -> Authenticator:
    services = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(status_code=503, detail="starting up")
    auth: Authenticator = services.auth
    return auth


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the principal if it holds ``role`` (401 if unknown, 403 if it may not)."""

    async def dependency(
        request: Request,
        api_key: Annotated[str | None, Security(api_key_scheme)] = None,
        session: Annotated[str | None, Security(session_scheme)] = None,
    ) -> Principal:
        principal = await authenticator_of(request).principal(request, api_key, session)
        if principal is None:
            raise HTTPException(
                status_code=401, detail=f"sign in, or send a valid {API_KEY_HEADER}",
                headers={"WWW-Authenticate": 'Cookie realm="streamwise"'},
            )
        if not principal.role.allows(role):
            raise HTTPException(status_code=403, detail=f"needs the {role.value} role; you are {principal.role.value}")
        check_csrf(request, principal)
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


require_viewer = require(Role.VIEWER)
require_operator = require(Role.OPERATOR)
require_admin = require(Role.ADMIN)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Not signed in and no valid `X-API-Key`."},
    403: {"model": Problem, "description": "The role does not allow this, or a cookie-authenticated write "
          "without its CSRF token or from another origin."},
}
