"""What each service may do in the SQL registry: the least privilege of its PostgreSQL role.

The one source of the services' registry rights: ``streamwise registry grant`` (and
``migrate(url, roles=...)``, in the migration's own transaction) gives each service's role
exactly these on the current schema, and the tests on a real PostgreSQL (TLS, one role per
service) run each service's registry work as its role. Derived from what the code does:

- **trainer**: records versions (``record_version``, also the backfill from Redis at start),
  compacts them (``compact_versions``: reads the audit log for the versions it names, updates
  the kept rows, deletes the others); seeds and reads the roster (``add_model``, ``roster``,
  ``set_champion``), promotes a challenger that stays ahead and adds drift challengers (both
  audit-logged), records drifts; ``migrate()`` at start reads ``alembic_version`` and finds the
  schema at head (it has no DDL right: the owner migrates).
- **webapp**: reads versions, metrics, the roster, drifts and the audit log; a promotion of a
  held-back version sets its status; adds, retires and crowns challengers; writes the audit log;
  people, sessions and API keys (never deletes a user or a key: it disables and revokes).
  The operators' CLIs (``streamwise models``, ``streamwise users``) do a subset of this.
- **ingest**, **predictor**: never touch the registry, so their roles get nothing, not even
  ``CONNECT`` (a deployment gives them no database URL at all).

An ``INSERT ... RETURNING id`` (how SQLAlchemy learns a new row's id on PostgreSQL) needs
``SELECT`` on the table too, and ``USAGE`` on the id's sequence. The tables belong to the owner
role, which runs the migrations (DDL) and the grants; no service runs as it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE"]
PRIVILEGES: tuple[Privilege, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")

ALEMBIC_VERSION = "alembic_version"
"""Alembic's table of the schema's revision: ``migrate()`` reads it to find the schema at head."""


def _rights(*privileges: Privilege) -> frozenset[Privilege]:
    return frozenset(privileges)


@dataclass(frozen=True)
class RegistryAccess:
    tables: Mapping[str, frozenset[Privilege]] = field(default_factory=dict)
    """Table name → what the service may do to its rows; a table not named: nothing."""

    @property
    def connects(self) -> bool:
        """Whether the service's role may connect to the database at all."""
        return bool(self.tables)

    def privileges(self, table: str) -> tuple[Privilege, ...]:
        """The privileges on ``table``, in SQL's usual order."""
        granted = self.tables.get(table, frozenset())
        return tuple(p for p in PRIVILEGES if p in granted)


SERVICE_ACCESS: dict[str, RegistryAccess] = {
    "ingest": RegistryAccess(),
    "trainer": RegistryAccess({
        "model_versions": _rights("SELECT", "INSERT", "UPDATE", "DELETE"),
        "audit_log": _rights("SELECT", "INSERT"),
        "models": _rights("SELECT", "INSERT", "UPDATE"),
        "drift_events": _rights("SELECT", "INSERT"),
        ALEMBIC_VERSION: _rights("SELECT"),
    }),
    "predictor": RegistryAccess(),
    "webapp": RegistryAccess({
        "model_versions": _rights("SELECT", "UPDATE"),
        "audit_log": _rights("SELECT", "INSERT"),
        "models": _rights("SELECT", "INSERT", "UPDATE"),
        "drift_events": _rights("SELECT"),
        "accounts_users": _rights("SELECT", "INSERT", "UPDATE"),
        "accounts_sessions": _rights("SELECT", "INSERT", "DELETE"),
        "accounts_api_keys": _rights("SELECT", "INSERT", "UPDATE"),
    }),
}

DEFAULT_ROLES: dict[str, str] = {service: f"streamwise_{service}" for service, a in SERVICE_ACCESS.items() if a.connects}
"""The role of each service that uses the registry, unless told otherwise."""


@dataclass(frozen=True)
class Schema:
    """What a grant needs to know of the database: read from its catalog (``grants.read_schema``)."""

    database: str
    tables: frozenset[str]
    sequences: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Table → the sequences of its serial or identity columns."""
    name: str = "public"


Right = tuple[str, str, str]
"""``(kind, object, privilege)``: kind ``database``, ``schema``, ``table`` or ``sequence``."""

TABLE_PRIVILEGES = (*PRIVILEGES, "TRUNCATE", "REFERENCES", "TRIGGER")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")


def expected_rights(schema: Schema, service: str) -> frozenset[Right]:
    """What ``service``'s role may do once granted, among ``checked_rights(schema)``."""
    access = SERVICE_ACCESS[service]
    rights: set[Right] = set()
    if access.connects:
        rights.add(("database", schema.database, "CONNECT"))
    for table in schema.tables:
        for privilege in access.privileges(table):
            rights.add(("table", table, privilege))
            if privilege == "INSERT":
                rights |= {("sequence", seq, "USAGE") for seq in schema.sequences.get(table, ())}
    return frozenset(rights)


def checked_rights(schema: Schema) -> list[Right]:
    """Every right a grant is checked on: the database's, creating in the schema (``USAGE`` of the
    schema is ``PUBLIC``'s by default and harmless without ``CONNECT``), and each table's and
    sequence's. A role must hold exactly its ``expected_rights`` of these, however it got them
    (a grant of another role, ``PUBLIC``, a membership, superuser)."""
    rights: list[Right] = [("database", schema.database, p) for p in ("CONNECT", "CREATE", "TEMPORARY")]
    rights.append(("schema", schema.name, "CREATE"))
    rights += [("table", t, p) for t in sorted(schema.tables) for p in TABLE_PRIVILEGES]
    sequences = sorted({s for seqs in schema.sequences.values() for s in seqs})
    rights += [("sequence", s, p) for s in sequences for p in SEQUENCE_PRIVILEGES]
    return rights


def rights_problems(schema: Schema, service: str, role: str, held: Mapping[Right, bool]) -> list[str]:
    """How the rights ``role`` holds (``held``, for each of ``checked_rights``) differ from its service's."""
    expected = expected_rights(schema, service)
    problems = []
    for right in checked_rights(schema):
        kind, name, privilege = right
        if held[right] and right not in expected:
            problems.append(f"{role} ({service}) may {privilege} on {kind} {name}, which {service} does not need")
        elif not held[right] and right in expected:
            problems.append(f"{role} ({service}) lacks {privilege} on {kind} {name}")
    return problems


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (PostgreSQL's rules: double quotes, doubled inside)."""
    if not name or "\0" in name:
        raise ValueError(f"not a usable identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def grant_statements(schema: Schema, roles: Mapping[str, str]) -> list[str]:
    """The SQL that gives each service's role (``roles``: service → role) exactly its rights on
    the tables ``schema`` has now, run by the owner in one transaction; idempotent.

    ``PUBLIC`` loses ``CONNECT`` and ``TEMPORARY`` on the database and ``CREATE`` in the schema,
    so a role gets in only by its grant; each named role first loses whatever it had on the
    database, the schema, its tables and sequences, then gets its rights. Tables the access
    names but the schema lacks yet (an older revision) are skipped: grant again after migrating.
    """
    unknown = sorted(set(roles) - set(SERVICE_ACCESS))
    if unknown:
        raise ValueError(f"no such service: {', '.join(unknown)} (services: {', '.join(SERVICE_ACCESS)})")
    by_role: dict[str, list[str]] = {}
    for service, role in roles.items():
        by_role.setdefault(role, []).append(service)
    shared = {role: services for role, services in by_role.items() if len(services) > 1}
    if shared:
        raise ValueError("one role per service: " + "; ".join(f"{r} for {', '.join(s)}" for r, s in sorted(shared.items())))
    db, ns = quote_ident(schema.database), quote_ident(schema.name)
    out = [f"REVOKE ALL ON DATABASE {db} FROM PUBLIC", f"REVOKE CREATE ON SCHEMA {ns} FROM PUBLIC"]
    for service, role_name in sorted(roles.items()):
        access, role = SERVICE_ACCESS[service], quote_ident(role_name)
        out += [
            f"REVOKE ALL ON DATABASE {db} FROM {role}",
            f"REVOKE ALL ON SCHEMA {ns} FROM {role}",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {ns} FROM {role}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {ns} FROM {role}",
        ]
        if not access.connects:
            continue
        out += [f"GRANT CONNECT ON DATABASE {db} TO {role}", f"GRANT USAGE ON SCHEMA {ns} TO {role}"]
        for table in sorted(access.tables):
            privileges = access.privileges(table)
            if table not in schema.tables or not privileges:
                continue
            out.append(f"GRANT {', '.join(privileges)} ON TABLE {ns}.{quote_ident(table)} TO {role}")
            if "INSERT" in privileges:
                out += [f"GRANT USAGE ON SEQUENCE {ns}.{quote_ident(seq)} TO {role}" for seq in schema.sequences.get(table, ())]
    return out
