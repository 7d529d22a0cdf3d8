"""The speed benchmarks keep working: each runs in its smoke mode, prints its figures beside
its baseline and writes them; the plots are drawn from what they wrote."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
pytestmark = pytest.mark.e2e


def positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_freshness(data: dict[str, Any]) -> None:
    [run] = data["runs"]
    assert run["failed_requests"] == 0 and run["not_in_topic"] == 0
    assert run["unserved"] == 0, "every event sent must be served by a version that learned it"
    assert positive(run["achieved_eps"]) and positive(run["freshness_ms"]["p99"]) and positive(run["next_publication_ms"]["p99"])
    assert run["freshness_ms"]["n"] == run["acked"]
    assert run["kafka_hop"]["received"] == run["kafka_hop"]["events"]


def check_ab(ours: str, base: str) -> Callable[[dict[str, Any]], None]:
    def check(data: dict[str, Any]) -> None:
        rows = data["rows"]
        assert {r["target"] for r in rows.values()} == {ours, base}
        assert all(r["failed"] == 0 and positive(r["items_per_s"]) and positive(r["latency_ms"]["p99"]) for r in rows.values())

    return check


def check_memory(data: dict[str, Any]) -> None:
    first, last = data["stages"]
    assert last["events_total"] == 10 * first["events_total"]
    for stage in (first, last):
        assert all(positive(v) for v in stage["rss_mb"].values()), stage["rss_mb"]
        assert positive(stage["ingest_eps"]) and positive(stage["trainer_eps"]) and positive(stage["predict_rps"])


BENCHES = {
    "freshness": ("input and learning", check_freshness),
    "serving": ("target throughput ≥ 0.8 × bare", check_ab("predictor", "bare")),
    "ingest_throughput": ("target throughput ≥ 0.5 × raw", check_ab("ingest", "raw")),
    "memory": ("web app visitor:", check_memory),
}


@pytest.mark.parametrize("name", list(BENCHES))
def test_bench_smoke(name: str) -> None:
    marker, check = BENCHES[name]
    out = RESULTS / f"{name}-smoke.json"
    before = out.stat().st_mtime if out.exists() else 0.0
    run = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert marker in run.stdout
    assert out.stat().st_mtime > before
    check(json.loads(out.read_text()))


def test_plots_from_smoke_results(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "bench/plots.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = {"freshness": ["freshness.png", "freshness_timeline.png"], "serving": ["serving.png"],
                "ingest_throughput": ["ingest_throughput.png"], "memory": ["memory.png"]}
    for name, pngs in expected.items():
        if (RESULTS / f"{name}-smoke.json").exists():
            for png in pngs:
                assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
