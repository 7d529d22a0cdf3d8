"""The run folder of ``streamwise up`` and what it keeps between runs: its paths, the lock that
keeps a second ``up`` off a running one, the ports chosen at the first start (``state.json``),
and the variables other commands use to reach the running suite (``client.env``)."""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORTS: dict[str, int] = {
    "webapp": 8000, "ingest": 8001, "predictor": 8002, "trainer": 8003,
    "kafka": 9092, "controller": 9093, "redis": 6379,
}
"""The ports a new run folder takes when they are free; ``--port-base B`` lays them out from B
in this order instead (B for the web app ... B+6 for Redis)."""
STATE_VERSION = 1
RUN_DIR_ENV = "STREAMWISE_RUN_DIR"


class StartFailed(RuntimeError):
    """A component did not start; ``component`` names it."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component
        self.message = message


class Broker(enum.StrEnum):
    """The Kafka-compatible broker ``up`` runs."""

    KAFKA = "kafka"
    TANSU = "tansu"


TANSU_LIMITS = (
    "keeps its topics in memory only, so every start is fresh (Redis and the registry too, to "
    "match); refuses the idempotent producer and transactions (ingest writes without "
    "idempotence); speaks part of the Kafka protocol (Debian's kcat cannot list its topics)"
)


def default_run_dir(broker: Broker) -> Path:
    """``$STREAMWISE_RUN_DIR``, else ``var/local`` (Kafka) or ``var/tansu`` (Tansu, wiped each start)."""
    override = os.environ.get(RUN_DIR_ENV)
    if override:
        return Path(override)
    return ROOT / "var" / ("local" if broker is Broker.KAFKA else "tansu")


@dataclass(frozen=True)
class RunPaths:
    """Where one run folder keeps what."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "up.pid"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def client_env(self) -> Path:
        return self.root / "client.env"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    @property
    def tansu(self) -> Path:
        return self.root / "tansu"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def registry(self) -> Path:
        return self.root / "registry.db"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def trainer(self) -> Path:
        return self.root / "trainer"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.registry}"

    def described(self) -> dict[Path, str]:
        """What each entry of a run folder holds (for ``--fresh`` to say what it deletes)."""
        return {
            self.kafka: "Kafka's log: every event, label and prediction",
            self.tansu: "Tansu's log file",
            self.redis: "Redis' append-only file: model versions and checkpoints",
            self.registry: "the registry: versions, people, API keys, audit log",
            self.root / "registry.db-wal": "the registry's write-ahead log",
            self.root / "registry.db-shm": "the registry's write-ahead log index",
            self.logs: "the services' logs",
            self.trainer: "the trainer's local files",
            self.state: "the ports and the demo's progress",
            self.client_env: "the settings the users and models commands read",
        }


# --- the lock ---------------------------------------------------------------------------------


class AlreadyRunning(RuntimeError):
    """Another ``up`` holds the run folder's lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"{path} is locked by pid {pid}")
        self.path = path
        self.pid = pid


class PidLock:
    """An exclusive ``flock`` on a file that holds the owner's pid.

    The kernel drops the lock when its owner dies however it dies, so a file left behind by a
    killed ``up`` (its pid no longer running) is taken over; ``stale_pid`` then names it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self.stale_pid: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``AlreadyRunning`` with the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(handle)
                handle.close()
                raise AlreadyRunning(self.path, pid) from None
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the holder removed the file as we opened it: lock the new one
        previous = _read_pid(handle)
        self.stale_pid = previous if previous not in (None, os.getpid()) else None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Remove the file and drop the lock (idempotent)."""
        if self._file is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._file.close()
        self._file = None

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(handle: Any) -> int | None:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- ports ------------------------------------------------------------------------------------


class PortTaken(RuntimeError):
    """A port this run folder must use is held by another process."""

    def __init__(self, what: str, port: int, holder: str | None) -> None:
        by = f" by {holder}" if holder else ""
        super().__init__(f"port {port} ({what}) is taken{by}")
        self.what = what
        self.port = port
        self.holder = holder


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (as servers do: with SO_REUSEADDR, so
    connections of a just-stopped server in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """``name (pid N)`` of the process listening on TCP ``port``, when /proc tells (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        name = (proc / "comm").read_text().strip()
                        return f"{name} (pid {proc.name})"
    return "another user's process"


def preferred_ports(base: int | None) -> dict[str, int]:
    """The default ports, or the same layout from ``base``."""
    if base is None:
        return dict(DEFAULT_PORTS)
    return {name: base + i for i, name in enumerate(DEFAULT_PORTS)}


def plan_ports(
    preferred: Mapping[str, int], saved: Mapping[str, int] | None, *, fixed: frozenset[str],
    is_free: Callable[[int], bool] = port_is_free, pick: Callable[[], int] = free_port,
    holder: Callable[[int], str | None] = port_holder,
) -> tuple[dict[str, int], list[str]]:
    """The port of each component and notes on those that moved.

    A saved port is reused; ``fixed`` names those that must not move (Kafka's, once its log
    exists): one of them taken raises ``PortTaken``. Any other taken port moves to a free one.
    """
    ports: dict[str, int] = {}
    notes: list[str] = []
    for name, default in preferred.items():
        wanted = (saved or {}).get(name, default)
        if is_free(wanted) and wanted not in ports.values():
            ports[name] = wanted
            continue
        who = holder(wanted)
        if name in fixed:
            raise PortTaken(_PORT_LABELS.get(name, name), wanted, who)
        ports[name] = pick()
        notes.append(f"port {wanted} ({_PORT_LABELS.get(name, name)}) is taken{f' by {who}' if who else ''}: using {ports[name]}")
    return ports, notes


_PORT_LABELS = {"kafka": "Kafka", "controller": "Kafka's KRaft controller", "redis": "Redis"}


# --- state ------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What a run folder remembers between runs (``state.json``)."""

    broker: str
    ports: dict[str, int]
    runs: int = 0
    demo_sent: int = 0

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        try:
            raw = json.loads(path.read_text())
            return cls(broker=str(raw["broker"]), ports={k: int(v) for k, v in raw["ports"].items()},
                       runs=int(raw.get("runs", 0)), demo_sent=int(raw.get("demo_sent", 0)))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StartFailed("run folder", f"{path} is not a state file ({exc!r}); fix or delete it, or start with --fresh") from exc

    def save(self, path: Path) -> None:
        write_json(path, {"version": STATE_VERSION, "broker": self.broker, "ports": self.ports,
                           "runs": self.runs, "demo_sent": self.demo_sent})


def write_json(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def read_client_env(run_dir: Path) -> dict[str, str]:
    """The variables a local run wrote for the ``users`` and ``models`` commands ({} if none)."""
    try:
        lines = RunPaths(run_dir).client_env.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def use_client_env(run_dir: Path) -> dict[str, str]:
    """When the environment names no registry (``STREAMWISE_DATABASE_URL``), set the variables
    ``up`` wrote for ``run_dir`` that it does not set either; return those set."""
    if "STREAMWISE_DATABASE_URL" in os.environ:
        return {}
    added = {k: v for k, v in read_client_env(run_dir).items() if k not in os.environ}
    os.environ.update(added)
    return added


# --- the processes the supervisor watches -----------------------------------------------------


