"""Serving: the predictor against a bare FastAPI endpoint calling the same model, same run.

The predictor runs as a real process with its production command; it serves the demo's
linear pipeline (scaler + one-hot + logistic regression, trained on 3,000 demo events),
published into its model store as the trainer does. The ceiling is ``_bare_predictor.py``:
the same model pickled to a file, ``predict_proba_one`` in a FastAPI route, started with the
predictor's exact uvicorn command line. No schema checks, no model store or swaps, no
predictions written to Kafka: what is left is HTTP, JSON and the model.

Load: ``--workers`` closed-loop clients (``bench/_load.py``: one aiohttp client and connection
each) in this process, first ``POST /v1/predict`` with one instance and an id, then
``POST /v1/predict/batch`` with ``--batch`` instances. Targets and modes are interleaved in
rounds (predictor, bare, bare, predictor, ...) so that other load on the host weighs on both.

    .venv/bin/python bench/serving.py            # 4 rounds × 5 s per target and mode
    .venv/bin/python bench/serving.py --smoke    # a few seconds, for CI
"""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Annotated, Any

import _common as c
import _load
import aiohttp
import httpx
import typer
from _common import console

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.settings import Settings
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import free_port

TARGETS = ("predictor", "bare")
MODES = ("single", "batch")
TARGET_RATIO = 0.8


def batch_request(features: list[dict[str, Any]], size: int, bodies: int = 64) -> _load.Request:
    """``POST /v1/predict/batch`` of ``size`` instances with ids (bodies encoded up front)."""
    encoded = [
        json.dumps({"instances": [{"id": f"b{b}-{k}", "features": features[(b * size + k) % len(features)]} for k in range(size)]}).encode()
        for b in range(bodies)
    ]
    headers = {"content-type": "application/json"}

    async def request(session: aiohttp.ClientSession, worker: int, i: int) -> _load.Reply:
        return await _load.post(session, "/v1/predict/batch", encoded[(worker * 7 + i) % bodies], headers)

    return request


async def measure(
    urls: dict[str, str], pids: dict[str, int], redis_url: str, prefix: str, model: Any, seen: int, settings: dict[str, Any], *,
    progress: Any, profile: Path | None = None,
) -> dict[str, Any]:
    workers, batch = settings["workers"], settings["batch"]
    store = ModelStore.from_url(redis_url, prefix, "fraud")
    try:
        await _load.Publisher(store, Signer(Settings().signing_key_map), model, seen, None).publish("small")
    finally:
        await store.close()
    async with httpx.AsyncClient(timeout=10) as probe:
        await c.wait_until(lambda: c.served_meta(probe, urls["predictor"]), 60, what="the model served")
    features = _load.feature_pool()
    requests = {"single": None, "batch": batch_request(features, batch)}

    async def run(mode: str, target: str, until: float) -> _load.LoadResult:
        return await _load.run_load(urls[target], workers, until, features, requests[mode])

    result = await c.interleaved(run, MODES, TARGETS, settings, progress=progress, pids=pids, profile=profile)
    return c.load_rows(result, {"single": 1, "batch": batch})


def report(rows: dict[str, Any], meta: dict[str, Any]) -> None:
    c.report_ab(f"serving: predictor vs bare FastAPI + the same model in process ({meta['workers']} closed-loop clients, "
                f"{meta['rounds']} rounds × {meta['block_s']:g} s per target and mode)", rows, MODES, "predictor", "bare", "pred/s", TARGET_RATIO)
    console.print(f"model alone: predict_proba_one {meta['predict_us']:.0f} µs per instance in process")


def main(
    workers: Annotated[int, typer.Option(help="Concurrent closed-loop HTTP clients")] = 8,
    batch: Annotated[int, typer.Option(help="Instances per batch request")] = 100,
    block: c.Block = None,
    rounds: c.Rounds = None,
    smoke: c.Smoke = False,
    keep_run_dir: c.KeepRunDir = False,
    profile: c.Profile = None,
) -> None:
    """Predictor requests/s and latency, single and batch, against a bare endpoint with the same model."""
    spec = _load.app_spec()
    model, seen = _load.train_small(spec)
    meta = c.ab_settings(workers=workers, batch=batch, block=block, rounds=rounds, smoke=smoke) | {
        "predict_us": _load.predict_cost_us(model, spec), "model": "demo linear pipeline, 3,000 events"}
    with c.infra(keep_run_dir=keep_run_dir) as infra:
        model_path = infra.run_dir / "model.pkl"
        model_path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        bare = c.uvicorn_spec_like("predictor", "bare", "_bare_predictor:create_app", free_port(), {"BENCH_MODEL_PATH": str(model_path)})
        with infra.services(["predictor"], extra_specs=[bare]) as svc, c.progress_bar() as progress:
            rows = asyncio.run(measure(
                {t: svc.url(t) for t in TARGETS}, {t: svc.pid(t) for t in TARGETS}, infra.redis.url, svc.prefix, model, seen, meta,
                progress=progress, profile=profile))
    report(rows, meta)
    c.write_results("serving", smoke, {"host": c.host_info(), "settings": meta, "rows": rows, "target_ratio": TARGET_RATIO})
    if any(r["failed"] for r in rows.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
