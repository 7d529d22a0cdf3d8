"""``streamwise redis``: the Redis ACL users of each service (``streamwise_core/adapters/redis_access.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS, acl_rules
from streamwise_core.contracts.appspec import load_app_spec

redis = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def acl_file(prefix: str, app: str) -> str:
    """An ACL file (``redis-server --aclfile``): ``default`` is the administrator, behind
    ``REDIS_ADMIN_PASSWORD``; each service's user ``streamwise_<service>`` has exactly its rules,
    its password read from ``REDIS_<SERVICE>_PASSWORD`` (compose interpolates them).

    ``default`` keeps every right: Redis 7 up to 7.4 replays an append-only file's MULTI/EXEC
    transactions as ``default`` and checks its rights at EXEC, so a restricted or disabled
    ``default`` silently drops every transaction at the next start (redis/redis#14541)."""
    lines = ["user default on >${REDIS_ADMIN_PASSWORD} ~* &* +@all"]
    lines += [f"user streamwise_{service} on >${{REDIS_{service.upper()}_PASSWORD}} {acl_rules(service, prefix, app)}"
              for service in SERVICE_OPERATIONS]
    return "\n".join(lines) + "\n"


@redis.command()
def acl(
    app_spec: Annotated[Path, typer.Option(help="The application spec whose keys the users may use.")] = Path("examples/fraud/lifecycle.toml"),
    prefix: Annotated[str, typer.Option(help="STREAMWISE_TOPIC_PREFIX, the first part of every key.")] = "streamwise",
) -> None:
    """Print the ACL file of the services' Redis users for one application (compose's `redis-users`
    config; for ACL SETUSER, take each line after `user NAME`)."""
    typer.echo(acl_file(prefix, load_app_spec(app_spec).name), nl=False)
