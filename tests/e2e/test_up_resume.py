"""``streamwise up`` for real, as a subprocess on a private run folder and free ports: it learns the
demo, refuses a second ``up``, resumes after a stop (versions, examples learned once, people, API
keys, audit log), restarts whatever is killed, and stops everything it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwise_devstack.fraud import FraudStream

from .conftest import ROOT
from .loop_client import API_KEY, wait_for

pytestmark = pytest.mark.e2e
DEMO_EVENTS = 2_000
MODELS = ("fraud-lr", "fraud-tree", "fraud-batch")  # the spec's: a drift challenger starts later
DEADLINE = 180.0  # generous: a busy 2-core machine
WIDE = {**os.environ, "COLUMNS": "400"}  # rich wraps no line of up's output


def _free_base() -> int:
    """Seven free ports in a row, below Linux's ephemeral range (outgoing connections never take
    them between two starts of ``up``)."""
    for _ in range(200):
        base = 20_000 + int.from_bytes(os.urandom(2), "big") % 12_000
        try:
            for port in range(base, base + 7):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no 7 free ports in a row")


def _get(url: str, **kw: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kw)
    except httpx.HTTPError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by its parent) has exited
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Up:
    """One run folder and the ``up`` process running on it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.port_base = _free_base()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = run_dir.parent / "up.log"
        self.runs = 0

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "streamwise_devstack.cli", "up", "--run-dir", str(self.run_dir),
                "--port-base", str(self.port_base), *args]

    def start(self, *args: str) -> dict[str, Any]:
        self.runs += 1
        with open(self.log, "ab") as out:
            out.write(f"\n===== up #{self.runs}: {' '.join(args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv(*args), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, env=WIDE)
        return self.wait_serving()

    def status(self) -> dict[str, Any] | None:
        try:
            status = json.loads((self.run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return None
        return status if self.proc is not None and status.get("pid") == self.proc.pid else None

    def wait_serving(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n{self.output()[-6000:]}")
            status = self.status()
            if status is None or len(status["urls"]) < 4:
                return None
            return status if all(self.healthy(name) for name in status["urls"]) else None

        return wait_for(ready, DEADLINE, "up to serve", interval_s=0.5)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port_base + ('webapp', 'ingest', 'predictor', 'trainer').index(name)}"

    def healthy(self, name: str) -> bool:
        r = _get(f"{self.url(name)}/healthz")
        return r is not None and r.status_code == 200

    def trainer(self) -> dict[str, Any] | None:
        r = _get(f"{self.url('trainer')}/v1/status", headers=API_KEY)
        return r.json() if r is not None and r.status_code == 200 else None

    def learned(self) -> dict[str, tuple[int, int]] | None:
        """Each spec model's (examples seen, version), once all three report."""
        status = self.trainer()
        if status is None or not all(m in status.get("models", {}) for m in MODELS):
            return None
        return {m: (status["models"][m]["examples_seen"], status["models"][m]["version"]) for m in MODELS}

    def wait_learned(self, n: int) -> dict[str, tuple[int, int]]:
        """Wait until every model learned exactly ``n`` examples (none published pending)."""
        def done() -> dict[str, tuple[int, int]] | None:
            learned = self.learned()
            if learned is None:
                return None
            over = {m: seen for m, (seen, _) in learned.items() if seen > n}
            assert not over, f"more examples learned than sent ({n}): {over}"
            return learned if all(seen == n for seen, _ in learned.values()) else None

        return wait_for(done, DEADLINE, f"every model to learn {n} examples", interval_s=0.5)

    def send(self, n: int) -> None:
        events = FraudStream(seed=3, run_id=f"e2e-{uuid.uuid4().hex[:8]}").take(n)
        body = [{"id": e.id, "features": e.features, "label": e.label} for e in events]
        r = httpx.post(f"{self.url('ingest')}/v1/events", json=body, headers=API_KEY, timeout=60)
        assert r.status_code == 202, r.text

    def stop(self, sig: int = signal.SIGINT) -> None:
        assert self.proc is not None
        status = self.status()
        pids = [p for p in (status or {}).get("pids", {}).values() if p]
        self.proc.send_signal(sig)
        assert self.proc.wait(timeout=DEADLINE) == 0, self.output()[-4000:]
        assert [p for p in pids if _alive(p)] == [], "up left processes running"
        assert not (self.run_dir / "up.pid").exists() and not (self.run_dir / "status.json").exists()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill_and_wait_restart(self, name: str) -> dict[str, Any]:
        status = self.status()
        assert status is not None
        old, restarts = status["pids"][name], status["restarts"][name]
        os.kill(old, signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            now = self.status()
            if now is None or now["pids"][name] in (None, old) or now["restarts"][name] <= restarts:
                return None
            return now if all(self.healthy(n) for n in now["urls"]) else None

        return wait_for(restarted, DEADLINE, f"{name} to be restarted", interval_s=0.5)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    run = Up(tmp_path_factory.mktemp("up") / "run")
    yield run
    if run.proc is not None and run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


def _running(up: Up) -> Up:
    """``up`` running (started without the demo if an earlier test left it stopped)."""
    if up.proc is None or up.proc.poll() is not None:
        up.start("--no-demo")
    return up


def test_up_learns_the_demo_once_and_refuses_a_second_up(up: Up) -> None:
    status = up.start("--total", str(DEMO_EVENTS), "--rate", "0")
    assert status["broker"] == "kafka" and status["bootstrap"] == f"127.0.0.1:{up.port_base + 4}"
    wait_for(lambda: (s := up.status()) and (s["demo"] or {}).get("finished"), DEADLINE, "the demo to finish")
    assert up.status()["demo"] == {"finished": True, "sent": DEMO_EVENTS, "error": None}  # type: ignore[index]
    up.wait_learned(DEMO_EVENTS)
    out = up.output()
    assert "✓ Kafka 4.1.1 on 127.0.0.1:" in out and "✓ trainer on http://127.0.0.1:" in out

    second = subprocess.run(up.argv("--no-demo"), cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE, env=WIDE)
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"streamwise up is already running (pid {up.proc.pid})" in second.stdout  # type: ignore[union-attr]
    assert "stop it with Ctrl-C there" in second.stdout
    assert up.proc is not None and up.proc.poll() is None  # the first one runs on


def test_a_restarted_up_resumes_models_people_keys_and_audit(up: Up) -> None:
    _running(up)
    before = up.wait_learned(DEMO_EVENTS)
    sent = DEMO_EVENTS
    webapp = httpx.Client(base_url=up.url("webapp"), headers=API_KEY, timeout=30)
    # a person through the web app, one through `streamwise users`, and an API key
    person = f"ann{uuid.uuid4().hex[:6]}"
    r = webapp.post("/api/v1/users", json={"username": person, "password": "ann-password-123", "role": "operator"})
    assert r.status_code == 201, r.text
    cli_person = f"bob{uuid.uuid4().hex[:6]}"
    added = subprocess.run(
        [sys.executable, "-m", "streamwise_devstack.cli", "users", "add", cli_person, "-r", "viewer", "--password-env", "PW"],
        cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE,
        env={**{k: v for k, v in os.environ.items() if k != "STREAMWISE_DATABASE_URL"},
             "STREAMWISE_RUN_DIR": str(up.run_dir), "PW": "bob-password-123"},
    )
    assert added.returncode == 0 and f"added {cli_person}" in added.stdout, added.stdout + added.stderr
    r = webapp.post("/api/v1/api-keys", json={"name": f"bot{uuid.uuid4().hex[:6]}", "role": "viewer"})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    audit_before = webapp.get("/api/v1/audit", params={"limit": 500}).json()
    served_before = _get(f"{up.url('predictor')}/v1/model")
    assert served_before is not None and served_before.status_code == 200
    assert any(e["action"] == "user_added" and e["details"].get("username") == person for e in audit_before["items"])
    webapp.close()

    up.stop(signal.SIGINT)
    status = up.start("--no-demo")
    assert "resuming after" in up.output()
    # restored, not reset: the same examples, versions from where they were; nothing learned again
    after = up.wait_learned(sent)
    for model, (_, version) in before.items():
        assert after[model][1] >= version, f"{model} went back from v{version} to v{after[model][1]}"
    with httpx.Client(base_url=status["urls"]["webapp"], headers=API_KEY, timeout=30) as webapp:
        users = {u["username"] for u in webapp.get("/api/v1/users").json()}
        assert {person, cli_person, "viewer", "operator", "admin"} <= users
        assert httpx.get(f"{up.url('webapp')}/api/v1/me", headers={"X-API-Key": key}, timeout=30).status_code == 200
        audit_after = webapp.get("/api/v1/audit", params={"limit": 500}).json()
        assert audit_after["total"] >= audit_before["total"]
        assert {e["id"] for e in audit_before["items"]} <= {e["id"] for e in audit_after["items"]}

    up.send(700)
    sent += 700
    learned = up.wait_learned(sent)  # exactly 700 more
    for model in ("fraud-lr", "fraud-tree"):  # each new batch of examples makes online models publish
        assert learned[model][1] > before[model][1]
    served = _get(f"{up.url('predictor')}/v1/model")
    assert served is not None and served.status_code == 200
    meta, meta_before = served.json()["meta"], served_before.json()["meta"]
    if meta["model"] == meta_before["model"]:  # (unless a challenger took over meanwhile)
        assert meta["version"] >= meta_before["version"]


def test_up_restarts_each_killed_service_and_learning_goes_on_once(up: Up) -> None:
    _running(up)
    learned = up.learned()
    assert learned is not None
    sent = learned["fraud-lr"][0]
    up.wait_learned(sent)
    for name in ("trainer", "ingest", "predictor", "webapp"):
        up.kill_and_wait_restart(name)
        assert f"{name} exited with -9 (SIGKILL); restarting in 1s (restart 1)" in up.output()
        up.send(300)
        sent += 300
        up.wait_learned(sent)


def test_up_restarts_a_killed_redis_and_kafka(up: Up) -> None:
    _running(up)
    learned = up.learned()
    assert learned is not None
    sent = learned["fraud-lr"][0]
    for name in ("redis", "kafka"):
        up.kill_and_wait_restart(name)
        assert f"{name} exited with -9 (SIGKILL); restarting in 1s (restart 1)" in up.output()

        def accepted() -> bool:  # the services reconnect in their own time
            try:
                up.send(200)
            except (AssertionError, httpx.HTTPError):
                return False
            return True

        wait_for(accepted, DEADLINE, f"ingest to accept events after {name} came back", interval_s=1.0)
        sent += 200
        up.wait_learned(sent)


def test_sigterm_stops_everything_up_started(up: Up) -> None:
    _running(up)
    up.stop(signal.SIGTERM)
    assert "stopped trainer, ingest, predictor, webapp, Redis, Kafka" in up.output()


def test_a_component_that_fails_is_named_and_what_started_is_stopped(tmp_path: Path) -> None:
    spec = tmp_path / "broken.toml"
    spec.write_text('name = "broken"\n')
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "streamwise_devstack.cli", "up", "--broker", "tansu", "--run-dir", str(run_dir),
         "--port-base", str(_free_base()), "--app-spec", str(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE, env=WIDE,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Tansu: keeps its topics in memory only" in done.stdout
    assert "✗ trainer failed" in done.stdout and "invalid application spec" in done.stdout
    assert "stopped " in done.stdout and "Redis, Tansu" in done.stdout
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _in_folder(p, run_dir)]
    assert leftovers == [], "processes of the failed run still run"


def _in_folder(proc: Path, folder: Path) -> bool:
    try:
        cwd = os.readlink(proc / "cwd")
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return cwd.startswith(str(folder)) or str(folder) in cmdline


def test_the_demo_streams_on_while_ingest_restarts(tmp_path: Path) -> None:
    run = Up(tmp_path / "run")
    try:
        run.start("--broker", "tansu", "--rate", "300")

        def seen() -> int:
            learned = run.learned()
            return learned["fraud-lr"][0] if learned else 0

        wait_for(lambda: seen() > 0, DEADLINE, "the demo's first examples learned", interval_s=0.5)
        run.kill_and_wait_restart("ingest")
        after = seen()
        wait_for(lambda: seen() >= after + 600, DEADLINE, "the demo to go on through the new ingest", interval_s=0.5)
        status = run.status()
        assert status is not None and status["demo"] == {"finished": False, "sent": None, "error": None}
    finally:
        if run.proc is not None:
            run.stop(signal.SIGINT)
    out = run.output()
    assert "demo stream stopped" not in out and "nothing is kept (Tansu)" in out
