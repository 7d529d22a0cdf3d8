"""People's accounts, their sessions and machines' API keys, in the registry database (migration
0003_accounts).

Secrets are never stored: passwords as scrypt hashes (salt and cost inside the string), session
tokens and API keys as SHA-256 digests. Those two are 256-bit random values, so a fast digest is
enough and lets a request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Boolean, CursorResult, DateTime, Engine, ForeignKey, Integer, String, delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from streamwise_core.adapters.registry.repository import make_engine
from streamwise_core.contracts.errors import BackendUnavailable, StreamwiseError

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"
API_KEY_PREFIX = "swk_"
MIN_PASSWORD = 10
# scrypt at 16 MiB of memory: about 50 ms per check, the cost OWASP lists for scrypt.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


class Role(StrEnum):
    """What a person or machine may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class AccountError(StreamwiseError):
    """A request about accounts that cannot be done; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- secrets, no I/O


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): everything needed to check it later."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``, compared in constant time; malformed means no."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


_DUMMY_HASH = hash_password("streamwise-no-such-user", salt=b"\0" * 16)
"""Checked when the user does not exist, so the answer takes as long either way."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The anti-forgery token of a session: derived from the secret cookie, never stored."""
    return hmac.new(session_token.encode(), b"streamwise-csrf", hashlib.sha256).hexdigest()


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "a password has at most 1024 characters"
    return None


# --------------------------------------------------------------------------- tables


class AccountsBase(DeclarativeBase):
    """Separate from the registry's tables; the schema comes from Alembic all the same."""


class UserRow(AccountsBase):
    __tablename__ = "accounts_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SessionRow(AccountsBase):
    __tablename__ = "accounts_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts_users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(AccountsBase):
    __tablename__ = "accounts_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --------------------------------------------------------------------------- what callers get


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: Role
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _user(row: UserRow) -> User:
    return User(row.username, Role(row.role), row.disabled, _utc(row.created_at) or row.created_at)


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        row.name, Role(row.role), row.created_by, _utc(row.created_at) or row.created_at,
        _utc(row.last_used_at), row.revoked_at is not None,
    )


# --------------------------------------------------------------------------- repository


class Accounts:
    """Synchronous repository; async callers run it in a worker thread."""

    LAST_USED_EVERY = timedelta(minutes=1)
    """An API key's ``last_used_at`` is written at most this often, not on every request."""

    def __init__(self, engine: Engine, clock: type[datetime] = datetime) -> None:
        self._engine = engine
        self._clock = clock

    @classmethod
    def from_url(cls, url: str) -> Accounts:
        return cls(make_engine(url))

    def close(self) -> None:
        self._engine.dispose()

    def _now(self) -> datetime:
        return self._clock.now(UTC)

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    # -- users

    def create_user(self, username: str, password: str, role: Role) -> User:
        problem = password_problem(password)
        if problem:
            raise AccountError(422, problem)
        now = self._now()
        row = UserRow(username=username, password_hash=hash_password(password), role=role.value, disabled=False,
                      created_at=now, updated_at=now)
        try:
            with _guard(), self._session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise AccountError(409, f"user {username!r} exists") from None
        return _user(row)

    def ensure_user(self, username: str, password: str, role: Role) -> bool:
        """Create the user unless one of that name exists (bootstrap); True if created."""
        try:
            self.create_user(username, password, role)
        except AccountError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def users(self) -> list[User]:
        with _guard(), self._session() as session:
            return [_user(r) for r in session.scalars(select(UserRow).order_by(UserRow.username))]

    def user(self, username: str) -> User | None:
        with _guard(), self._session() as session:
            row = session.scalar(select(UserRow).where(UserRow.username == username))
            return _user(row) if row else None

    def update_user(
        self, username: str, *, role: Role | None = None, disabled: bool | None = None, password: str | None = None,
    ) -> User:
        """Change what is given; disabling a user or changing the password ends their sessions."""
        if password is not None and (problem := password_problem(password)):
            raise AccountError(422, problem)
        with _guard(), self._session() as session, session.begin():
            row = session.scalar(select(UserRow).where(UserRow.username == username))
            if row is None:
                raise AccountError(404, f"no user {username!r}")
            if role is not None:
                row.role = role.value
            if disabled is not None:
                row.disabled = disabled
            if password is not None:
                row.password_hash = hash_password(password)
            row.updated_at = self._now()
            if disabled or password is not None:
                session.execute(delete(SessionRow).where(SessionRow.user_id == row.id))
            return _user(row)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches and the account is enabled."""
        with _guard(), self._session() as session:
            row = session.scalar(select(UserRow).where(UserRow.username == username))
        if row is None:
            check_password(password, _DUMMY_HASH)
            return None
        if not check_password(password, row.password_hash) or row.disabled:
            return None
        return _user(row)

    # -- sessions

    def start_session(self, username: str, ttl: timedelta) -> str:
        """A new session token (returned once, stored as a digest)."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        with _guard(), self._session() as session, session.begin():
            user_id = session.scalar(select(UserRow.id).where(UserRow.username == username))
            if user_id is None:
                raise AccountError(404, f"no user {username!r}")
            # Expired sessions are dropped here: sign-ins are rare enough to carry the sweep.
            session.execute(delete(SessionRow).where(SessionRow.expires_at < now))
            session.add(SessionRow(token_sha256=token_digest(token), user_id=user_id, created_at=now,
                                   expires_at=now + ttl))
        return token

    def session_user(self, token: str) -> User | None:
        """The enabled user of an unexpired session, else None."""
        now = self._now()
        stmt = (
            select(UserRow, SessionRow.expires_at)
            .join(SessionRow, SessionRow.user_id == UserRow.id)
            .where(SessionRow.token_sha256 == token_digest(token))
        )
        with _guard(), self._session() as session:
            found = session.execute(stmt).first()
        if found is None:
            return None
        row, expires_at = found
        if _utc(expires_at) <= now or row.disabled:  # type: ignore[operator]
            return None
        return _user(row)

    def end_session(self, token: str) -> None:
        with _guard(), self._session() as session, session.begin():
            session.execute(delete(SessionRow).where(SessionRow.token_sha256 == token_digest(token)))

    # -- API keys

    def create_api_key(self, name: str, role: Role, created_by: str) -> str:
        """A new key (returned once, stored as a digest)."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(name=name, key_sha256=token_digest(key), role=role.value, created_by=created_by,
                        created_at=self._now())
        try:
            with _guard(), self._session() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise AccountError(409, f"an API key named {name!r} exists") from None
        return key

    def api_keys(self) -> list[ApiKey]:
        with _guard(), self._session() as session:
            return [_key(r) for r in session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))]

    def revoke_api_key(self, name: str) -> None:
        with _guard(), self._session() as session, session.begin():
            done = cast(CursorResult[Any], session.execute(
                update(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )).rowcount
        if not done:
            raise AccountError(404, f"no active API key named {name!r}")

    def api_key(self, key: str) -> ApiKey | None:
        """The active key matching ``key``, else None."""
        if not key.startswith(API_KEY_PREFIX):
            return None
        now = self._now()
        with _guard(), self._session() as session, session.begin():
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_sha256 == token_digest(key)))
            if row is None or row.revoked_at is not None:
                return None
            last = _utc(row.last_used_at)
            if last is None or now - last > self.LAST_USED_EVERY:
                row.last_used_at = now
            return _key(row)


class _guard:
    """Translate a database that is down or not migrated yet into ``BackendUnavailable``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OperationalError | ProgrammingError):
            raise BackendUnavailable(f"accounts: {getattr(exc, 'orig', exc)}") from exc
