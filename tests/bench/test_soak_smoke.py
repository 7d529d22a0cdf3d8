"""The soak benchmark keeps working: a minute of it on the whole suite gives sane figures, the versions
advance, retention keeps the blobs in Redis within its bound, and its chart is drawn. Flatness itself
(last / first ≤ 1.1) needs the full run's minutes: a minute cannot show it reliably."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "results" / "soak-smoke.json"
BLOB_MARGIN = 5
"""Versions published between the last pruning and a sample (pruning runs after each publication)."""
pytestmark = pytest.mark.e2e


def positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_soak(data: dict[str, Any]) -> None:
    settings, samples, verdict = data["settings"], data["samples"], data["verdict"]
    assert len(samples) >= 10
    for s in samples[verdict["first_index"]:]:
        assert positive(s["redis"]["used_memory"]) and positive(s["redis"]["keys"]), s["redis"]
        assert positive(s["registry"]["bytes"]) and positive(s["registry"]["rows"]["model_versions"]), s["registry"]
        assert positive(sum(s["kafka"].values())) and positive(s["kafka"]["events"]), s["kafka"]
        assert all(positive(v) for v in s["rss_mb"].values()), s["rss_mb"]
        for model, blobs in s["redis"]["blobs"].items():
            assert blobs <= settings["blob_bound"] + BLOB_MARGIN, f"{model}: {blobs} version blobs in Redis at t={s['t']:.0f}s"
    assert {"ingest RSS MB", "trainer RSS MB", "predictor RSS MB", "webapp RSS MB", "Redis used_memory MB",
            "registry MB on disk", "Kafka log MB on disk"} <= set(verdict["curves"])
    assert all(positive(r["first"]) and positive(r["last"]) and positive(r["ratio"]) for r in verdict["curves"].values())
    assert verdict["advancing"] and sum(verdict["events_learned"].values()) > 0
    assert verdict["bounds"]["registry rows"]["within"], verdict["bounds"]
    assert {"fraud-lr", "fraud-tree", "fraud-batch"} <= set(samples[-1]["models"]), "the lifecycle spec's models all learn"
    retention_ms = str(int(settings["topic_retention_s"] * 1000))
    deleting = {topic: cfg for topic, cfg in data["topic_configs"].items() if not topic.endswith(".models")}
    assert all(cfg["retention.ms"] == retention_ms for cfg in deleting.values()), deleting
    assert data["stream"]["sent"] > 0 and data["predictions"]["ok"] > 0 and data["predictions"]["failed"] == 0
    assert len(data["series"]["t"]) == len(samples)


def test_soak_smoke(tmp_path: Path) -> None:
    before = OUT.stat().st_mtime if OUT.exists() else 0.0
    run = subprocess.run([sys.executable, "bench/soak.py", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "versions advanced after the warm-up" in run.stdout
    assert OUT.stat().st_mtime > before
    check_soak(json.loads(OUT.read_text()))

    plots = subprocess.run(
        [sys.executable, "bench/plots.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert plots.returncode == 0, plots.stderr[-3000:]
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
