"""HTTP-only client of a running suite, with deadlines instead of guessed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from streamwise_devstack.fraud import GeneratedEvent

T = TypeVar("T")
API_KEY = {"X-API-Key": "dev-api-key"}


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class LoopClient:
    def __init__(self, ingest: str, predictor: str) -> None:
        self.ingest = httpx.Client(base_url=ingest, headers=API_KEY, timeout=30)
        self.predictor = httpx.Client(base_url=predictor, timeout=30)

    def send(self, events: list[GeneratedEvent], *, with_labels: bool = True, batch: int = 500) -> None:
        for k in range(0, len(events), batch):
            body = [
                {"id": e.id, "features": e.features, **({"label": e.label} if with_labels else {})}
                for e in events[k : k + batch]
            ]
            r = self.ingest.post("/v1/events", json=body)
            assert r.status_code == 202, r.text
            assert r.json()["ids"] == [e.id for e in events[k : k + batch]]

    def label(self, event_id: str, label: bool) -> None:
        r = self.ingest.post("/v1/labels", json=[{"id": event_id, "label": label}])
        assert r.status_code == 202, r.text

    def served(self) -> dict[str, Any] | None:
        r = self.predictor.get("/v1/model")
        return r.json() if r.status_code == 200 else None

    def examples_seen(self) -> int:
        served = self.served()
        return served["meta"]["examples_seen"] if served else 0

    def wait_examples(self, n: int, timeout_s: float = 120) -> dict[str, Any]:
        return wait_for(lambda: (s := self.served()) and s["meta"]["examples_seen"] >= n and s, timeout_s, f"{n} examples served")

    def accuracy(self, events: list[GeneratedEvent]) -> float:
        r = self.predictor.post(
            "/v1/predict/batch", json={"instances": [{"features": e.features} for e in events]}
        )
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        return sum(p["prediction"] == e.label for p, e in zip(predictions, events, strict=True)) / len(events)
