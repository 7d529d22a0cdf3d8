"""``streamwise``: run the whole suite locally, or run the test suite, with one command each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streamwise_webapp.users_cli import users as users_cli

from . import models_cli, redis_cli, registry_cli
from .browser import CHROMIUM_PACKAGES
from .deploy_tools import images as images_cli
from .kafka import ensure_java, ensure_kafka_jars
from .local_run import RunOptions, run, up_console
from .packages import MissingDependency, ensure_debian_packages, find_binary
from .run_folder import RUN_DIR_ENV, Broker, default_run_dir, use_client_env

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = ROOT / "examples" / "fraud" / "lifecycle.toml"

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
cli.add_typer(models_cli.models, name="models", help="Model lifecycle: list, versions, show, promote, rollback, audit.")
cli.add_typer(users_cli, name="users", help="People and API keys of the web app: add, list, set, key-add, key-revoke.")
cli.add_typer(registry_cli.registry, name="registry", help="The SQL registry as its owner: migrate, grant each service's role its rights.")
cli.add_typer(redis_cli.redis, name="redis", help="Redis ACL users of the services: acl.")
cli.add_typer(images_cli, name="images", help="Images and tools to run compose and Kubernetes without an image registry.")
console = Console()
err_console = Console(stderr=True)


def _require(binaries: dict[str, str]) -> None:
    try:
        ensure_debian_packages(binaries)
    except MissingDependency as exc:
        console.print(f"[red]missing:[/red] {exc}")
        raise typer.Exit(2) from exc


@cli.callback()
def _root(ctx: typer.Context) -> None:
    # The users and models commands reach the registry, Redis and Kafka of the local run
    # (`up`'s client.env) unless the environment names a registry (STREAMWISE_DATABASE_URL).
    if ctx.invoked_subcommand in ("users", "models"):
        added = use_client_env(default_run_dir(Broker.KAFKA))
        if added:
            err_console.print(f"[dim]using the local run's settings ({', '.join(sorted(added))})[/dim]")


@cli.command()
def up(
    demo: Annotated[bool, typer.Option(help="Stream the demo fraud workload into ingest")] = True,
    rate: Annotated[float, typer.Option(help="Demo events per second (0: as fast as possible)")] = 200.0,
    total: Annotated[int, typer.Option(help="Demo events to send in this run; 0 streams until stopped")] = 0,
    drift_at: Annotated[int, typer.Option(help="Demo event index (over all runs) where the fraud pattern changes")] = 20_000,
    app_spec: Annotated[Path, typer.Option(help="Application spec (TOML)")] = DEFAULT_SPEC,
    broker: Annotated[Broker, typer.Option(help="kafka: Apache Kafka 4, kept across runs; tansu: in memory, fresh each run")] = Broker.KAFKA,
    fresh: Annotated[bool, typer.Option(help="Delete the run folder first (it says what) and start from nothing")] = False,
    run_dir: Annotated[Path | None, typer.Option(
        envvar=RUN_DIR_ENV, help="Run folder (default var/local; var/tansu with --broker tansu)")] = None,
    port_base: Annotated[int | None, typer.Option(
        min=1, max=65_528, help="Ports of a new run folder from this one: web app, ingest, predictor, trainer, "
        "Kafka, its controller, Redis (default 8000-8003, 9092, 9093, 6379)")] = None,
) -> None:
    """Start Kafka, Redis, SQLite and the four services, resuming the last run; stream the demo and
    restart whatever exits until Ctrl-C."""
    options = RunOptions(app_spec=app_spec, broker=broker, run_dir=run_dir, port_base=port_base, fresh=fresh,
                         demo=demo, rate=rate, total=total, drift_at=drift_at)
    code = run(options, up_console())
    if code:
        raise typer.Exit(code)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Install what the tests need (redis-server, PostgreSQL, Chromium, Kafka jars), then run pytest."""
    _require({"redis-server": "redis-server", "initdb": "postgresql"})
    if find_binary("java") is None or find_binary("mvn") is None:
        _require({"java": "openjdk-17-jre-headless", "mvn": "maven"})
    ensure_java()
    _require(CHROMIUM_PACKAGES)  # the browser tests drive Debian's Chromium
    with console.status("resolving Apache Kafka jars from Maven Central…"):
        ensure_kafka_jars()
    args = ctx.args or ["tests"]
    preparing = _prepare_real_tier(args)
    try:
        code = subprocess.call([sys.executable, "-m", "pytest", *args], cwd=ROOT)
    finally:
        if preparing is not None and preparing.poll() is None:
            os.killpg(preparing.pid, signal.SIGTERM)  # its go build too; it stops its dockerd itself
            preparing.wait(timeout=180)
    raise typer.Exit(code)


REAL_TIER_LOG = ROOT / "var" / "prepare-real-tier.log"


def _prepare_real_tier(args: list[str]) -> subprocess.Popen[bytes] | None:
    """When the run includes tests/deploy/real, build its tools and images in the background
    (minutes on a fresh machine) while the other tiers run; its fixtures wait on the same locks."""
    wanted = any(a.rstrip("/") in ("tests", "tests/deploy") or "tests/deploy/real" in a for a in args if not a.startswith("-"))
    if not wanted or any(a in ("-m", "--collect-only") for a in args):
        return None
    REAL_TIER_LOG.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"building the real-deployment tier's tools in the background (log: {REAL_TIER_LOG.relative_to(ROOT)})")
    with open(REAL_TIER_LOG, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streamwise_devstack.deploy_tools", "prepare"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
