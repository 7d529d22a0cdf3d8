"""HTTP adapters for the services the web app calls: the predictor, and every service's health
and metrics endpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streamwise_core.contracts.errors import BackendUnavailable, StreamwiseError


class UpstreamRefused(StreamwiseError):
    """The service answered with an error status; ``status`` and ``detail`` say which."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text[:300])
    except ValueError:
        return response.text[:300]


class PredictorClient:
    """Asks the predictor for the champion's predictions; every prediction is recorded by it."""

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/")

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(self._base + path, json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"predictor: {exc!r}") from exc
        if response.status_code != 200:
            raise UpstreamRefused(response.status_code, _detail(response))
        data: dict[str, Any] = response.json()
        return data

    async def predict(self, features: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"features": features}
        if event_id is not None:
            body["id"] = event_id
        return await self._post("/v1/predict", body)

    async def predict_batch(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        """``instances``: ``{"id", "features"}`` each; the answer has ``model``, ``version``, ``predictions``."""
        return await self._post("/v1/predict/batch", {"instances": instances})


Sample = tuple[str, dict[str, str], float]


def parse_metrics(text: str) -> list[Sample]:
    """Prometheus text exposition as (name, labels, value) samples."""
    return [(s.name, dict(s.labels), float(s.value)) for family in text_string_to_metric_families(text) for s in family.samples]


@dataclass
class Probe:
    """What one round of checks learned about one service."""

    name: str
    url: str
    healthy: bool = False
    ready: bool | None = None
    latency_ms: float | None = None
    problem: str | None = None
    samples: list[Sample] = field(default_factory=list)
    status: dict[str, Any] | None = None


class ServiceProber:
    """Reads ``/healthz``, ``/readyz``, ``/metrics`` (and the trainer's ``/v1/status``)."""

    def __init__(self, client: httpx.AsyncClient, admin_key: str | None) -> None:
        self._client = client
        self._admin_key = admin_key

    async def probe(self, name: str, base_url: str, *, ready_path: str | None, status_path: str | None = None) -> Probe:
        base = base_url.rstrip("/")
        probe = Probe(name, base)
        started = time.perf_counter()
        try:
            health = await self._client.get(base + "/healthz")
            probe.latency_ms = (time.perf_counter() - started) * 1000
            probe.healthy = health.status_code == 200
            if ready_path:
                probe.ready = (await self._client.get(base + ready_path)).status_code == 200
            metrics = await self._client.get(base + "/metrics")
            if metrics.status_code == 200:
                probe.samples = parse_metrics(metrics.text)
            if status_path and self._admin_key:
                status = await self._client.get(base + status_path, headers={"X-API-Key": self._admin_key})
                if status.status_code == 200:
                    probe.status = status.json()
        except (httpx.HTTPError, ValueError) as exc:
            probe.problem = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        if not probe.healthy and probe.problem is None:
            probe.problem = "health check failed"
        return probe
