"""``streamwise up``: the whole suite on this machine, in a run folder that a next ``up`` resumes.

Apache Kafka 4 (one KRaft node), Redis with its append-only file, a SQLite registry and the four
services keep their data under the run folder (``var/local`` unless ``--run-dir`` or
``STREAMWISE_RUN_DIR`` says otherwise); the ports chosen at the first start are kept in its
``state.json``, since KRaft remembers its controller's address. A lock file (``up.pid``) keeps
a second ``up`` off a running one; ``status.json`` says what runs with which pid while ``up``
runs; ``client.env`` holds the variables the ``users`` and ``models`` commands need to reach it.
A ``Supervisor`` restarts whatever exits, and the demo stream runs in a thread meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar, cast

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from .accounts import DEMO_ACCOUNTS, ensure_demo_accounts
from .kafka import DEFAULT_KAFKA_VERSION, KafkaBroker, ensure_java, ensure_kafka_jars
from .packages import MissingDependency, ensure_debian_packages, find_binary
from .process import LocalServer
from .redis_server import RedisServer
from .run_folder import (
    ROOT,
    RUN_DIR_ENV,
    TANSU_LIMITS,
    AlreadyRunning,
    Broker,
    PidLock,
    PortTaken,
    RunPaths,
    RunState,
    StartFailed,
    default_run_dir,
    pid_alive,
    plan_ports,
    preferred_ports,
    write_json,
)
from .suite import Suite, service_specs, suite_env
from .supervisor import BackoffPolicy, Child, Supervisor
from .tansu import TansuBroker

__all__ = ["LocalRun", "RunOptions", "run", "up_console"]

SERVICES = ("trainer", "ingest", "predictor", "webapp")
STOP_GRACE_S = 15.0
"""How long a service may take to stop (the trainer writes a last checkpoint of every model)."""
DEMO_SEED = 7
T = TypeVar("T")


class ServiceChild:
    """One service of the ``Suite``; a restart spawns it without waiting for its health."""

    def __init__(self, suite: Suite, name: str) -> None:
        self.suite = suite
        self.name = name

    @property
    def pid(self) -> int | None:
        return self.suite.pid(self.name)

    def poll(self) -> int | None:
        return self.suite.poll(self.name)

    def restart(self) -> None:
        self.suite.spawn(self.name)


class ServerChild:
    """Kafka, Tansu or Redis; a restart waits until it serves again (on the same port and data)."""

    def __init__(self, server: LocalServer, name: str) -> None:
        self.server = server
        self.name = name

    @property
    def pid(self) -> int | None:
        return self.server.pid

    def poll(self) -> int | None:
        process = self.server._process  # noqa: SLF001 - the server's own child process
        if process is None:
            return 1  # not running (a restart failed before it started anything)
        if process.alive():
            return None
        code = process.stop()  # reaps it; returns its exit code
        self.server.stop()
        return 1 if code is None else code

    def restart(self) -> None:
        self.server.restart()


# --- the demo stream --------------------------------------------------------------------------


class CurrentStdout(io.TextIOBase):
    """``sys.stdout`` as it is at each write. While the demo's progress bar (or a spinner) shows,
    that is rich's proxy, which prints above it; a ``Console`` on ``sys.stdout`` would write across
    it (a console unwraps the proxy). A console on this file must not show a spinner or a bar
    itself: its proxy would write back to it, endlessly (``LocalRun.spinner`` uses another)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()


def up_console() -> Console:
    """The console ``up`` prints through, and a logging handler on it (the demo's retries)."""
    console = Console(file=cast(IO[str], CurrentStdout()))
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)],
                        force=True)
    return console


class DemoThread:
    """The demo stream in a thread with its own event loop, stopped through an asyncio event.

    Its HTTP client retries a refused or lost connection and 502/503/504 answers (see
    ``demo_stream._Poster``) for ``retry_for`` seconds, so a restarted ingest costs a pause only.
    """

    def __init__(self, ingest_url: str, *, total: int | None, rate: float, drift_at: int, run_id: str,
                 progress: bool, retry_for: float = 24 * 3600.0) -> None:
        self._kwargs: dict[str, Any] = {
            "total": total, "rate": rate, "batch": 50, "drift_at": drift_at, "seed": DEMO_SEED,
            "run_id": run_id, "progress": progress, "retry_for": retry_for,
        }
        self._url = ingest_url
        self._thread = threading.Thread(target=self._run, name="demo-stream", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.sent: int | None = None
        self.error: BaseException | None = None
        self.seconds: float = 0.0

    def start(self) -> None:
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def _run(self) -> None:
        from .demo_stream import stream

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            summary = await stream(self._url, "dev-api-key", stop=self._stop, **self._kwargs)
            self.sent, self.seconds = summary.sent, summary.seconds

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by the owner thread
            self.error = exc
        finally:
            self._ready.set()

    def stop(self, timeout: float) -> bool:
        """Ask the stream to stop (it sends the late labels it holds) and wait; True if it ended."""
        if self._thread.ident is None:
            return True
        self._ready.wait(timeout)
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        return not self._thread.is_alive()


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """What ``streamwise up`` was asked."""

    app_spec: Path
    broker: Broker = Broker.KAFKA
    run_dir: Path | None = None
    port_base: int | None = None
    fresh: bool = False
    demo: bool = True
    rate: float = 200.0
    total: int = 0
    drift_at: int = 20_000
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)

    @property
    def folder(self) -> Path:
        return (self.run_dir or default_run_dir(self.broker)).resolve()


class _Signals:
    """SIGINT and SIGTERM set ``stopping``; while starting they also interrupt what runs."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.interrupt = True
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt


class LocalRun:
    """One ``streamwise up``: ``prepare`` the folder, ``start``, ``supervise`` until asked to stop,
    ``stop``. Every process it starts it stops, by pid."""

    def __init__(self, options: RunOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.paths = RunPaths(options.folder)
        self.lock = PidLock(self.paths.lock)
        self.state: RunState | None = None
        self.broker: KafkaBroker | TansuBroker | None = None
        self.redis: RedisServer | None = None
        self.suite: Suite | None = None
        self.supervisor: Supervisor | None = None
        self.demo: DemoThread | None = None
        self._demo_reported = False
        self._demo_counted = False

    # -- preparing the folder --

    def prepare(self) -> None:
        """Lock the run folder, clear it when asked (or for Tansu), choose the ports."""
        self.lock.acquire()
        if self.lock.stale_pid is not None:
            self._stale(self.lock.stale_pid)
        saved = None if self.options.fresh else RunState.load(self.paths.state)
        if saved is not None and saved.broker != self.options.broker.value:
            raise StartFailed(
                "run folder", f"{self.show(self.paths.root)} holds a {saved.broker} run; start it with "
                f"--broker {saved.broker}, or pass --fresh to delete it, or choose another --run-dir",
            )
        if self.options.fresh:
            self._clear("--fresh")
        elif self.options.broker is Broker.TANSU:
            self._clear("Tansu keeps its topics in memory only, so this run starts fresh")
            saved = None
        kafka_log = (self.paths.kafka / "kraft-logs" / "meta.properties").is_file()
        fixed = frozenset({"kafka", "controller"}) if kafka_log and self.options.broker is Broker.KAFKA else frozenset()
        wanted = preferred_ports(self.options.port_base)
        if self.options.broker is Broker.TANSU:
            wanted.pop("controller")
        try:
            ports, notes = plan_ports(wanted, saved.ports if saved else None, fixed=fixed)
        except PortTaken as exc:
            raise StartFailed(exc.what, f"{exc}; Kafka's log in {self.show(self.paths.kafka)} names this port, so "
                              "free it (or start over with --fresh)") from exc
        if saved is not None and self.options.port_base is not None and saved.ports != wanted:
            notes.insert(0, "--port-base applies to a new run folder: this one keeps its ports (--fresh starts over)")
        for note in notes:
            self.console.print(f"[yellow]note:[/] {escape(note)}")
        self.state = RunState(broker=self.options.broker.value, ports=ports,
                              runs=(saved.runs if saved else 0) + 1, demo_sent=saved.demo_sent if saved else 0)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.state.save(self.paths.state)
        if saved is None:
            self._line(f"run folder {self.show(self.paths.root)} (new)")
        else:
            self._line(f"run folder {self.show(self.paths.root)} (resuming after {saved.runs} "
                       f"run{'s' if saved.runs != 1 else ''}; `up --fresh` starts over)")

    def _stale(self, pid: int) -> None:
        note = f"an earlier `up` (pid {pid}) ended without stopping"
        try:
            leftovers = json.loads(self.paths.status.read_text()).get("pids", {})
        except (OSError, ValueError):
            leftovers = {}
        alive = {name: p for name, p in leftovers.items() if isinstance(p, int) and pid_alive(p)}
        if alive:
            listed = ", ".join(f"{name} (pid {p})" for name, p in alive.items())
            note += f"; these processes it started may still run: {listed} (kill {' '.join(map(str, alive.values()))})"
        self.console.print(f"[yellow]note:[/] {escape(note)}")

    def _clear(self, why: str) -> None:
        """Delete everything in the run folder but the lock, saying what."""
        root = self.paths.root
        if not root.is_dir():
            return
        entries = sorted(p for p in root.iterdir() if p != self.paths.lock)
        if not entries:
            return
        described = self.paths.described()
        self.console.print(f"{why}: deleting {self.show(root)}:")
        for entry in entries:
            what = described.get(entry, "")
            self.console.print(f"  {escape(self.show(entry))}{f'  ({what})' if what else ''}")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- starting --

    def start(self) -> None:
        """Start the broker, Redis, the registry and the services, one progress line each."""
        assert self.state is not None
        ports, paths = self.state.ports, self.paths
        if self.options.broker is Broker.KAFKA:
            self._start_kafka(ports)
        else:
            self._start_tansu(ports)
        assert self.broker is not None
        self.redis = RedisServer(paths.redis, port=ports["redis"], appendonly=True)
        self._step("Redis", self.redis.start,
                   lambda _: f"Redis on 127.0.0.1:{ports['redis']}, append-only file in {self.show(paths.redis)}")
        self._step("registry", lambda: ensure_demo_accounts(paths.database_url),
                   lambda _: f"registry {self.show(paths.registry)} (SQLite), development accounts in place")
        service_ports = {name: ports[name] for name in SERVICES}
        env = suite_env(
            bootstrap=self.broker.bootstrap, idempotence=self.options.broker is Broker.KAFKA,
            redis_url=self.redis.url, database_url=paths.database_url, app_spec=self.options.app_spec.resolve(),
            extra={
                "STREAMWISE_GATE__ENABLED": "true",  # as compose and Kubernetes run it
                "STREAMWISE_DATA_DIR": str(paths.trainer),
                # where the web app reaches the others (its System page and live feed)
                **{f"STREAMWISE_UPSTREAM__{n.upper()}": f"http://127.0.0.1:{ports[n]}" for n in ("ingest", "predictor", "trainer")},
            },
        )
        self._write_client_env(env)
        self.suite = Suite(env, paths.logs, service_specs(service_ports), cwd=ROOT)
        self._start_services(self.suite)
        children: list[Child] = [
            ServerChild(self.broker, "kafka" if self.options.broker is Broker.KAFKA else "tansu"),
            ServerChild(self.redis, "redis"), *(ServiceChild(self.suite, n) for n in SERVICES),
        ]
        self.supervisor = Supervisor(children, self.options.policy, report=self._report)
        self.write_status()

    def _start_kafka(self, ports: dict[str, int]) -> None:
        self._step("Java", self._java, lambda java: f"Java ({java})")
        self._step("Kafka jars", lambda: ensure_kafka_jars(DEFAULT_KAFKA_VERSION),
                   lambda libs: f"Apache Kafka {DEFAULT_KAFKA_VERSION} jars in {libs}",
                   status=f"resolving Apache Kafka {DEFAULT_KAFKA_VERSION} jars (from Maven Central, once)…")
        self.broker = KafkaBroker(self.paths.kafka, port=ports["kafka"], controller_port=ports["controller"])
        self._step("Kafka", self.broker.start,
                   lambda _: f"Kafka {DEFAULT_KAFKA_VERSION} on 127.0.0.1:{ports['kafka']} (KRaft controller "
                   f"{ports['controller']}, log in {self.show(self.paths.kafka)})")

    def _start_tansu(self, ports: dict[str, int]) -> None:
        self.console.print(f"[yellow]Tansu:[/] {TANSU_LIMITS}.")
        self.broker = TansuBroker(self.paths.tansu, port=ports["kafka"])
        self._step("Tansu", self.broker.start, lambda _: f"Tansu on 127.0.0.1:{ports['kafka']} (in memory)")

    def _java(self) -> str:
        if find_binary("java") is None:
            self._require({"java": "openjdk-17-jre-headless"}, "Java")
        return ensure_java()

    def _require(self, binaries: dict[str, str], component: str) -> None:
        try:
            ensure_debian_packages(binaries)
        except MissingDependency as exc:
            raise StartFailed(component, str(exc)) from exc

    def _start_services(self, suite: Suite) -> None:
        started = time.monotonic()
        with self.spinner("starting trainer, ingest, predictor and webapp…"):
            for name in SERVICES:
                suite.spawn(name)
            for name in SERVICES:
                try:
                    suite.wait_healthy(name, 120.0)
                except (RuntimeError, TimeoutError) as exc:
                    raise StartFailed(name, f"{exc}\n(log: {self.show(suite.log_dir / f'{name}.log')})") from exc
                self._line(f"{name} on {suite.url(name)} (pid {suite.pid(name)})", time.monotonic() - started)

    def _step(self, component: str, action: Callable[[], T], done: Callable[[T], str], *, status: str | None = None) -> T:
        """Run ``action`` under a spinner, then print ``done(its result)`` with the time it took."""
        started = time.monotonic()
        try:
            with self.spinner(status or f"starting {component}…"):
                result = action()
        except StartFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, the component is named
            raise StartFailed(component, str(exc) or type(exc).__name__) from exc
        self._line(done(result), time.monotonic() - started)
        return result

    def _line(self, text: str, seconds: float | None = None) -> None:
        took = f" [dim]({seconds:.1f} s)[/]" if seconds is not None else ""
        self.console.print(f"[green]✓[/] {escape(text)}{took}")

    def _write_client_env(self, env: Mapping[str, str]) -> None:
        keys = ("STREAMWISE_DATABASE_URL", "STREAMWISE_REDIS_URL", "STREAMWISE_KAFKA__BOOTSTRAP", "STREAMWISE_APP_SPEC",
                "STREAMWISE_TOPIC_PREFIX")
        lines = ["# written by `streamwise up`: the users and models commands read it (set -a; . this file)"]
        self.paths.client_env.write_text("\n".join([*lines, *(f"{k}={env[k]}" for k in keys)]) + "\n")

    # -- running --

    def start_demo(self) -> None:
        """Stream the demo workload in a thread; ids carry the run number, so a next run sends new ones."""
        assert self.state is not None and self.suite is not None
        done_before = self.state.demo_sent
        drift_at = max(self.options.drift_at - done_before, 0)
        if done_before:
            self.console.print(f"demo: resuming after {done_before:,} events sent by earlier runs "
                               f"(the fraud pattern changes at event {self.options.drift_at:,})")
        self.demo = DemoThread(
            self.suite.url("ingest"), total=self.options.total or None, rate=self.options.rate, drift_at=drift_at,
            run_id=f"fraud-s{DEMO_SEED}-r{self.state.runs}", progress=self.console.is_terminal,
        )
        self.demo.start()

    def supervise(self, stopping: threading.Event) -> None:
        """Restart what exits until ``stopping`` is set; report the demo's end."""
        assert self.supervisor is not None
        while not stopping.wait(self.supervisor.next_check_in()):
            if self.supervisor.check():
                self.write_status()
            if self.demo is not None and self.demo.finished and not self._demo_reported:
                self._demo_finished()

    def _demo_finished(self) -> None:
        assert self.demo is not None and self.state is not None
        self._demo_reported = True
        if self.demo.error is not None:
            self.console.print(f"[red]demo stream stopped:[/] {escape(str(self.demo.error))}")
        else:
            self.console.print(f"demo: sent {self.demo.sent:,} events in {self.demo.seconds:.1f} s; "
                               "the services run on — Ctrl-C stops everything")
        self._count_demo()
        self.write_status()

    def _count_demo(self) -> None:
        """Add what the demo sent to the folder's total once (the next run's drift point moves)."""
        assert self.state is not None
        if self.demo is not None and self.demo.sent is not None and not self._demo_counted:
            self._demo_counted = True
            self.state.demo_sent += self.demo.sent
            self.state.save(self.paths.state)

    def write_status(self) -> None:
        """``status.json``: what runs where, with which pid (read by tests and tools)."""
        pids: dict[str, int | None] = {}
        if self.broker is not None:
            pids["kafka" if isinstance(self.broker, KafkaBroker) else "tansu"] = self.broker.pid
        if self.redis is not None:
            pids["redis"] = self.redis.pid
        if self.suite is not None:
            pids.update({name: self.suite.pid(name) for name in SERVICES})
        demo = None
        if self.demo is not None:
            demo = {"finished": self.demo.finished, "sent": self.demo.sent if self.demo.finished else None,
                    "error": str(self.demo.error) if self.demo.error else None}
        write_json(self.paths.status, {
            "pid": os.getpid(),
            "broker": self.options.broker.value,
            "bootstrap": self.broker.bootstrap if self.broker else None,
            "redis_url": self.redis.url if self.redis else None,
            "database_url": self.paths.database_url,
            "urls": {name: self.suite.url(name) for name in SERVICES} if self.suite else {},
            "pids": pids,
            "restarts": self.supervisor.restarts if self.supervisor else {},
            "demo": demo,
        })

    def _report(self, message: str) -> None:
        self.console.print(f"[yellow]supervisor:[/] {escape(message)}")

    # -- stopping --

    def stop_demo(self) -> None:
        """Stop the demo stream (it sends the late labels it holds first) and count what it sent."""
        if self.demo is None or self._demo_counted:
            return
        if not self.demo.stop(timeout=20.0):
            self.console.print("[yellow]note:[/] the demo stream did not finish its late labels in 20 s")
        if self.demo.finished and self.demo.error is None:
            self._count_demo()

    def stop(self) -> list[str]:
        """Stop the demo, the services, Redis and the broker (in that order); return what was stopped."""
        stopped: list[str] = []
        self.stop_demo()
        if self.suite is not None:
            procs = {n: p for n, p in self.suite.procs.items() if p.poll() is None}
            self.suite.stop(grace_s=STOP_GRACE_S)
            stopped += procs
            for name in (n for n, p in procs.items() if p.returncode == -signal.SIGKILL):
                self.console.print(f"[yellow]note:[/] {name} did not stop within {STOP_GRACE_S:.0f} s of SIGTERM and "
                                   "was killed (a trainer resumes from its last checkpoint, exactly once)")
        for name, server in (("Redis", self.redis), ("Kafka" if isinstance(self.broker, KafkaBroker) else "Tansu", self.broker)):
            if server is not None and server.pid is not None:
                server.stop()
                stopped.append(name)
        with contextlib.suppress(FileNotFoundError):
            self.paths.status.unlink()
        self.lock.release()
        return stopped

    # -- printing --

    def spinner(self, text: str) -> contextlib.AbstractContextManager[object]:
        """A spinner while a step runs, on a console of its own: its display sends what is
        printed meanwhile (through ``sys.stdout``) above itself, and ``self.console`` prints
        through ``sys.stdout`` (see ``CurrentStdout``)."""
        if not self.console.is_terminal:
            return contextlib.nullcontext()
        return Status(text, console=Console())

    def show(self, path: Path) -> str:
        """``path`` relative to the working directory when under it."""
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)

    def print_summary(self) -> None:
        assert self.suite is not None and self.broker is not None and self.redis is not None
        suite = self.suite
        table = Table(title="Streamwise is up", show_header=True)
        table.add_column("what")
        table.add_column("where")
        table.add_row("web app", f"{suite.url('webapp')}/")
        table.add_row("ingest API", f"{suite.url('ingest')}/docs  (POST /v1/events, /v1/labels; X-API-Key: dev-api-key)")
        table.add_row("predictor API", f"{suite.url('predictor')}/docs  (POST /v1/predict, /v1/predict/batch)")
        table.add_row("trainer status", f"{suite.url('trainer')}/v1/status  (admin read: X-API-Key)")
        kind = "Apache Kafka" if isinstance(self.broker, KafkaBroker) else "Tansu, in memory"
        table.add_row(f"Kafka ({kind})", self.broker.bootstrap)
        table.add_row("Redis", self.redis.url)
        table.add_row("registry", self.paths.database_url)
        table.add_row("logs", self.show(self.paths.logs))
        table.add_row("status (pids)", self.show(self.paths.status))
        self.console.print(table)
        people = Table(title=f"Sign in at {suite.url('webapp')}/ (development accounts)", show_header=True)
        for column in ("user", "password", "may"):
            people.add_column(column)
        mays = ("read", "read, feedback, promote, roll back", "all, people and keys")
        for (user, password, role), may in zip(DEMO_ACCOUNTS, mays, strict=True):
            people.add_row(user, password, f"{role.value}: {may}")
        self.console.print(people)
        prefix = "" if self.paths.root == default_run_dir(Broker.KAFKA).resolve() else f"{RUN_DIR_ENV}={self.show(self.paths.root)} "
        self.console.print("Machines send X-API-Key: dev-api-key (admin). Add people with "
                           f"`{prefix}./streamwise users add NAME -r ROLE`; `{prefix}./streamwise models list` "
                           "shows the models (both read this run's settings from "
                           f"{self.show(self.paths.client_env)}).")


def run(options: RunOptions, console: Console) -> int:
    """``streamwise up`` from start to stop: 0 after Ctrl-C, 1 if another ``up`` runs, 2 if a
    component failed to start."""
    local = LocalRun(options, console)
    signals = _Signals()
    signals.install()
    code = 0
    try:
        try:
            local.prepare()
            local.start()
        except AlreadyRunning as exc:
            holder = f"pid {exc.pid}" if exc.pid else "another process"
            console.print(f"[red]streamwise up is already running[/] ({holder}) on {local.show(local.paths.root)}; "
                          "stop it with Ctrl-C there")
            return 1
        except StartFailed as exc:
            console.print(f"[red]✗ {escape(exc.component)} failed:[/] {escape(exc.message)}")
            code = 2
            return code
        local.print_summary()
        if options.demo:
            local.start_demo()
        console.print("[green]running[/] — a process that exits is restarted; Ctrl-C stops everything")
        signals.interrupt = False
        local.supervise(signals.stopping)
    except KeyboardInterrupt:
        pass
    finally:
        signals.interrupt = False
        if local.lock.held:  # we hold the lock: stop what we started
            started = time.monotonic()
            local.stop_demo()  # its progress bar ends before the spinner shows
            with local.spinner("stopping…"):
                stopped = local.stop()
            if stopped:
                kept = ("nothing is kept (Tansu)" if options.broker is Broker.TANSU else
                        f"data kept in {local.show(local.paths.root)}: the next `up` resumes, `up --fresh` starts over")
                console.print(f"stopped {', '.join(stopped)} [dim]({time.monotonic() - started:.1f} s)[/]; {kept}")
        signals.restore()
    return code
