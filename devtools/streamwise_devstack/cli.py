"""``streamwise``: run the whole suite locally, or run the test suite, with one command each."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streamwise_webapp.users_cli import users as users_cli

from . import models_cli, redis_cli, registry_cli
from .deploy_tools import images as images_cli
from .accounts import DEMO_ACCOUNTS, ensure_demo_accounts
from .browser import CHROMIUM_PACKAGES
from .kafka import ensure_java, ensure_kafka_jars
from .packages import MissingDependency, ensure_debian_packages, find_binary
from .ports import free_port
from .redis_server import RedisServer
from .suite import Suite, service_specs, suite_env
from .tansu import TansuBroker

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = ROOT / "examples" / "fraud" / "lifecycle.toml"
DEFAULT_PORTS = {"webapp": 8000, "ingest": 8001, "predictor": 8002, "trainer": 8003}

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
cli.add_typer(models_cli.models, name="models", help="Model lifecycle: list, versions, show, promote, rollback, audit.")
cli.add_typer(users_cli, name="users", help="People and API keys of the web app: add, list, set, key-add, key-revoke.")
cli.add_typer(registry_cli.registry, name="registry", help="The SQL registry as its owner: migrate, grant each service's role its rights.")
cli.add_typer(redis_cli.redis, name="redis", help="Redis ACL users of the services: acl.")
cli.add_typer(images_cli, name="images", help="Images and tools to run compose and Kubernetes without an image registry.")
console = Console()


def _port(preferred: int) -> int:
    """``preferred`` when it is free, else any free port (said in the summary)."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _require(binaries: dict[str, str]) -> None:
    try:
        ensure_debian_packages(binaries)
    except MissingDependency as exc:
        console.print(f"[red]missing:[/red] {exc}")
        raise typer.Exit(2) from exc


@cli.command()
def up(
    demo: Annotated[bool, typer.Option(help="Stream the demo fraud workload into ingest")] = True,
    rate: Annotated[float, typer.Option(help="Demo events per second")] = 200.0,
    total: Annotated[int, typer.Option(help="Demo events to send; 0 streams until stopped")] = 0,
    drift_at: Annotated[int, typer.Option(help="Demo event index where the fraud pattern changes")] = 20_000,
    app_spec: Annotated[Path, typer.Option(help="Application spec (TOML)")] = DEFAULT_SPEC,
) -> None:
    """Start Tansu, Redis, SQLite and the four services, then stream the demo until Ctrl-C."""
    logging.basicConfig(level=logging.WARNING)
    _require({"redis-server": "redis-server"})
    run_dir = ROOT / "var" / "embedded"
    # Tansu keeps topics in memory only, so model state from an earlier run would not match.
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    broker = TansuBroker(run_dir / "tansu", port=_port(9092))
    redis = RedisServer(run_dir / "redis", port=_port(6379))
    ports = {name: _port(p) for name, p in DEFAULT_PORTS.items()}
    database_url = f"sqlite:///{run_dir / 'registry.db'}"
    env = suite_env(
        bootstrap=broker.bootstrap, idempotence=False, redis_url=redis.url, database_url=database_url,
        app_spec=app_spec.resolve(),
        extra={
            "STREAMWISE_GATE__ENABLED": "true",  # as compose and Kubernetes run it
            # where the web app reaches the others (its System page and live feed)
            **{f"STREAMWISE_UPSTREAM__{n.upper()}": f"http://127.0.0.1:{ports[n]}" for n in ("ingest", "predictor", "trainer")},
        },
    )
    suite = Suite(env, run_dir / "logs", service_specs(ports), cwd=ROOT)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        with console.status("starting Tansu and Redis…"):
            (run_dir / "tansu").mkdir()
            (run_dir / "redis").mkdir()
            broker.start()
            redis.start()
        with console.status("preparing the registry and the demo accounts…"):
            ensure_demo_accounts(database_url)
        with console.status("starting trainer, ingest, predictor and webapp…"):
            suite.start()
        _summary(suite, broker, redis, run_dir)
        _sign_in_help(suite)
        if demo:
            from .demo_stream import stream

            asyncio.run(stream(
                suite.url("ingest"), "dev-api-key", total=total or None, rate=rate, batch=50,
                drift_at=drift_at, seed=7, progress=True,
            ))
        console.print("[green]running[/green] — press Ctrl-C to stop")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            suite.stop()
            redis.stop()
            broker.stop()
        console.print("stopped everything this command started")


def _sign_in_help(suite: Suite) -> None:
    table = Table(title=f"Sign in at {suite.url('webapp')}/ (development accounts)", show_header=True)
    table.add_column("user")
    table.add_column("password")
    table.add_column("may")
    for (user, password, role), may in zip(DEMO_ACCOUNTS, ("read", "read, feedback, promote, roll back", "all, people and keys")):
        table.add_row(user, password, f"{role.value}: {may}")
    console.print(table)
    console.print("Machines send X-API-Key: dev-api-key (admin). Add people with `./streamwise users add NAME -r ROLE`.")


def _summary(suite: Suite, broker: TansuBroker, redis: RedisServer, run_dir: Path) -> None:
    table = Table(title="Streamwise is up", show_header=True)
    table.add_column("what")
    table.add_column("where")
    table.add_row("web app", f"{suite.url('webapp')}/")
    table.add_row("ingest API", f"{suite.url('ingest')}/docs  (POST /v1/events, /v1/labels; X-API-Key: dev-api-key)")
    table.add_row("predictor API", f"{suite.url('predictor')}/docs  (POST /v1/predict, /v1/predict/batch)")
    table.add_row("trainer status", f"{suite.url('trainer')}/v1/status  (admin read: X-API-Key)")
    table.add_row("Kafka (Tansu)", broker.bootstrap)
    table.add_row("Redis", redis.url)
    table.add_row("registry", f"sqlite:///{run_dir / 'registry.db'}")
    table.add_row("logs", str(run_dir / "logs"))
    console.print(table)


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
