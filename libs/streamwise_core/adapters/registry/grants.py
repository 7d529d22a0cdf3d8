"""Give each service's PostgreSQL role exactly its registry rights (``access.py``), as the owner.

``grant(owner_url, roles)`` reads the schema from the catalog, runs ``access.grant_statements``
and then checks what each role can really do (``has_*_privilege``: grants of any role, ``PUBLIC``,
memberships and superuser included) against its service's rights; a difference rolls the grant
back and raises ``GrantsNotExact``. ``migrate(owner_url, roles=...)`` does the same inside the
migration's transaction (``migrations/env.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, create_engine, text

from streamwise_core.contracts.errors import StreamwiseError

from .access import Right, Schema, checked_rights, grant_statements, quote_ident, rights_problems
from .migrations_lock import MIGRATION_LOCK

__all__ = ["GrantsNotExact", "apply_grants", "ensure_login_roles", "grant", "read_schema", "role_problems"]


class GrantsNotExact(StreamwiseError):
    """A role cannot be given exactly its rights (it does not exist, is the owner, has an attribute
    beyond ``LOGIN``, or holds more through something the owner cannot revoke); ``problems`` say what."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("registry grants not applied: " + "; ".join(problems))
        self.problems = problems


def read_schema(connection: Connection, schema: str = "public") -> Schema:
    """The database's name, the schema's tables and the sequences of their serial/identity columns."""
    database = connection.scalar(text("SELECT current_database()"))
    tables = connection.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).all()
    owned = connection.execute(text(
        "SELECT t.relname, s.relname FROM pg_class s"
        " JOIN pg_namespace n ON n.oid = s.relnamespace"
        " JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid"
        "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')"
        " JOIN pg_class t ON t.oid = d.refobjid"
        " WHERE s.relkind = 'S' AND n.nspname = :s ORDER BY 1, 2"
    ), {"s": schema}).all()
    sequences: dict[str, tuple[str, ...]] = {}
    for table, sequence in owned:
        sequences[table] = (*sequences.get(table, ()), sequence)
    return Schema(database=str(database), tables=frozenset(tables), sequences=sequences, name=schema)


ROLE_ATTRIBUTES = {
    "rolsuper": "is a superuser", "rolcreaterole": "may create roles", "rolcreatedb": "may create databases",
    "rolreplication": "may replicate", "rolbypassrls": "bypasses row security",
}
"""Attributes a service's role must not have: each is a right beyond any grant."""


def role_problems(connection: Connection, roles: Mapping[str, str]) -> list[str]:
    """What keeps ``roles`` from being granted: a role that does not exist, is the one connected,
    or has an attribute beyond ``LOGIN`` (``ROLE_ATTRIBUTES``)."""
    me = connection.scalar(text("SELECT current_user"))
    found = {row.rolname: row for row in connection.execute(
        text(f"SELECT rolname, {', '.join(ROLE_ATTRIBUTES)} FROM pg_roles WHERE rolname = ANY(:names)"),
        {"names": list(roles.values())})}
    problems = []
    for service, role in sorted(roles.items()):
        if role not in found:
            problems.append(f"role {role} ({service}) does not exist")
            continue
        if role == me:
            problems.append(f"{role} ({service}) is the role granting: the owner runs no service")
        problems += [f"{role} ({service}) {what}" for column, what in ROLE_ATTRIBUTES.items()
                     if getattr(found[role], column)]
    return problems


def _held(connection: Connection, schema: Schema, role: str) -> dict[Right, bool]:
    """Whether ``role`` can do each of ``checked_rights(schema)``, however it got the right."""
    ns = quote_ident(schema.name)
    functions = {
        "database": "has_database_privilege(:role, :object, :privilege)",
        "schema": "has_schema_privilege(:role, :object, :privilege)",
        "table": "has_table_privilege(:role, :object, :privilege)",
        "sequence": "has_sequence_privilege(:role, :object, :privilege)",
    }
    held = {}
    for right in checked_rights(schema):
        kind, name, privilege = right
        target = f"{ns}.{quote_ident(name)}" if kind in ("table", "sequence") else name
        held[right] = bool(connection.scalar(text(f"SELECT {functions[kind]}"),
                                             {"role": role, "object": target, "privilege": privilege}))
    return held


def apply_grants(connection: Connection, roles: Mapping[str, str], schema: str = "public") -> list[str]:
    """Give each of ``roles`` (service → role) exactly its rights on ``connection``'s database as it is
    now, in the caller's transaction, then check them; returns the statements run.

    Raises ``GrantsNotExact`` (the caller rolls back) when a role is missing, is the connected
    role, has an attribute beyond ``LOGIN``, or holds a right its service does not need that the
    owner cannot take back (another grantor's grant, a membership).
    """
    problems = role_problems(connection, roles)
    if problems:
        raise GrantsNotExact(problems)
    found = read_schema(connection, schema)
    statements = grant_statements(found, roles)
    for statement in statements:
        connection.exec_driver_sql(statement)
    problems = [p for service, role in sorted(roles.items())
                for p in rights_problems(found, service, role, _held(connection, found, role))]
    if problems:
        raise GrantsNotExact(problems)
    return statements


def grant(url: str, roles: Mapping[str, str], schema: str = "public") -> list[str]:
    """Connected to ``url`` as the owner, give each role exactly its rights (``apply_grants``) in
    one transaction, under the migrations' lock (so never halfway through a migration)."""
    if not url.startswith("postgresql"):
        raise ValueError("roles and grants need PostgreSQL (the registry URL is not postgresql+psycopg://...)")
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            return apply_grants(connection, roles, schema)
    finally:
        engine.dispose()


def ensure_login_roles(url: str, passwords: Mapping[str, str]) -> list[str]:
    """Connected to ``url`` as a role that may create roles (compose's owner), create each of
    ``passwords``' roles that does not exist, as ``LOGIN`` and nothing more, and set its password
    (so a changed password takes effect at the next run); returns the roles created.

    Where roles come from elsewhere (a cluster's operator, an external secret store), skip this and
    only ``grant``."""
    if not url.startswith("postgresql"):
        raise ValueError("roles need PostgreSQL (the registry URL is not postgresql+psycopg://...)")
    created = []
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            for role, password in sorted(passwords.items()):
                if not password:
                    raise ValueError(f"no password for role {role}")
                exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
                verb = "ALTER" if exists else "CREATE"
                # DDL takes no bind parameters: format() quotes the name and the literal server-side.
                statement = connection.scalar(text(f"SELECT format('{verb} ROLE %I WITH LOGIN PASSWORD %L', CAST(:r AS text), CAST(:p AS text))"),
                                              {"r": role, "p": password})
                connection.exec_driver_sql(str(statement).replace("%", "%%"))
                if not exists:
                    created.append(role)
    finally:
        engine.dispose()
    return created
