"""Each service's least privilege in the SQL registry (``registry/access.py``) and the SQL that grants
it; the real PostgreSQL side is tests/integration/test_registry_security.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import Config
from typer.testing import CliRunner

from streamwise_core.adapters.registry import migrate
from streamwise_core.adapters.registry.access import (
    ALEMBIC_VERSION,
    DEFAULT_ROLES,
    SERVICE_ACCESS,
    Schema,
    checked_rights,
    expected_rights,
    grant_statements,
    quote_ident,
    rights_problems,
)
from streamwise_devstack.registry_cli import _roles, registry

SEQUENCES = {t: (f"{t}_id_seq",) for t in (
    "model_versions", "audit_log", "models", "drift_events", "accounts_users", "accounts_sessions", "accounts_api_keys")}
HEAD = Schema(database="streamwise", tables=frozenset({*SEQUENCES, ALEMBIC_VERSION}), sequences=SEQUENCES)


def _head_tables(tmp_path: Path) -> set[str]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_access_names_exactly_the_tables_of_the_schema_at_head(tmp_path: Path) -> None:
    """A migration adding a table must say here who may use it (else no service may)."""
    named = {t for access in SERVICE_ACCESS.values() for t in access.tables}
    assert named == _head_tables(tmp_path) == HEAD.tables


def test_only_the_trainer_and_the_webapp_use_the_registry() -> None:
    assert {s for s, a in SERVICE_ACCESS.items() if a.connects} == {"trainer", "webapp"}
    assert DEFAULT_ROLES == {"trainer": "streamwise_trainer", "webapp": "streamwise_webapp"}
    assert not SERVICE_ACCESS["ingest"].tables and not SERVICE_ACCESS["predictor"].tables


def test_who_may_write_what() -> None:
    def may(privilege: str, table: str) -> set[str]:
        return {s for s, a in SERVICE_ACCESS.items() if privilege in a.privileges(table)}

    assert may("INSERT", "model_versions") == may("DELETE", "model_versions") == {"trainer"}
    assert may("UPDATE", "model_versions") == {"trainer", "webapp"}  # compaction; a promoted held-back version
    assert may("UPDATE", "audit_log") == may("DELETE", "audit_log") == set(), "the audit log is append-only"
    assert may("DELETE", "models") == set(), "a retired model stays on the roster"
    for table in ("accounts_users", "accounts_sessions", "accounts_api_keys"):
        assert may("SELECT", table) == {"webapp"}
    assert may("DELETE", "accounts_users") == may("DELETE", "accounts_api_keys") == set()
    assert may("SELECT", ALEMBIC_VERSION) == {"trainer"}, "the trainer's migrate() at start only reads it"
    assert all(not may(p, ALEMBIC_VERSION) for p in ("INSERT", "UPDATE", "DELETE"))


def test_the_trainers_grant_for_the_schema_at_head() -> None:
    assert grant_statements(HEAD, {"trainer": "streamwise_trainer"}) == [
        'REVOKE ALL ON DATABASE "streamwise" FROM PUBLIC',
        'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC',
        'REVOKE ALL ON DATABASE "streamwise" FROM "streamwise_trainer"',
        'REVOKE ALL ON SCHEMA "public" FROM "streamwise_trainer"',
        'REVOKE ALL ON ALL TABLES IN SCHEMA "public" FROM "streamwise_trainer"',
        'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "public" FROM "streamwise_trainer"',
        'GRANT CONNECT ON DATABASE "streamwise" TO "streamwise_trainer"',
        'GRANT USAGE ON SCHEMA "public" TO "streamwise_trainer"',
        'GRANT SELECT ON TABLE "public"."alembic_version" TO "streamwise_trainer"',
        'GRANT SELECT, INSERT ON TABLE "public"."audit_log" TO "streamwise_trainer"',
        'GRANT USAGE ON SEQUENCE "public"."audit_log_id_seq" TO "streamwise_trainer"',
        'GRANT SELECT, INSERT ON TABLE "public"."drift_events" TO "streamwise_trainer"',
        'GRANT USAGE ON SEQUENCE "public"."drift_events_id_seq" TO "streamwise_trainer"',
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."model_versions" TO "streamwise_trainer"',
        'GRANT USAGE ON SEQUENCE "public"."model_versions_id_seq" TO "streamwise_trainer"',
        'GRANT SELECT, INSERT, UPDATE ON TABLE "public"."models" TO "streamwise_trainer"',
        'GRANT USAGE ON SEQUENCE "public"."models_id_seq" TO "streamwise_trainer"',
    ]


def test_sequences_only_where_the_role_inserts() -> None:
    statements = grant_statements(HEAD, {"webapp": "w"})
    sequences = {s.split('"public".')[1].split(" ")[0].strip('"') for s in statements if "SEQUENCE \"public\"" in s}
    assert sequences == {"audit_log_id_seq", "models_id_seq", "accounts_users_id_seq", "accounts_sessions_id_seq",
                         "accounts_api_keys_id_seq"}


def test_a_service_without_registry_work_only_loses_rights() -> None:
    statements = grant_statements(HEAD, {"predictor": "p", "ingest": "i"})
    assert statements[:2] == ['REVOKE ALL ON DATABASE "streamwise" FROM PUBLIC', 'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC']
    assert all(s.startswith("REVOKE") for s in statements) and len(statements) == 2 + 2 * 4


def test_tables_of_a_newer_revision_are_skipped_until_they_exist() -> None:
    older = Schema(database="db", tables=frozenset({"model_versions", ALEMBIC_VERSION}), sequences={"model_versions": ("mv_seq",)},
                   name="registry")
    statements = grant_statements(older, {"webapp": "w"})
    grants = [s for s in statements if s.startswith("GRANT")]
    assert grants == ['GRANT CONNECT ON DATABASE "db" TO "w"', 'GRANT USAGE ON SCHEMA "registry" TO "w"',
                      'GRANT SELECT, UPDATE ON TABLE "registry"."model_versions" TO "w"']
    assert grant_statements(older, {"webapp": "w"}) == statements, "the same schema, the same statements"


def test_identifiers_are_quoted() -> None:
    statements = grant_statements(Schema(database='my"db', tables=frozenset({"models"})), {"trainer": 'we"ird role'})
    assert 'GRANT SELECT, INSERT, UPDATE ON TABLE "public"."models" TO "we""ird role"' in statements
    assert 'REVOKE ALL ON DATABASE "my""db" FROM PUBLIC' in statements
    for bad in ("", "a\0b"):
        with pytest.raises(ValueError, match="identifier"):
            quote_ident(bad)


def test_unknown_services_and_shared_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="no such service: scheduler"):
        grant_statements(HEAD, {"scheduler": "s"})
    with pytest.raises(ValueError, match="one role per service: r for trainer, webapp"):
        grant_statements(HEAD, {"trainer": "r", "webapp": "r"})


def test_held_rights_are_checked_against_the_services() -> None:
    held = {right: right in expected_rights(HEAD, "trainer") for right in checked_rights(HEAD)}
    assert rights_problems(HEAD, "trainer", "t", held) == []
    held[("table", "accounts_users", "SELECT")] = True
    held[("database", "streamwise", "TEMPORARY")] = True
    held[("table", "drift_events", "INSERT")] = False
    assert rights_problems(HEAD, "trainer", "t", held) == [
        "t (trainer) may TEMPORARY on database streamwise, which trainer does not need",
        "t (trainer) may SELECT on table accounts_users, which trainer does not need",
        "t (trainer) lacks INSERT on table drift_events",
    ]
    nothing = {right: False for right in checked_rights(HEAD)}
    assert rights_problems(HEAD, "predictor", "p", nothing) == []
    assert ("sequence", "models_id_seq", "USAGE") in expected_rights(HEAD, "webapp")
    assert ("sequence", "model_versions_id_seq", "USAGE") not in expected_rights(HEAD, "webapp")


def test_libpq_options_in_the_url_reach_the_driver_and_survive_alembics_config() -> None:
    """``sslmode``, ``sslrootcert``… in the query are psycopg's connection parameters; a URL with
    encoded ``%`` (password, paths) comes back from Alembic's config parser as it went in."""
    url = ("postgresql+psycopg://streamwise_trainer:p%25w%40rd@db.example:5432/streamwise"
           "?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.crt&sslcert=%2Fc.crt&sslkey=%2Fc.key")
    engine = sa.create_engine(url)
    try:
        _, params = engine.dialect.create_connect_args(engine.url)
    finally:
        engine.dispose()
    assert params["password"] == "p%w@rd"
    assert {k: params[k] for k in ("sslmode", "sslrootcert", "sslcert", "sslkey")} == {
        "sslmode": "verify-full", "sslrootcert": "/etc/ca dir/ca.crt", "sslcert": "/c.crt", "sslkey": "/c.key"}
    cfg = Config()
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # as migrate() does
    assert cfg.get_main_option("sqlalchemy.url") == url


def test_roles_are_refused_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need PostgreSQL"):
        migrate(f"sqlite:///{tmp_path / 'r.db'}", roles=DEFAULT_ROLES)


def test_the_cli_names_roles_per_service_and_prints_the_rights() -> None:
    assert _roles(None) == DEFAULT_ROLES
    assert _roles(["trainer=t1", "predictor=p1"]) == {"trainer": "t1", "predictor": "p1"}
    result = CliRunner().invoke(registry, ["grant", "--role", "scheduler=x", "--database-url", "postgresql+psycopg://x@127.0.0.1:1/x"])
    assert result.exit_code != 0 and "SERVICE=ROLE" in result.output
    result = CliRunner().invoke(registry, ["rights"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "alembic_version" in result.output and "not even CONNECT" in result.output
