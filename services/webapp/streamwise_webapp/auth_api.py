"""Sign-in, sign-out, who am I; people and API keys (admins only)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from streamwise_core.adapters.registry import AuditEntry

from .accounts import USERNAME_PATTERN, AccountError, ApiKey, Role, User
from .auth import (
    AUTH_RESPONSES,
    SESSION_COOKIE,
    Principal,
    authenticator_of,
    require_admin,
    require_viewer,
    same_origin,
    session_scheme,
)
from .deps import ServicesDep
from .views import Problem, as_utc

router = APIRouter(prefix="/api/v1", tags=["accounts"])
Admin = Annotated[Principal, Depends(require_admin)]
Viewer = Annotated[Principal, Depends(require_viewer)]
RoleName = Literal["viewer", "operator", "admin"]
KEY_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    name: str
    role: RoleName
    via: Literal["session", "api_key"]
    csrf_token: str | None = Field(description="Send it as `X-CSRF-Token` with writes made with the session cookie.")
    can: dict[str, bool] = Field(description="What this role may do: `read`, `operate` (feedback, promote, "
                                             "challengers), `administer` (people and keys).")


class UserInfo(BaseModel):
    username: str
    role: RoleName
    disabled: bool
    created_at: datetime


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=10, max_length=1024)
    role: RoleName


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleName | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=1024)


class KeyInfo(BaseModel):
    name: str
    role: RoleName
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=KEY_NAME)
    role: RoleName


class CreatedKey(KeyInfo):
    key: str = Field(description="Shown once: only its digest is stored.")


def _me(principal: Principal) -> Me:
    return Me(
        name=principal.name, role=principal.role.value, via=principal.via, csrf_token=principal.csrf,
        can={"read": True, "operate": principal.role.allows(Role.OPERATOR), "administer": principal.role.allows(Role.ADMIN)},
    )


def _user(u: User) -> UserInfo:
    return UserInfo(username=u.username, role=u.role.value, disabled=u.disabled, created_at=as_utc(u.created_at))


def _key(k: ApiKey) -> KeyInfo:
    return KeyInfo(name=k.name, role=k.role.value, created_by=k.created_by, created_at=as_utc(k.created_at),
                   last_used_at=as_utc(k.last_used_at) if k.last_used_at else None, revoked=k.revoked)


def _account_error(exc: AccountError) -> HTTPException:
    return HTTPException(status_code=exc.status, detail=str(exc))


async def _audit(services: ServicesDep, actor: str, action: str, reason: str, **details: object) -> None:
    entry = AuditEntry(app=services.settings.spec.name, actor=actor, action=action, reason=reason, details=details)
    await asyncio.to_thread(services.registry.record_audit, entry)


@router.post(
    "/session",
    responses={401: {"model": Problem, "description": "Wrong user name or password."},
               403: {"model": Problem, "description": "Cross-origin sign-in refused."},
               429: {"model": Problem, "description": "Too many failed attempts for this user name."}},
)
async def sign_in(body: SignIn, request: Request, response: Response, services: ServicesDep) -> Me:
    """Sign in with a password: sets the session cookie and returns the CSRF token for writes."""
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    auth = authenticator_of(request)
    wait = auth.throttle.retry_after(body.username)
    if wait > 0:
        raise HTTPException(status_code=429, detail="too many failed sign-ins; try again later",
                            headers={"Retry-After": str(int(wait) + 1)})
    user = await asyncio.to_thread(services.accounts.authenticate, body.username, body.password)
    if user is None:
        auth.throttle.failed(body.username)
        raise HTTPException(status_code=401, detail="wrong user name or password")
    auth.throttle.succeeded(body.username)
    ttl = timedelta(hours=services.settings.session_hours)
    token = await asyncio.to_thread(services.accounts.start_session, user.username, ttl)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(ttl.total_seconds()), path="/", httponly=True, samesite="strict",
        secure=services.settings.secure_cookies,
    )
    principal = await auth.principal(request, None, token)
    assert principal is not None
    return _me(principal)


@router.delete("/session", status_code=204, response_class=Response,
               responses={401: {"model": Problem, "description": "No session cookie: not signed in."},
                          403: {"model": Problem, "description": "Cross-origin sign-out refused."}})
async def sign_out(
    request: Request, services: ServicesDep, session: Annotated[str | None, Depends(session_scheme)] = None,
) -> Response:
    """End this session (the cookie is cleared; the session cannot be used again)."""
    if not same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    if not session:
        raise HTTPException(status_code=401, detail="not signed in")
    await asyncio.to_thread(services.accounts.end_session, session)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=services.settings.secure_cookies)
    return response


@router.get("/me", responses=AUTH_RESPONSES)
async def me(principal: Viewer) -> Me:
    """Who this request is signed in as, its role, and what the role allows."""
    return _me(principal)


@router.get("/users", responses=AUTH_RESPONSES)
async def list_users(_: Admin, services: ServicesDep) -> list[UserInfo]:
    """Every person's account (never a password hash)."""
    return [_user(u) for u in await asyncio.to_thread(services.accounts.users)]


@router.post("/users", status_code=201, responses={**AUTH_RESPONSES, 409: {"model": Problem, "description": "The name is taken."}})
async def create_user(body: NewUser, principal: Admin, services: ServicesDep) -> UserInfo:
    """Add a person with a role."""
    try:
        user = await asyncio.to_thread(services.accounts.create_user, body.username, body.password, Role(body.role))
    except AccountError as exc:
        raise _account_error(exc) from exc
    await _audit(services, principal.actor, "user_added", "", username=user.username, role=user.role.value)
    return _user(user)


@router.patch("/users/{username}", responses={**AUTH_RESPONSES, 404: {"model": Problem, "description": "No such user."}})
async def change_user(
    username: Annotated[str, Path(pattern=USERNAME_PATTERN)], body: UserChange, principal: Admin, services: ServicesDep,
) -> UserInfo:
    """Change a person's role, disable them, or set a new password (ends their sessions)."""
    try:
        user = await asyncio.to_thread(
            services.accounts.update_user, username, role=Role(body.role) if body.role else None,
            disabled=body.disabled, password=body.password,
        )
    except AccountError as exc:
        raise _account_error(exc) from exc
    changed = {k: v for k, v in body.model_dump(exclude_none=True).items() if k != "password"}
    if body.password is not None:
        changed["password"] = "changed"
    await _audit(services, principal.actor, "user_changed", "", username=username, **changed)
    return _user(user)


@router.get("/api-keys", responses=AUTH_RESPONSES)
async def list_keys(_: Admin, services: ServicesDep) -> list[KeyInfo]:
    """API keys created here (the configured ``STREAMWISE_API_KEYS`` are not listed)."""
    return [_key(k) for k in await asyncio.to_thread(services.accounts.api_keys)]


@router.post("/api-keys", status_code=201, responses={**AUTH_RESPONSES, 409: {"model": Problem, "description": "The name is taken."}})
async def create_key(body: NewKey, principal: Admin, services: ServicesDep) -> CreatedKey:
    """A new key for a machine, with a role; the key is in this answer only."""
    try:
        key = await asyncio.to_thread(services.accounts.create_api_key, body.name, Role(body.role), principal.actor)
    except AccountError as exc:
        raise _account_error(exc) from exc
    [info] = [k for k in await asyncio.to_thread(services.accounts.api_keys) if k.name == body.name]
    await _audit(services, principal.actor, "api_key_added", "", name=body.name, role=body.role)
    return CreatedKey(**_key(info).model_dump(), key=key)


@router.delete("/api-keys/{name}", status_code=204, response_class=Response,
               responses={**AUTH_RESPONSES, 404: {"model": Problem, "description": "No such active key."}})
async def revoke_key(
    name: Annotated[str, Path(pattern=KEY_NAME)], principal: Admin, services: ServicesDep,
) -> Response:
    """Revoke a key: it stops working at once."""
    try:
        await asyncio.to_thread(services.accounts.revoke_api_key, name)
    except AccountError as exc:
        raise _account_error(exc) from exc
    await _audit(services, principal.actor, "api_key_revoked", "", name=name)
    return Response(status_code=204)
