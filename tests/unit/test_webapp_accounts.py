"""Accounts, sessions and API keys on a real SQLite registry migrated by Alembic; roles,
CSRF and sign-in throttling without I/O."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import HTTPException

from streamwise_core.adapters.registry import migrate
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_webapp.accounts import (
    API_KEY_PREFIX,
    AccountError,
    Accounts,
    Role,
    check_password,
    csrf_token,
    hash_password,
    token_digest,
)
from streamwise_webapp.auth import LoginThrottle, Principal, check_csrf, same_origin


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    return url


@pytest.fixture
def accounts(db: str) -> Accounts:
    repo = Accounts.from_url(db)
    yield repo  # type: ignore[misc]
    repo.close()


class TestPasswords:
    def test_a_hash_checks_its_password_only(self) -> None:
        stored = hash_password("correct horse battery")
        assert stored.startswith("scrypt$16384$8$1$")
        assert check_password("correct horse battery", stored)
        assert not check_password("correct horse batterY", stored)

    def test_salted_so_equal_passwords_hash_differently(self) -> None:
        assert hash_password("same password") != hash_password("same password")

    @pytest.mark.parametrize("stored", ["", "plain", "bcrypt$1$2$3$4$5", "scrypt$x$8$1$AA==$AA=="])
    def test_a_malformed_hash_never_matches(self, stored: str) -> None:
        assert not check_password("anything", stored)


class TestRoles:
    def test_each_role_allows_those_below_it(self) -> None:
        assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
        assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


class TestAccounts:
    def test_sign_in_needs_the_right_password_and_an_enabled_account(self, accounts: Accounts) -> None:
        accounts.create_user("olivia", "operator-password", Role.OPERATOR)
        user = accounts.authenticate("olivia", "operator-password")
        assert user is not None and user.role is Role.OPERATOR
        assert accounts.authenticate("olivia", "wrong-password!") is None
        assert accounts.authenticate("nobody", "operator-password") is None
        accounts.update_user("olivia", disabled=True)
        assert accounts.authenticate("olivia", "operator-password") is None

    def test_names_are_unique_and_passwords_long_enough(self, accounts: Accounts) -> None:
        accounts.create_user("victor", "viewer-password", Role.VIEWER)
        with pytest.raises(AccountError) as taken:
            accounts.create_user("victor", "another-password", Role.ADMIN)
        assert taken.value.status == 409
        with pytest.raises(AccountError) as short:
            accounts.create_user("shorty", "short", Role.VIEWER)
        assert short.value.status == 422
        assert not accounts.ensure_user("victor", "whatever-password", Role.ADMIN)
        assert accounts.user("victor").role is Role.VIEWER  # type: ignore[union-attr]

    def test_only_digests_of_secrets_are_stored(self, accounts: Accounts, db: str) -> None:
        accounts.create_user("alice", "alice-password-1", Role.ADMIN)
        token = accounts.start_session("alice", timedelta(hours=1))
        key = accounts.create_api_key("ci", Role.OPERATOR, "alice")
        with sqlite3.connect(db.removeprefix("sqlite:///")) as raw:
            dump = "\n".join(raw.iterdump())
        assert token not in dump and key not in dump and "alice-password-1" not in dump
        assert token_digest(token) in dump and token_digest(key) in dump

    def test_sessions_expire_and_end(self, db: str) -> None:
        now = [datetime(2026, 1, 1, tzinfo=UTC)]

        class Clock(datetime):
            @classmethod
            def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
                return now[0]

        repo = Accounts.from_url(db)
        repo._clock = Clock  # noqa: SLF001 - a test clock
        repo.create_user("pat", "pat-password-1", Role.VIEWER)
        token = repo.start_session("pat", timedelta(hours=2))
        assert repo.session_user(token).username == "pat"  # type: ignore[union-attr]
        assert repo.session_user(token + "x") is None
        now[0] += timedelta(hours=2, seconds=1)
        assert repo.session_user(token) is None
        fresh = repo.start_session("pat", timedelta(hours=2))
        repo.end_session(fresh)
        assert repo.session_user(fresh) is None
        repo.close()

    def test_a_new_password_ends_every_session(self, accounts: Accounts) -> None:
        accounts.create_user("pat", "pat-password-1", Role.VIEWER)
        token = accounts.start_session("pat", timedelta(hours=1))
        accounts.update_user("pat", password="pat-password-2")
        assert accounts.session_user(token) is None
        assert accounts.authenticate("pat", "pat-password-2") is not None

    def test_api_keys_have_a_role_and_can_be_revoked(self, accounts: Accounts) -> None:
        key = accounts.create_api_key("ci", Role.OPERATOR, "alice")
        assert key.startswith(API_KEY_PREFIX)
        found = accounts.api_key(key)
        assert found is not None and (found.name, found.role, found.created_by) == ("ci", Role.OPERATOR, "alice")
        assert accounts.api_key(key[:-1]) is None and accounts.api_key("dev-api-key") is None
        accounts.revoke_api_key("ci")
        assert accounts.api_key(key) is None
        with pytest.raises(AccountError):
            accounts.revoke_api_key("ci")
        assert [k.revoked for k in accounts.api_keys()] == [True]

    def test_a_database_without_the_tables_is_unavailable_not_a_crash(self, tmp_path: Path) -> None:
        repo = Accounts.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
        with pytest.raises(BackendUnavailable):
            repo.authenticate("x", "y")
        repo.close()


def _request(method: str, headers: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(method=method, headers=headers)


class TestCsrf:
    session = Principal("olivia", Role.OPERATOR, "session", csrf=csrf_token("secret-session-token"))

    def test_a_cookie_write_needs_the_sessions_token(self) -> None:
        with pytest.raises(HTTPException) as missing:
            check_csrf(_request("POST", {"host": "app"}), self.session)  # type: ignore[arg-type]
        assert missing.value.status_code == 403
        check_csrf(_request("POST", {"host": "app", "X-CSRF-Token": self.session.csrf}), self.session)  # type: ignore[arg-type, dict-item]

    def test_another_origin_is_refused_even_with_the_token(self) -> None:
        headers = {"host": "app:8000", "origin": "http://evil.example", "X-CSRF-Token": self.session.csrf or ""}
        with pytest.raises(HTTPException):
            check_csrf(_request("POST", headers), self.session)  # type: ignore[arg-type]
        assert same_origin(_request("POST", {"host": "app:8000", "origin": "https://app:8000"}))  # type: ignore[arg-type]
        assert not same_origin(_request("POST", {"host": "app:8000", "origin": "null"}))  # type: ignore[arg-type]

    def test_reads_and_machines_need_no_token(self) -> None:
        check_csrf(_request("GET", {}), self.session)  # type: ignore[arg-type]
        check_csrf(_request("POST", {}), Principal("api-key:x", Role.ADMIN, "api_key"))  # type: ignore[arg-type]

    def test_the_token_is_bound_to_the_session(self) -> None:
        assert csrf_token("a") != csrf_token("b") and csrf_token("a") == csrf_token("a")


class TestThrottle:
    def test_five_failures_lock_the_name_for_the_window(self) -> None:
        now = [100.0]
        throttle = LoginThrottle(attempts=5, window_s=300, clock=lambda: now[0])
        for _ in range(5):
            assert throttle.retry_after("olivia") == 0
            throttle.failed("olivia")
        assert throttle.retry_after("olivia") == pytest.approx(300)
        assert throttle.retry_after("victor") == 0
        now[0] += 301
        assert throttle.retry_after("olivia") == 0

    def test_success_forgets_failures(self) -> None:
        throttle = LoginThrottle(attempts=2)
        throttle.failed("pat")
        throttle.succeeded("pat")
        throttle.failed("pat")
        assert throttle.retry_after("pat") == 0
