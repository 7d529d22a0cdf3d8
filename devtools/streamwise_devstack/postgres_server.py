"""A real PostgreSQL server on 127.0.0.1 with trust auth and a `streamwise` database."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from .packages import MissingDependency, ensure_debian_packages
from .ports import ensure_port_free, free_port
from .process import LocalServer, ManagedProcess, log_tail

__all__ = ["PostgresServer"]

log = logging.getLogger(__name__)

DATABASE = "streamwise"
SUPERUSER = "postgres"
# fsync=off loses nothing when only the server process dies (the kernel keeps the pages).
DEFAULT_SETTINGS = {"fsync": "off"}


class PostgresServer(LocalServer):
    """initdb + postgres on 127.0.0.1; port and cluster survive restart().

    PostgreSQL refuses to run as root, so as root initdb and postgres run as the
    ``postgres`` OS user. If that user cannot reach ``data_dir`` (e.g. pytest's 0700
    base temp dir), the cluster goes to a private temp dir that close() removes.
    """

    stop_signal = signal.SIGINT  # "fast" shutdown
    stop_grace = 30.0

    host = "127.0.0.1"
    external = False

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        database: str = DATABASE,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.database = database
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "postgres.log"
        self.run_as = SUPERUSER if os.geteuid() == 0 else None
        self.pgdata: Path | None = None
        self._owned_tmp: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL, e.g. 'postgresql+psycopg://postgres@127.0.0.1:5433/streamwise'."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        """libpq/psycopg URL of the same database."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{self.database}"

    def _run(self, cmd: list[str], cwd: Path | str) -> subprocess.CompletedProcess[str]:
        """Run a short command as the server's OS user, capturing its output."""
        return subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=120, cwd=cwd,
            user=self.run_as, group=self.run_as,
            extra_groups=[] if self.run_as is not None else None,
        )

    def _check_user(self) -> None:
        if self.run_as is None:
            return
        try:
            pwd.getpwnam(self.run_as)
        except KeyError:
            raise MissingDependency(
                f"running as root, PostgreSQL must run as the `{self.run_as}` OS user, which "
                "does not exist; `apt-get install -y postgresql` creates it"
            ) from None

    def _user_can_use(self, path: Path) -> bool:
        if self.run_as is None:
            return True
        return self._run(["test", "-w", str(path), "-a", "-x", str(path)], cwd="/").returncode == 0

    def _make_pgdata(self, pgdata: Path) -> bool:
        """Create ``pgdata`` owned by the server user; return False if that user cannot reach it."""
        pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_as is None:
            return True
        shutil.chown(pgdata, self.run_as, self.run_as)
        return self._user_can_use(pgdata)

    def _choose_pgdata(self) -> Path:
        if self.pgdata is not None:
            return self.pgdata
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self.data_dir / "pgdata"
        if not self._make_pgdata(pgdata):
            with contextlib.suppress(OSError):
                pgdata.rmdir()  # only if empty: never delete a cluster
            self._owned_tmp = Path(tempfile.mkdtemp(prefix="streamwise-pg-"))
            if self.run_as is not None:
                shutil.chown(self._owned_tmp, self.run_as, self.run_as)
            pgdata = self._owned_tmp / "pgdata"
            self._make_pgdata(pgdata)
            log.info("%s is not reachable by OS user %s; the cluster goes to %s",
                     self.data_dir, self.run_as, pgdata)
        self.pgdata = pgdata
        return pgdata

    def _initdb(self, initdb: str, pgdata: Path) -> None:
        if (pgdata / "PG_VERSION").is_file():
            return
        cmd = [initdb, "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
               "--locale=C", "--no-sync", "--no-instructions"]
        result = self._run(cmd, cwd=pgdata)
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def argv(self, postgres: str, pgdata: Path) -> list[str]:
        """Return the postgres command line."""
        cmd = [postgres, "-D", str(pgdata), "-p", str(self.port),
               "-c", f"listen_addresses={self.host}", "-c", f"unix_socket_directories={pgdata}"]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _connect(self, dbname: str) -> psycopg.Connection:
        return psycopg.connect(host=self.host, port=self.port, user=SUPERUSER, dbname=dbname,
                               connect_timeout=2, autocommit=True)

    def _wait_ready(self, process: ManagedProcess, deadline: float) -> None:
        last: Exception | None = None
        while True:
            try:
                with self._connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = exc
            if not process.alive():
                raise RuntimeError("postgres exited during startup")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"postgres not accepting connections (last error: {last})")
            time.sleep(0.1)

    def _ensure_database(self) -> None:
        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def start(self) -> None:
        """initdb once, launch postgres, wait until it accepts connections, create the database."""
        if self._process is not None and self._process.alive():
            return
        started = time.monotonic()
        bins = ensure_debian_packages({"initdb": "postgresql", "postgres": "postgresql"})
        self._check_user()
        pgdata = self._choose_pgdata()
        self._initdb(bins["initdb"], pgdata)
        ensure_port_free(self.host, self.port)
        process = ManagedProcess("postgres", self.argv(bins["postgres"], pgdata), self.log_path,
                                 cwd=pgdata, user=self.run_as)
        process.start()
        self._process = process
        try:
            self._wait_ready(process, started + self.start_timeout)
            self._ensure_database()
        except (TimeoutError, RuntimeError, psycopg.Error) as exc:
            process.kill()
            self._process = None
            raise RuntimeError(
                f"PostgreSQL failed to start on port {self.port}: {exc}\n"
                f"--- {self.log_path} (tail) ---\n{log_tail(self.log_path)}"
            ) from exc
        log.info("PostgreSQL ready on %s in %.1fs", self.url, time.monotonic() - started)

    def close(self) -> None:
        """Stop, and delete the cluster if it was placed in a private temp dir."""
        self.stop()
        if self._owned_tmp is not None:
            shutil.rmtree(self._owned_tmp, ignore_errors=True)
            self._owned_tmp = None
            self.pgdata = None

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
