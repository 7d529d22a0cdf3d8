"""The benchmarks keep working: each runs in its smoke mode and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_learning_throughput_smoke(tmp_path: Path) -> None:
    out = ROOT / "bench" / "results" / "learning_throughput-smoke.json"
    before = out.stat().st_mtime if out.exists() else 0.0
    run = subprocess.run(
        [sys.executable, "bench/learning_throughput.py", "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "river in-process (limit)" in run.stdout
    rows = json.loads(out.read_text())
    assert out.stat().st_mtime > before
    assert rows and all(r["trainer_eps"] > 0 and r["river_eps"] > 0 for r in rows)


def test_model_growth_smoke() -> None:
    """The blob sizes behind docs/retention.md's tree cap: a short run prints one row per step."""
    run = subprocess.run(
        [sys.executable, "bench/model_growth.py", "--examples", "3000", "--every", "1000", "--copy-every", "500"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(f"{k:,}" in run.stdout for k in (1000, 2000, 3000)), run.stdout
