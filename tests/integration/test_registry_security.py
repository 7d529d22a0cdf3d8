"""The registry on a real PostgreSQL that speaks only TLS and only to password roles
(``SecuredPostgresServer``): the owner migrates over ``sslmode=verify-full`` (the libpq options in
the URL's query, through Alembic's config and its ``%``-escaping) and grants each service's role
exactly its ``registry/access.py`` rights; each role does its service's registry work through the
real ``Registry`` and ``Accounts`` methods and nothing else; clients without a password, with a
wrong one, without TLS, with an unknown CA or through the Unix socket are refused."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql

from streamwise_core.adapters.registry import CHALLENGER, CHAMPION, AuditEntry, DriftEntry, Lineage, Registry, RosterEntry, migrate
from streamwise_core.adapters.registry.access import SERVICE_ACCESS, RegistryAccess
from streamwise_core.adapters.registry.grants import GrantsNotExact, grant
from streamwise_core.adapters.registry.repository import MIGRATIONS, MigrationRefused
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_devstack.postgres_secured import OWNER, SecuredPostgresServer
from streamwise_webapp.accounts import Accounts, Role

pytestmark = pytest.mark.integration

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
SUPERUSER = "postgres"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPostgresServer]:
    """One role per service; the owner migrated the registry to head and granted the roles."""
    with SecuredPostgresServer(tmp_path_factory.mktemp("pg-secured")) as s:
        migrate(s.owner_url, roles=s.roles)
        yield s


@pytest.fixture(autouse=True)
def _no_libpq_password_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A refused client must be refused for what its URL says, not helped by PGPASSWORD or ~/.pgpass."""
    for name in ("PGPASSWORD", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def _url(server: SecuredPostgresServer, service: str, **kwargs: object) -> str:
    return server.url_of(server.roles[service], **kwargs)  # type: ignore[arg-type]


def _meta(app: str, version: int, *, model: str = "fraud-lr") -> ModelMeta:
    return ModelMeta(
        app=app, model=model, version=version, task="binary", classes=[False, True], examples_seen=100 * version,
        metrics={"accuracy": 0.5 + version / 100}, offsets={f"streamwise.{app}.events:0": 10 * version},
        blob_sha256=hashlib.sha256(f"blob-{version}".encode()).hexdigest(),
        created_at=datetime(2026, 1, 2, tzinfo=UTC) + timedelta(minutes=version),
    )


def _entry(app: str, name: str, role: str, created_by: str = "spec") -> RosterEntry:
    return RosterEntry(app=app, name=name, role=role, kind="online", spec={"name": name}, start={"from": "earliest"},
                       created_by=created_by, created_at=datetime.now(UTC), reason="test")


def _sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE of the database error behind ``exc`` (through ``__cause__`` and ``.orig``)."""
    seen = 0
    while exc is not None and seen < 10:
        if getattr(exc, "sqlstate", None):
            return exc.sqlstate  # type: ignore[attr-defined, no-any-return]
        exc = getattr(exc, "orig", None) or exc.__cause__
        seen += 1
    return None


def _refused(url: str, statement: str) -> str:
    """Run ``statement`` as the URL's role: it must fail for lack of privilege; returns why."""
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.ProgrammingError) as caught, engine.begin() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert _sqlstate(caught.value) == "42501", f"{statement}: {caught.value}"
    return str(caught.value.orig)


def _scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.exec_driver_sql(query).scalar()
    finally:
        engine.dispose()


def _superuser(server: SecuredPostgresServer, dbname: str = "postgres") -> psycopg.Connection:
    return server._connect(dbname)


# --------------------------------------------------------------------------- the owner


def test_the_owner_migrates_over_verified_tls_and_owns_every_table(server: SecuredPostgresServer) -> None:
    owner = server.owner_url
    assert "sslmode=verify-full" in owner and "%25" in owner, "the URL carries libpq options and an encoded %"
    assert _scalar(owner, "SELECT version_num FROM alembic_version") == HEAD
    assert _scalar(owner, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    owners = _scalar(owner, "SELECT array_agg(DISTINCT tableowner) FROM pg_tables WHERE schemaname = 'public'")
    assert owners == [OWNER]
    # Idempotent: migrating and granting again changes nothing and still checks out.
    migrate(owner, roles=server.roles)
    first, again = grant(owner, server.roles), grant(owner, server.roles)
    assert first == again and any("GRANT" in s for s in first)


def test_every_role_is_on_verified_tls(server: SecuredPostgresServer) -> None:
    for service in ("trainer", "webapp"):
        url = _url(server, service)
        assert _scalar(url, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        assert _scalar(url, "SELECT current_user") == server.roles[service]


# --------------------------------------------------------------------------- each service's own work


def test_the_trainer_role_does_the_trainers_registry_work(server: SecuredPostgresServer) -> None:
    _trainer_work(server)


def test_the_webapp_role_does_the_webapps_registry_and_accounts_work(server: SecuredPostgresServer) -> None:
    _webapp_work(server)


def test_each_right_is_needed_by_its_service(server: SecuredPostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Least privilege: without any one right of its access, a service's work above fails."""
    work = {"trainer": _trainer_work, "webapp": _webapp_work}
    try:
        for service, access in list(SERVICE_ACCESS.items()):
            for table, privileges in access.tables.items():
                for privilege in sorted(privileges):
                    monkeypatch.setitem(SERVICE_ACCESS, service, RegistryAccess({**access.tables, table: privileges - {privilege}}))
                    grant(server.owner_url, server.roles)
                    with pytest.raises(Exception, match="permission denied") as caught:
                        work[service](server)
                    assert _sqlstate(caught.value) == "42501", f"{service} without {privilege} on {table}: {caught.value}"
                    monkeypatch.setitem(SERVICE_ACCESS, service, access)
    finally:
        monkeypatch.undo()
        grant(server.owner_url, server.roles)


def _trainer_work(server: SecuredPostgresServer) -> None:
    """What the trainer does to the registry, as its role."""
    url, app = _url(server, "trainer"), f"t{uuid.uuid4().hex[:8]}"
    migrate(url)  # as the trainer does at start: at head, it only reads alembic_version
    registry = Registry.from_url(url)
    try:
        # the roster seeded from the spec, a drift challenger, an automatic promotion (audit-logged)
        registry.add_model(_entry(app, "fraud-lr", CHAMPION))
        registry.add_model(_entry(app, "fraud-lr-d1", CHALLENGER, created_by="drift"))
        registry.set_champion(app, "fraud-lr-d1")
        assert [(e.name, e.role) for e in registry.roster(app, include_retired=True)] == [
            ("fraud-lr-d1", CHAMPION), ("fraud-lr", CHALLENGER)]
        registry.set_champion(app, "fraud-lr")
        # versions as published (and a retried write), the backfill's read
        for version in range(1, 41):
            assert registry.record_version(_meta(app, version), "k1", lineage=Lineage(spec_sha256="ab" * 32),
                                           status="held_back" if version == 7 else "served")
        assert not registry.record_version(_meta(app, 40), "k1")
        assert [r.version for r in registry.versions(app, "fraud-lr", 1)] == [40]
        audit_id = registry.record_audit(AuditEntry(app=app, actor="trainer:auto", action="champion_changed",
                                                     model="fraud-lr", version_to=3))
        assert audit_id > 0
        drift_id = registry.record_drift(DriftEntry(
            app=app, model="fraud-lr", version=40, examples_seen=4000, detected_at=datetime.now(UTC),
            offsets={"e:0": 400}, detector="adwin", action="challenger"))
        assert drift_id > 0
        # compaction: reads the audit log, updates the kept rows, deletes the others
        deleted = registry.compact_versions(app, "fraud-lr", keep_full=10, keep_sampled=4, keep_held_back=1)
        assert deleted > 0
        kept = {r.version for r in registry.versions(app, "fraud-lr", 100)}
        assert {1, 3, 7} <= kept and set(range(31, 41)) <= kept
        assert sum(r.stands_for for r in registry.versions(app, "fraud-lr", 100)) == 40
    finally:
        registry.close()


def _webapp_work(server: SecuredPostgresServer) -> None:
    """What the web app (and the operators' CLIs) do to the registry, as its role; the trainer's
    role writes the versions first."""
    app = f"w{uuid.uuid4().hex[:8]}"
    trainer = Registry.from_url(_url(server, "trainer"))
    try:
        trainer.add_model(_entry(app, "fraud-lr", CHAMPION))
        for version in range(1, 6):
            trainer.record_version(_meta(app, version), "k1", status="held_back" if version == 5 else "served")
        trainer.record_drift(DriftEntry(app=app, model="fraud-lr", version=4, examples_seen=400,
                                        detected_at=datetime.now(UTC), offsets={}, detector="adwin", action="log"))
    finally:
        trainer.close()

    url = _url(server, "webapp")
    registry = Registry.from_url(url)
    try:
        assert [r.version for r in registry.versions(app, "fraud-lr", 10)] == [5, 4, 3, 2, 1]
        assert registry.version(app, "fraud-lr", 5).status == "held_back"  # type: ignore[union-attr]
        assert len(registry.metric_history(app, "fraud-lr", 3)) == 3
        assert [(m.model, m.versions, m.held_back) for m in registry.models(app)] == [("fraud-lr", 5, 1)]
        assert [d.version for d in registry.drifts(app)] == [4]
        # promote a held-back version; add, crown and retire challengers; all audit-logged
        assert registry.set_status(app, "fraud-lr", 5, "served")
        registry.add_model(_entry(app, "fraud-tree", CHALLENGER, created_by="pat"))
        registry.add_model(_entry(app, "fraud-knn", CHALLENGER, created_by="pat"))
        registry.set_champion(app, "fraud-tree")
        assert registry.retire(app, "fraud-knn", "worse")
        assert registry.roster_entry(app, "fraud-tree").role == CHAMPION  # type: ignore[union-attr]
        registry.record_audit(AuditEntry(app=app, actor="pat", action="promote", model="fraud-lr", version_to=5))
        entries, total = registry.audit(app)
        assert total == 1 and entries[0].actor == "pat"
    finally:
        registry.close()

    accounts = Accounts.from_url(url)
    name = f"u{uuid.uuid4().hex[:8]}"
    try:
        accounts.create_user(name, "first-password-1", Role.OPERATOR)
        assert not accounts.ensure_user(name, "first-password-1", Role.OPERATOR)
        assert accounts.authenticate(name, "first-password-1") is not None
        token = accounts.start_session(name, timedelta(hours=1))
        assert accounts.session_user(token).username == name  # type: ignore[union-attr]
        accounts.update_user(name, password="second-password-2")  # ends the sessions
        assert accounts.session_user(token) is None
        token = accounts.start_session(name, timedelta(hours=1))
        accounts.end_session(token)
        assert name in [u.username for u in accounts.users()]
        key = accounts.create_api_key(f"k{name}", Role.VIEWER, "admin")
        assert accounts.api_key(key).name == f"k{name}"  # type: ignore[union-attr]  # and stamps last_used_at
        accounts.revoke_api_key(f"k{name}")
        assert accounts.api_key(key) is None
    finally:
        accounts.close()


# --------------------------------------------------------------------------- and nothing else


@pytest.mark.parametrize("service", [s for s, a in SERVICE_ACCESS.items() if not a.connects])
def test_a_service_without_registry_work_cannot_even_connect(server: SecuredPostgresServer, service: str) -> None:
    registry = Registry.from_url(_url(server, service))
    try:
        with pytest.raises(BackendUnavailable, match="CONNECT privilege"):
            registry.versions("fraud", "fraud-lr")
    finally:
        registry.close()


def test_the_trainer_role_has_no_ddl_no_accounts_and_cannot_rewrite_the_audit_log(server: SecuredPostgresServer) -> None:
    url = _url(server, "trainer")
    for statement in (
        "DROP TABLE model_versions", "ALTER TABLE model_versions ADD COLUMN x integer", "CREATE TABLE t (x integer)",
        "CREATE TEMPORARY TABLE t (x integer)", "TRUNCATE model_versions", "CREATE INDEX ix ON models (reason)",
        "SELECT * FROM accounts_users", "UPDATE accounts_users SET role = 'admin'", "SELECT * FROM accounts_api_keys",
        "DELETE FROM accounts_sessions", "UPDATE audit_log SET reason = ''", "DELETE FROM audit_log",
        "DELETE FROM models", "DELETE FROM drift_events", "UPDATE alembic_version SET version_num = 'x'",
        "SELECT setval('model_versions_id_seq', 1)",
    ):
        _refused(url, statement)
    accounts = Accounts.from_url(url)
    try:
        with pytest.raises(BackendUnavailable, match="permission denied"):
            accounts.users()
    finally:
        accounts.close()


def test_the_webapp_role_has_no_ddl_and_writes_no_versions(server: SecuredPostgresServer) -> None:
    url, app = _url(server, "webapp"), f"x{uuid.uuid4().hex[:8]}"
    for statement in (
        "DROP TABLE accounts_users", "ALTER TABLE audit_log DROP COLUMN reason", "CREATE TABLE t (x integer)",
        "CREATE TEMPORARY TABLE t (x integer)", "TRUNCATE audit_log", "DELETE FROM model_versions",
        "UPDATE audit_log SET reason = ''", "DELETE FROM audit_log", "DELETE FROM accounts_users",
        "DELETE FROM accounts_api_keys", "DELETE FROM models", "DELETE FROM drift_events",
        "SELECT * FROM alembic_version",
    ):
        _refused(url, statement)
    trainer = Registry.from_url(_url(server, "trainer"))
    registry = Registry.from_url(url)
    try:
        for version in range(1, 31):
            trainer.record_version(_meta(app, version), "k1")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            registry.record_version(_meta(app, 31), "k1")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            registry.compact_versions(app, "fraud-lr", keep_full=5, keep_sampled=2)
        assert len(registry.versions(app, "fraud-lr", 100)) == 30
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            registry.record_drift(DriftEntry(app=app, model="fraud-lr", version=1, examples_seen=1,
                                             detected_at=datetime.now(UTC), offsets={}, detector="adwin", action="log"))
    finally:
        registry.close()
        trainer.close()
    with pytest.raises(MigrationRefused):
        migrate(url)


def _upgrade(url: str, revision: str) -> None:
    """Alembic to ``revision`` as ``migrate`` configures it (the URL's ``%`` escaped)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def test_only_the_owner_migrates_and_a_service_finds_the_schema_at_head(server: SecuredPostgresServer) -> None:
    """A trainer that starts before the owner migrated (an empty database, then one revision
    behind) is refused and changes nothing; once the owner migrated and granted, it starts."""
    name = f"behind_{uuid.uuid4().hex[:8]}"
    with _superuser(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(OWNER)))
    owner, trainer = server.url_of(OWNER, database=name), _url(server, "trainer", database=name)
    roles = {"trainer": server.roles["trainer"]}
    try:
        grant(owner, roles)  # CONNECT, nothing else: there is no table yet
        with pytest.raises(MigrationRefused, match="permission denied for schema public"):
            migrate(trainer)
        assert _scalar(owner, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        _upgrade(owner, "0004_champions")
        grant(owner, roles)
        with pytest.raises(MigrationRefused, match="must be owner"):
            migrate(trainer)
        assert _scalar(owner, "SELECT version_num FROM alembic_version") == "0004_champions"
        migrate(owner, roles=roles)
        migrate(trainer)
        registry = Registry.from_url(trainer)
        try:
            assert registry.record_version(_meta("a", 1), "k1")
            assert registry.versions("a", "fraud-lr")[0].stands_for == 1  # a column of the newest revision
        finally:
            registry.close()
    finally:
        with _superuser(server) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_grant_that_cannot_be_exact_is_refused_and_rolled_back(server: SecuredPostgresServer) -> None:
    """A role holding more than its service needs through what the owner cannot revoke (a
    membership in another service's role, an attribute) fails the grant; so do a missing role and
    the owner."""
    trainer, webapp = server.roles["trainer"], server.roles["webapp"]
    with _superuser(server, server.database) as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(webapp), sql.Identifier(trainer)))
    try:
        with pytest.raises(GrantsNotExact) as caught:
            grant(server.owner_url, server.roles)
        assert f"{trainer} (trainer) may SELECT on table accounts_users, which trainer does not need" in caught.value.problems
        with pytest.raises(GrantsNotExact, match="does not exist"):
            grant(server.owner_url, {"trainer": "streamwise_nobody"})
        with pytest.raises(GrantsNotExact, match="the owner runs no service"):
            grant(server.owner_url, {"webapp": OWNER})
        with _superuser(server, server.database) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(webapp)))
        with pytest.raises(GrantsNotExact, match=f"{webapp} \\(webapp\\) may create roles"):
            grant(server.owner_url, server.roles)
    finally:
        with _superuser(server, server.database) as conn:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(webapp), sql.Identifier(trainer)))
            conn.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(webapp)))
    grant(server.owner_url, server.roles)
    _refused(_url(server, "trainer"), "SELECT * FROM accounts_users")


# --------------------------------------------------------------------------- refused clients


def test_clients_without_a_password_with_a_wrong_one_or_without_tls_are_refused(server: SecuredPostgresServer) -> None:
    cases = {
        "no password": (_url(server, "trainer", password=""), "no password supplied"),
        "a wrong password": (_url(server, "trainer", password="not-the-password"), "password authentication failed"),
        "another role's password": (_url(server, "trainer", password=server.passwords[server.roles["webapp"]]),
                                    "password authentication failed"),
        "no TLS": (_url(server, "trainer", tls=False), "no pg_hba.conf entry"),
        "an unknown CA": (_url(server, "trainer", sslrootcert="system"), "certificate verify failed"),
    }
    for what, (url, why) in cases.items():
        registry = Registry.from_url(url)
        try:
            with pytest.raises(BackendUnavailable, match=why):
                registry.versions("fraud", "fraud-lr")
        finally:
            registry.close()
        assert what
    with pytest.raises(sa.exc.OperationalError, match="no pg_hba.conf entry"):
        migrate(server.url_of(OWNER, tls=False))


def test_the_unix_socket_refuses_even_the_superuser(server: SecuredPostgresServer) -> None:
    assert server.pgdata is not None
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry"):
        psycopg.connect(host=str(server.pgdata), port=server.port, user=SUPERUSER, dbname="postgres",
                        password=server.passwords[SUPERUSER], connect_timeout=5)


def test_client_certificates_in_the_url_reach_libpq(tmp_path: Path) -> None:
    """``sslcert``/``sslkey`` in the URL's query: a server demanding a client certificate of its CA
    lets the owner migrate and the trainer record; without the certificate, refused."""
    with SecuredPostgresServer(tmp_path / "pg", services=["trainer"], client_certificates=True) as server:
        assert "sslcert=" in server.owner_url
        migrate(server.owner_url, roles=server.roles)
        registry = Registry.from_url(_url(server, "trainer"))
        try:
            assert registry.record_version(_meta("a", 1), "k1")
        finally:
            registry.close()
        registry = Registry.from_url(_url(server, "trainer", client_cert=False))
        try:
            with pytest.raises(BackendUnavailable, match="certificate"):
                registry.versions("a", "fraud-lr")
        finally:
            registry.close()


# --------------------------------------------------------------------------- roles made by `migrate --login`


def test_migrate_login_creates_each_role_with_its_password_and_sets_a_changed_one(
    server: SecuredPostgresServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compose's `migrate`: the owner creates the services' roles (LOGIN only) with passwords read
    from the environment, then migrates and grants them; run again with another password, the role
    keeps its rights and only the new password opens it."""
    from typer.testing import CliRunner

    from streamwise_devstack.registry_cli import registry as registry_cli

    suffix = uuid.uuid4().hex[:6]
    roles = {"trainer": f"compose_trainer_{suffix}", "webapp": f"compose_webapp_{suffix}"}
    with _superuser(server) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(OWNER)))
    try:
        runner = CliRunner()
        args = ["migrate", "--database-url", server.owner_url, "--grant",
                *(a for s, r in roles.items() for a in ("--role", f"{s}={r}")),
                "--login", "trainer=TRAINER_PW", "--login", "webapp=WEBAPP_PW"]
        first = {"TRAINER_PW": "first-" + suffix + "'%@:/ ~", "WEBAPP_PW": "web-" + suffix + "\\'x"}
        result = runner.invoke(registry_cli, args, env=first)
        assert result.exit_code == 0, result.output
        assert "created" in result.output
        urls = {s: _role_url(server, roles[s], first[v]) for s, v in (("trainer", "TRAINER_PW"), ("webapp", "WEBAPP_PW"))}
        assert _scalar(urls["trainer"], "SELECT has_table_privilege('model_versions', 'INSERT')") is True
        assert _scalar(urls["webapp"], "SELECT has_table_privilege('model_versions', 'INSERT')") is False
        attributes = _scalar(server.owner_url, "SELECT bool_or(rolsuper OR rolcreaterole OR rolcreatedb) FROM pg_roles"
                             f" WHERE rolname IN ('{roles['trainer']}', '{roles['webapp']}')")
        assert attributes is False, "LOGIN and nothing more"

        second = {**first, "TRAINER_PW": "second-" + suffix}
        result = runner.invoke(registry_cli, args, env=second)
        assert result.exit_code == 0, result.output
        assert "passwords set" in result.output
        assert _scalar(_role_url(server, roles["trainer"], second["TRAINER_PW"]), "SELECT current_user") == roles["trainer"]
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            _scalar(urls["trainer"], "SELECT 1")

        missing = runner.invoke(registry_cli, args, env={"TRAINER_PW": "x", "WEBAPP_PW": ""})
        assert missing.exit_code != 0 and "WEBAPP_PW" in missing.output
    finally:
        with _superuser(server) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOCREATEROLE").format(sql.Identifier(OWNER)))


def _role_url(server: SecuredPostgresServer, role: str, password: str) -> str:
    server.passwords[role] = password
    try:
        return server.url_of(role)
    finally:
        del server.passwords[role]
