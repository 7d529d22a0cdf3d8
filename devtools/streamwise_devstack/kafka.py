"""A real single-node Apache Kafka 4.x broker (KRaft) run from Maven Central jars."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .packages import MissingDependency, ensure_debian_packages
from .ports import ensure_port_free, free_port, wait_for_port
from .process import LocalServer, ManagedProcess, log_tail
from .topics import wait_for_kafka

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "ExternalKafka",
    "KafkaBroker",
    "cache_root",
    "ensure_java",
    "ensure_kafka_jars",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MAVEN_TIMEOUT = 900
_MARKER = ".resolved"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.streamwise.devstack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
{tools}    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
"""


def cache_root() -> Path:
    """Return the devstack cache dir: $STREAMWISE_CACHE_DIR or ~/.cache/streamwise."""
    override = os.environ.get("STREAMWISE_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "streamwise"


def ensure_java(min_major: int = 17) -> str:
    """Return the java binary (installing a JRE when root), checking it is >= ``min_major``."""
    java = ensure_debian_packages({"java": "default-jre-headless"})["java"]
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise MissingDependency(f"cannot parse `{java} -version`: {out.stderr.strip()!r}")
    major = int(match.group(1)) if match.group(1) != "1" else int(match.group(2) or 0)
    if major < min_major:
        raise MissingDependency(
            f"Kafka 4 needs Java >= {min_major}, found Java {major} at {java}; "
            "install openjdk-17-jre-headless (or newer) and put it first on PATH"
        )
    return java


_TOOLS = """    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>{kafka}</version>
    </dependency>
"""


def ensure_kafka_jars(version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None, *, tools: bool = False) -> Path:
    """Resolve the broker's jars from Maven Central once and return the dir holding them.

    ``tools``: with the command-line tools too (``kafka-tools``: the image's health check).
    """
    root = cache_dir or cache_root() / (f"kafka-{version}-tools" if tools else f"kafka-{version}")
    libs = root / "libs"
    pom = _POM.format(kafka=version, log4j=LOG4J_VERSION, tools=_TOOLS.format(kafka=version) if tools else "")
    stamp = f"pom-sha256 {hashlib.sha256(pom.encode()).hexdigest()}"
    root.mkdir(parents=True, exist_ok=True)
    if _resolved(root, stamp):
        return libs
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one resolver at a time (pytest-xdist, parallel runs)
        if _resolved(root, stamp):
            return libs
        mvn = ensure_debian_packages({"mvn": "maven"})["mvn"]
        (root / "pom.xml").write_text(pom)
        shutil.rmtree(libs, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(root / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ]
        log.info("resolving Kafka %s jars into %s", version, libs)
        started = time.monotonic()
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                    timeout=MAVEN_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"`{' '.join(cmd)}` took over {MAVEN_TIMEOUT}s") from exc
        jars = sorted(p.name for p in libs.glob("*.jar")) if libs.is_dir() else []
        if result.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {result.returncode}):\n{tail}")
        (root / _MARKER).write_text("\n".join([stamp, *jars]) + "\n")
        log.info("resolved %d jars in %.1fs", len(jars), time.monotonic() - started)
    return libs


def _resolved(root: Path, stamp: str) -> bool:
    """Return True if the marker says the jars for exactly this pom are in place."""
    try:
        return (root / _MARKER).read_text().splitlines()[0] == stamp
    except (OSError, IndexError):
        return False


def _cluster_id() -> str:
    """Return a fresh Kafka cluster id (a random UUID, base64url without padding)."""
    while True:
        # An id starting with '-' would be read as an option by the storage tool.
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclass(frozen=True)
class ExternalKafka:
    """An already-running broker the devstack did not start (cannot be stopped or killed)."""

    bootstrap: str
    external: bool = True


class KafkaBroker(LocalServer):
    """Single-node KRaft broker+controller on 127.0.0.1; ports and data survive restart()."""

    stop_grace = 30.0  # controlled shutdown moves leadership first

    host = "127.0.0.1"
    external = False

    def __init__(
        self,
        data_dir: Path,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        log_level: str = "WARN",
        extra_config: Mapping[str, str] | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.version = version
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "kafka.log"
        self._process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, e.g. '127.0.0.1:39092'."""
        return f"{self.host}:{self.port}"

    def config(self) -> dict[str, str]:
        """Return the server.properties settings for this broker."""
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft-logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the controller keeps the dead incarnation until its session
            # expires (default 9 s); a short session makes kill()+restart() quick.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        settings.update(self.extra_config)
        return settings

    def _java_argv(
        self, java: str, libs: Path, main: str, *args: str, tool: bool = False
    ) -> list[str]:
        # A short-lived tool starts faster with the C1 compiler only.
        tuning = ["-XX:TieredStopAtLevel=1"] if tool else []
        return [
            java,
            *tuning,
            "-Xms128m", f"-Xmx{self.heap}",
            "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
            "-cp", f"{libs}/*",
            main, *args,
        ]

    def _prepare(self, java: str, libs: Path) -> Path:
        """Write configs and format the storage if this data dir was never formatted."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        props = self.data_dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.config().items()))
        if (self.data_dir / "kraft-logs" / "meta.properties").is_file():
            return props
        cmd = self._java_argv(java, libs, "kafka.tools.StorageTool",
                              "format", "-t", _cluster_id(), "-c", str(props), *self._format_args(), tool=True)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"kafka storage format failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return props

    def _format_args(self) -> list[str]:
        """Extra arguments of the storage format (a secured broker adds its SCRAM users)."""
        return []

    def _wait_serving(self, timeout: float, alive: Callable[[], bool]) -> None:
        wait_for_kafka(self.bootstrap, timeout, alive=alive)

    def start(self) -> None:
        """Resolve jars, format storage once, launch the JVM and wait until it serves metadata."""
        if self._process is not None and self._process.alive():
            return
        started = time.monotonic()
        java = ensure_java()
        libs = ensure_kafka_jars(self.version)
        ensure_port_free(self.host, self.port)
        ensure_port_free(self.host, self.controller_port)
        props = self._prepare(java, libs)
        process = ManagedProcess(
            "kafka", self._java_argv(java, libs, "kafka.Kafka", str(props)), self.log_path,
            cwd=self.data_dir,
        )
        process.start()
        self._process = process
        try:
            remaining = self.start_timeout - (time.monotonic() - started)
            wait_for_port(self.host, self.port, max(remaining, 1.0), alive=process.alive)
            remaining = self.start_timeout - (time.monotonic() - started)
            self._wait_serving(max(remaining, 1.0), process.alive)
        except (TimeoutError, RuntimeError) as exc:
            process.kill()
            self._process = None
            raise RuntimeError(
                f"Kafka broker failed to start on {self.bootstrap}: {exc}\n"
                f"--- {self.log_path} (tail) ---\n{log_tail(self.log_path)}"
            ) from exc
        log.info("Kafka %s ready on %s in %.1fs",
                 self.version, self.bootstrap, time.monotonic() - started)
