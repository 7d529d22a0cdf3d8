"""``streamwise registry``: migrate the SQL registry and give each service's PostgreSQL role exactly
its rights (``streamwise_core/adapters/registry/access.py``).

Run as the registry's owner: ``STREAMWISE_DATABASE_URL`` (or ``--database-url``) names the role
that owns the tables, never a service's.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine

from streamwise_core.adapters.registry import migrate as migrate_registry
from streamwise_core.adapters.registry.access import DEFAULT_ROLES, PRIVILEGES, SERVICE_ACCESS, grant_statements
from streamwise_core.adapters.registry.grants import GrantsNotExact, ensure_login_roles, read_schema, role_problems
from streamwise_core.adapters.registry.grants import grant as grant_roles
from streamwise_core.adapters.registry.repository import MigrationRefused
from streamwise_core.adapters.settings import MigrationSettings

registry = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

UrlOpt = Annotated[str | None, typer.Option("--database-url", help="The owner's URL (default: STREAMWISE_DATABASE_URL).")]
RoleOpt = Annotated[list[str] | None, typer.Option(
    "--role", help="SERVICE=ROLE, repeatable: the PostgreSQL role of a service "
    f"(default: {', '.join(f'{s}={r}' for s, r in DEFAULT_ROLES.items())}; name ingest or predictor to strip a role of theirs).",
)]


LoginOpt = Annotated[list[str] | None, typer.Option(
    "--login", help="SERVICE=VARIABLE, repeatable: create the service's role if missing (LOGIN only) and set its "
    "password to the environment variable VARIABLE's value, before migrating (needs an owner that may create roles).",
)]


def _url(given: str | None) -> str:
    return given or MigrationSettings().database_url


def _logins(given: list[str] | None, roles: dict[str, str]) -> dict[str, str]:
    """Role → password, from SERVICE=VARIABLE items (the password never on the command line)."""
    passwords = {}
    for item in given or []:
        service, sep, variable = item.partition("=")
        if not sep or service not in roles:
            raise typer.BadParameter(f"{item!r}: expected SERVICE=VARIABLE with SERVICE one of {', '.join(roles)}")
        value = os.environ.get(variable, "")
        if not value:
            raise typer.BadParameter(f"{item!r}: the environment variable {variable} is empty or unset")
        passwords[roles[service]] = value
    return passwords


def _roles(given: list[str] | None) -> dict[str, str]:
    if not given:
        return dict(DEFAULT_ROLES)
    roles = {}
    for item in given:
        service, sep, role = item.partition("=")
        if not sep or not role or service not in SERVICE_ACCESS:
            raise typer.BadParameter(f"{item!r}: expected SERVICE=ROLE with SERVICE one of {', '.join(SERVICE_ACCESS)}")
        roles[service] = role
    return roles


@registry.command()
def rights() -> None:
    """What each service's role may do to each table."""
    tables = sorted({t for a in SERVICE_ACCESS.values() for t in a.tables})
    table = Table(title="registry rights per service (the owner owns the tables and runs migrations)")
    table.add_column("table")
    for service in SERVICE_ACCESS:
        table.add_column(service)
    for name in tables:
        table.add_row(name, *(", ".join(a.privileges(name)) or "–" for a in SERVICE_ACCESS.values()))
    console.print(table)
    none = [s for s, a in SERVICE_ACCESS.items() if not a.connects]
    console.print(f"{', '.join(none)}: no right at all, not even CONNECT. Privileges: {', '.join(PRIVILEGES)}.")


@registry.command()
def migrate(
    database_url: UrlOpt = None,
    grant: Annotated[bool, typer.Option("--grant", help="Also grant each service's role its rights, in the same transaction.")] = False,
    role: RoleOpt = None,
    login: LoginOpt = None,
) -> None:
    """Bring the registry to the newest schema (as its owner); with --grant or --role, grant the roles too."""
    roles = _roles(role) if grant or role or login else None
    passwords = _logins(login, roles or {})
    try:
        if passwords:
            created = ensure_login_roles(_url(database_url), passwords)
            typer.echo(f"roles {', '.join(sorted(passwords))}: " + (f"created {', '.join(created)}" if created else "passwords set"))
        migrate_registry(_url(database_url), roles=roles)
    except (GrantsNotExact, MigrationRefused, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    typer.echo("registry at head" + (f"; granted {', '.join(f'{s}={r}' for s, r in roles.items())}" if roles else ""))


@registry.command()
def grant(
    database_url: UrlOpt = None,
    role: RoleOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the statements for the schema as it is; change nothing.")] = False,
) -> None:
    """Give each service's role exactly its rights on the registry as it is now (as its owner; idempotent:
    run it again after each migration that did not grant)."""
    url, roles = _url(database_url), _roles(role)
    if dry_run:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                for problem in role_problems(connection, roles):
                    console.print(f"[yellow]{problem}[/yellow]")
                for statement in grant_statements(read_schema(connection), roles):
                    typer.echo(statement + ";")
        finally:
            engine.dispose()
        return
    try:
        statements = grant_roles(url, roles)
    except (GrantsNotExact, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    typer.echo(f"{len(statements)} statements; granted {', '.join(f'{s}={r}' for s, r in roles.items())}")
