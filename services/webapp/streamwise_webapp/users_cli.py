"""``streamwise users`` (or ``python -m streamwise_webapp.users_cli``): people and API keys of
the web app, in the registry database named by ``STREAMWISE_DATABASE_URL``."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer

from streamwise_core.adapters.settings import Settings

from .accounts import AccountError, Accounts, Role

users = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
RoleOpt = Annotated[Role, typer.Option("--role", "-r", help="viewer, operator or admin")]


def _accounts() -> Accounts:
    return Accounts.from_url(Settings().database_url)


def _password(env: str | None) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise typer.BadParameter(f"{env} is not set")
        return value
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise typer.BadParameter("the passwords differ")
    return first


def _fail(exc: AccountError) -> typer.Exit:
    typer.echo(f"refused: {exc}", err=True)
    return typer.Exit(1)


@users.command("add")
def add(
    username: str, role: RoleOpt = Role.VIEWER,
    password_env: Annotated[str | None, typer.Option(help="Read the password from this variable, not a prompt.")] = None,
) -> None:
    """Add a person who signs in with a password."""
    repo = _accounts()
    try:
        repo.create_user(username, _password(password_env), role)
    except AccountError as exc:
        raise _fail(exc) from exc
    finally:
        repo.close()
    typer.echo(f"added {username} ({role.value})")


@users.command("list")
def list_users() -> None:
    """Everyone, with their role."""
    repo = _accounts()
    try:
        for user in repo.users():
            flag = "\tdisabled" if user.disabled else ""
            typer.echo(f"{user.username}\t{user.role.value}{flag}")
    finally:
        repo.close()


@users.command("set")
def change(
    username: str,
    role: Annotated[Role | None, typer.Option("--role", "-r")] = None,
    disabled: Annotated[bool | None, typer.Option("--disabled/--enabled")] = None,
    new_password: Annotated[bool, typer.Option("--password", help="Prompt for a new password.")] = False,
) -> None:
    """Change a role, disable or enable, or set a new password (ends their sessions)."""
    repo = _accounts()
    try:
        repo.update_user(username, role=role, disabled=disabled, password=_password(None) if new_password else None)
    except AccountError as exc:
        raise _fail(exc) from exc
    finally:
        repo.close()
    typer.echo(f"changed {username}")


@users.command("key-add")
def key_add(name: str, role: RoleOpt = Role.OPERATOR) -> None:
    """Create an API key for a machine; it is printed once (only its digest is stored)."""
    repo = _accounts()
    try:
        key = repo.create_api_key(name, role, f"cli:{getpass.getuser()}")
    except AccountError as exc:
        raise _fail(exc) from exc
    finally:
        repo.close()
    typer.echo(key)


@users.command("key-revoke")
def key_revoke(name: str) -> None:
    """Revoke an API key at once."""
    repo = _accounts()
    try:
        repo.revoke_api_key(name)
    except AccountError as exc:
        raise _fail(exc) from exc
    finally:
        repo.close()
    typer.echo(f"revoked {name}")


if __name__ == "__main__":
    users()
