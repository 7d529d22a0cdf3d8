"""``streamwise up``'s pieces that need no server: the restart backoff, the supervisor, the run
folder's lock, its ports and state, and what ``--fresh`` deletes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from streamwise_devstack.local_run import LocalRun, RunOptions
from streamwise_devstack.run_folder import (
    AlreadyRunning,
    Broker,
    PidLock,
    PortTaken,
    RunPaths,
    RunState,
    StartFailed,
    plan_ports,
    port_holder,
    preferred_ports,
    use_client_env,
)
from streamwise_devstack.supervisor import (
    Backoff,
    BackoffPolicy,
    Supervisor,
    describe_exit,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the backoff policy ---------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(first_s=1, factor=2, max_s=30, reset_after_s=60), clock)
    delays = []
    for _ in range(8):
        backoff.started()
        clock.advance(0.5)  # crashes again at once
        delays.append(backoff.exited())
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.restarts == 8


def test_backoff_starts_over_after_the_child_stayed_up_long_enough() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(first_s=1, max_s=30, reset_after_s=60), clock)
    for _ in range(4):
        backoff.started()
        clock.advance(1)
        backoff.exited()  # 1, 2, 4, 8
    backoff.started()
    clock.advance(59.9)
    assert backoff.exited() == 16  # not up for long enough
    backoff.started()
    clock.advance(60)
    assert backoff.exited() == 1
    backoff.started()
    clock.advance(1)
    assert backoff.exited() == 2


def test_an_exit_without_a_start_does_not_reset() -> None:
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(), clock)
    assert backoff.exited() == 1
    clock.advance(3600)  # a restart that failed to start: no started() in between
    assert backoff.exited() == 2


@pytest.mark.parametrize("policy", [
    {"first_s": 0}, {"factor": 0.5}, {"first_s": 10, "max_s": 5}, {"reset_after_s": -1},
])
def test_a_backoff_policy_that_makes_no_sense_is_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**policy)


def test_exits_are_described_with_the_signal() -> None:
    assert describe_exit(-9) == "-9 (SIGKILL)"
    assert describe_exit(-15) == "-15 (SIGTERM)"
    assert describe_exit(1) == "1"
    assert describe_exit(0) == "0"


# --- the supervisor -------------------------------------------------------------------------


class FakeChild:
    def __init__(self, name: str) -> None:
        self.name = name
        self.pid: int | None = 100
        self.code: int | None = None
        self.fail_starts = 0
        self.starts = 0

    def poll(self) -> int | None:
        return self.code

    def restart(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port 9092 is taken\n(log tail)")
        self.starts += 1
        self.code = None
        assert self.pid is not None
        self.pid += 1


@pytest.fixture
def watched() -> Iterator[tuple[Supervisor, FakeChild, FakeChild, FakeClock, list[str]]]:
    clock, lines = FakeClock(), list[str]()
    trainer, ingest = FakeChild("trainer"), FakeChild("ingest")
    supervisor = Supervisor([trainer, ingest], BackoffPolicy(first_s=1, max_s=30, reset_after_s=60),
                            clock=clock, report=lines.append)
    yield supervisor, trainer, ingest, clock, lines


def test_a_child_that_exits_is_restarted_after_its_backoff(watched) -> None:  # type: ignore[no-untyped-def]
    supervisor, trainer, ingest, clock, lines = watched
    assert supervisor.check() is False and lines == []
    trainer.code = -9
    assert supervisor.check() is True
    assert lines == ["trainer exited with -9 (SIGKILL); restarting in 1s (restart 1)"]
    assert supervisor.pending() == ["trainer"]
    assert supervisor.next_check_in(idle_s=5) == 1
    clock.advance(0.5)
    supervisor.check()
    assert trainer.starts == 0  # not due yet
    clock.advance(0.5)
    assert supervisor.check() is True
    assert trainer.starts == 1 and lines[-1] == "trainer restarted (pid 101)"
    assert supervisor.pending() == [] and ingest.starts == 0
    assert supervisor.restarts == {"trainer": 1, "ingest": 0}


def test_a_child_that_keeps_crashing_waits_longer_each_time(watched) -> None:  # type: ignore[no-untyped-def]
    supervisor, trainer, _, clock, lines = watched
    for _ in range(3):
        trainer.code = 1
        supervisor.check()
        clock.advance(supervisor.next_check_in(idle_s=100))
        supervisor.check()
    assert [line for line in lines if "exited" in line] == [
        "trainer exited with 1; restarting in 1s (restart 1)",
        "trainer exited with 1; restarting in 2s (restart 2)",
        "trainer exited with 1; restarting in 4s (restart 3)",
    ]
    clock.advance(60)  # up for a while: the next crash is a first one again
    trainer.code = 1
    supervisor.check()
    assert lines[-1] == "trainer exited with 1; restarting in 1s (restart 4)"


def test_a_restart_that_fails_is_tried_again_after_a_longer_wait(watched) -> None:  # type: ignore[no-untyped-def]
    supervisor, _, ingest, clock, lines = watched
    ingest.code, ingest.fail_starts = -15, 1
    supervisor.check()
    clock.advance(1)
    supervisor.check()
    assert lines[-1] == "ingest did not start (port 9092 is taken); restarting in 2s (restart 2)"
    clock.advance(2)
    supervisor.check()
    assert ingest.starts == 1 and lines[-1] == "ingest restarted (pid 101)"


# --- the lock -------------------------------------------------------------------------------


def test_the_lock_keeps_a_second_up_out_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "up.pid"
    with PidLock(path) as first:
        assert first.held and path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning) as refused:
            PidLock(path).acquire()
        assert refused.value.pid == os.getpid()
    assert not path.exists()
    with PidLock(path):  # free again
        pass


def test_a_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "up.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom streamwise_devstack.run_folder import PidLock\n"
         "lock = PidLock(Path(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning) as refused:
            PidLock(path).acquire()
        assert refused.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    lock = PidLock(path)  # its owner died: the kernel dropped the lock, the file is stale
    lock.acquire()
    assert lock.stale_pid == holder.pid
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "up.pid"
    path.write_text(f"{dead.pid}\n")
    lock = PidLock(path)
    lock.acquire()
    assert lock.stale_pid == dead.pid
    lock.release()
    lock.release()  # idempotent


# --- ports ----------------------------------------------------------------------------------


def test_the_default_ports_and_a_base() -> None:
    assert preferred_ports(None) == {"webapp": 8000, "ingest": 8001, "predictor": 8002, "trainer": 8003,
                                     "kafka": 9092, "controller": 9093, "redis": 6379}
    assert list(preferred_ports(20000).values()) == list(range(20000, 20007))


def test_saved_ports_are_reused_and_a_taken_one_moves_unless_fixed() -> None:
    preferred = {"ingest": 8001, "kafka": 9092, "controller": 9093}
    saved = {"ingest": 41001, "kafka": 41092, "controller": 41093}
    taken = {41001}
    free = iter([50001, 50002])
    ports, notes = plan_ports(preferred, saved, fixed=frozenset({"kafka", "controller"}),
                              is_free=lambda p: p not in taken, pick=lambda: next(free), holder=lambda p: "nginx (pid 7)")
    assert ports == {"ingest": 50001, "kafka": 41092, "controller": 41093}
    assert notes == ["port 41001 (ingest) is taken by nginx (pid 7): using 50001"]
    taken.add(41093)
    with pytest.raises(PortTaken) as refused:
        plan_ports(preferred, saved, fixed=frozenset({"kafka", "controller"}),
                   is_free=lambda p: p not in taken, pick=lambda: 1, holder=lambda p: "java (pid 9)")
    assert str(refused.value) == "port 41093 (Kafka's KRaft controller) is taken by java (pid 9)"


def test_the_holder_of_a_port_is_named() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        holder = port_holder(port)
    assert holder is not None and holder.endswith(f"(pid {os.getpid()})")


# --- the run folder -------------------------------------------------------------------------


def _run(tmp_path: Path, **options: object) -> tuple[LocalRun, Console]:
    console = Console(record=True, width=200)
    base = _free_base()
    opts = RunOptions(app_spec=tmp_path / "spec.toml", run_dir=tmp_path / "run", port_base=base, **options)  # type: ignore[arg-type]
    return LocalRun(opts, console), console


def _free_base() -> int:
    for base in range(24000, 30000, 10):
        try:
            for port in range(base, base + 7):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no 7 free ports in a row")


def test_a_new_run_folder_keeps_its_ports_and_counts_its_runs(tmp_path: Path) -> None:
    local, console = _run(tmp_path)
    local.prepare()
    local.lock.release()
    first = RunState.load(local.paths.state)
    assert first is not None and first.runs == 1 and first.broker == "kafka"
    assert "(new)" in console.export_text()
    again, console = _run(tmp_path)  # another base: the saved ports win
    again.prepare()
    again.lock.release()
    second = RunState.load(again.paths.state)
    assert second is not None and second.ports == first.ports and second.runs == 2
    assert "resuming after 1 run" in console.export_text()


def test_fresh_says_what_it_deletes_and_keeps_the_lock(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    (paths.kafka / "kraft-logs").mkdir(parents=True)
    paths.registry.write_text("rows")
    paths.state.write_text("{broken")  # --fresh does not read it
    local, console = _run(tmp_path, fresh=True)
    local.prepare()
    try:
        shown = console.export_text()
        assert "--fresh: deleting" in shown
        assert f"{paths.kafka}  (Kafka's log" in shown and f"{paths.registry}  (the registry" in shown
        assert not paths.kafka.exists() and not paths.registry.exists()
        assert paths.lock.exists()
        state = RunState.load(paths.state)
        assert state is not None and state.runs == 1 and state.demo_sent == 0
    finally:
        local.lock.release()


def test_a_kafka_run_folder_is_not_wiped_by_tansu_unless_fresh(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    RunState(broker="kafka", ports={}, runs=1).save(paths.state)
    local, _ = _run(tmp_path, broker=Broker.TANSU)
    with pytest.raises(StartFailed, match="holds a kafka run"):
        local.prepare()
    local.lock.release()
    assert paths.state.exists()


def test_tansu_starts_fresh_every_time(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    RunState(broker="tansu", ports={}, runs=4).save(paths.state)
    paths.registry.write_text("rows")
    local, console = _run(tmp_path, broker=Broker.TANSU)
    local.prepare()
    local.lock.release()
    assert "Tansu keeps its topics in memory only, so this run starts fresh" in console.export_text()
    assert not paths.registry.exists()
    state = RunState.load(paths.state)
    assert state is not None and state.runs == 1 and "controller" not in state.ports


def test_a_broken_state_file_is_named(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    for broken in ("{not json", '{"ports": {}}', '["a list"]'):
        paths.state.write_text(broken)
        with pytest.raises(StartFailed, match="state.json is not a state file"):
            RunState.load(paths.state)


def test_a_second_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    first, _ = _run(tmp_path)
    first.prepare()
    try:
        second, _ = _run(tmp_path)
        with pytest.raises(AlreadyRunning) as refused:
            second.prepare()
        assert refused.value.pid == os.getpid()
    finally:
        first.lock.release()


def test_the_users_command_finds_the_local_run_unless_told_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = RunPaths(tmp_path)
    paths.client_env.write_text("# comment\nSTREAMWISE_DATABASE_URL=sqlite:///x.db\nSTREAMWISE_REDIS_URL=redis://h:1/0\n")
    monkeypatch.delenv("STREAMWISE_DATABASE_URL", raising=False)
    monkeypatch.setenv("STREAMWISE_REDIS_URL", "redis://mine:2/0")
    assert use_client_env(tmp_path) == {"STREAMWISE_DATABASE_URL": "sqlite:///x.db"}
    assert os.environ["STREAMWISE_REDIS_URL"] == "redis://mine:2/0"
    monkeypatch.setenv("STREAMWISE_DATABASE_URL", "sqlite:///other.db")
    monkeypatch.delenv("STREAMWISE_REDIS_URL")
    assert use_client_env(tmp_path) == {}  # a registry named: nothing of the local run is used
    assert "STREAMWISE_REDIS_URL" not in os.environ
    assert use_client_env(tmp_path / "none") == {}


def test_the_state_file_round_trips(tmp_path: Path) -> None:
    state = RunState(broker="kafka", ports={"kafka": 9092}, runs=2, demo_sent=40)
    state.save(tmp_path / "state.json")
    assert RunState.load(tmp_path / "state.json") == state
    assert json.loads((tmp_path / "state.json").read_text())["version"] == 1
    assert RunState.load(tmp_path / "missing.json") is None


def test_a_failing_step_names_its_component(tmp_path: Path) -> None:
    local, console = _run(tmp_path)

    def resolve() -> Path:
        raise RuntimeError("`mvn ... copy-dependencies` failed (exit 1):\nCould not resolve kafka_2.13:4.1.1")

    with pytest.raises(StartFailed) as failed:
        local._step("Kafka jars", resolve, lambda libs: f"jars in {libs}")
    assert failed.value.component == "Kafka jars" and "Could not resolve" in failed.value.message
    assert local._step("Redis", lambda: 7, lambda n: f"Redis {n}") == 7
    assert "✓ Redis 7" in console.export_text()


def test_up_exits_2_naming_what_failed_and_frees_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamwise_devstack import local_run

    def start(self: LocalRun) -> None:
        raise StartFailed("Java", "Kafka 4 needs Java >= 17, found Java 11 at /usr/bin/java")

    monkeypatch.setattr(local_run.LocalRun, "start", start)
    console = Console(record=True, width=200)
    options = RunOptions(app_spec=tmp_path / "spec.toml", run_dir=tmp_path / "run", port_base=_free_base())
    assert local_run.run(options, console) == 2
    assert "✗ Java failed: Kafka 4 needs Java >= 17" in console.export_text()
    assert not RunPaths(tmp_path / "run").lock.exists()


def test_up_refuses_to_run_twice_on_one_folder(tmp_path: Path) -> None:
    from streamwise_devstack import local_run

    options = RunOptions(app_spec=tmp_path / "spec.toml", run_dir=tmp_path / "run", port_base=_free_base())
    with PidLock(RunPaths(tmp_path / "run").lock):
        console = Console(record=True, width=200)
        assert local_run.run(options, console) == 1
    shown = console.export_text()
    assert f"streamwise up is already running (pid {os.getpid()})" in shown and "stop it with Ctrl-C there" in shown
