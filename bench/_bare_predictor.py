"""The ceiling ``bench/serving.py`` compares the predictor with: a bare FastAPI app that calls
the same river model in process, and nothing else.

Same routes and bodies as the predictor (``POST /v1/predict`` with ``{"id", "features"}``,
``POST /v1/predict/batch`` with ``{"instances": [...]}``) and answers of the same shape, but no
schema checks, no signed model store, no hot swaps, no predictions written to Kafka. It is
started by the bench with the predictor's own uvicorn command line (``--factory``, host,
port, ``--no-access-log``...), only the app factory differs: ``_bare_predictor:create_app``.

``BENCH_MODEL_PATH`` names the pickled model (the one published to the predictor);
``STREAMWISE_APP_SPEC`` the app spec, for ``to_model_input``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.inference import label_key


def create_app() -> FastAPI:
    spec = load_app_spec(Path(os.environ["STREAMWISE_APP_SPEC"]))
    model = pickle.loads(Path(os.environ["BENCH_MODEL_PATH"]).read_bytes())  # noqa: S301 - the bench's own file
    name = spec.model.name
    app = FastAPI(title="bare predictor (benchmark ceiling)")

    def predict(item: dict[str, Any]) -> dict[str, Any]:
        proba = model.predict_proba_one(to_model_input(spec, item["features"]))
        return {
            "id": item.get("id"),
            "prediction": max(proba, key=proba.get) if proba else None,
            "probabilities": {label_key(k): float(v) for k, v in proba.items()},
        }

    @app.post("/v1/predict")
    async def predict_one(request: Request) -> dict[str, Any]:
        return {**predict(await request.json()), "model": name, "version": 1}

    @app.post("/v1/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"model": name, "version": 1, "predictions": [predict(item) for item in body["instances"]]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
