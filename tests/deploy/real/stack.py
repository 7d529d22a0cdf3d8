"""The four services of a deployed stack, asked over HTTP the way users ask them: the same checks
for compose's published ports and for a cluster's Services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from streamwise_devstack.fraud import FraudStream
from tests.e2e.loop_client import API_KEY, wait_for

EVENT_TOPICS = ("streamwise.fraud.events", "streamwise.fraud.labels")
"""The topics the trainer learns from, whose end offsets say when everything sent is learned."""


def get_json(url: str, **kwargs: Any) -> Any:
    """The JSON of a 200 answer, or None (not up yet, not ready, or an error)."""
    try:
        response = httpx.get(url, timeout=10, headers=API_KEY, **kwargs)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@dataclass
class Stack:
    trainer: str
    ingest: str
    predictor: str
    webapp: str

    def status(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = get_json(f"{self.trainer}/v1/status")
        return found

    def served(self, predictor: str | None = None) -> dict[str, Any] | None:
        """The predictor's ``/v1/model``, with the served ``model`` and ``version`` at the top."""
        found = get_json(f"{predictor or self.predictor}/v1/model")
        return found and {**found, "model": found["meta"]["model"], "version": found["meta"]["version"]}

    def versions(self, model: str = "fraud-lr") -> list[dict[str, Any]]:
        found = get_json(f"{self.webapp}/api/v1/models/{model}/versions", params={"limit": 500})
        assert isinstance(found, list), found
        return found

    def check_learning_and_serving(self, deadline_s: float) -> None:
        """A first served version, then a newer one that learned more, and ``POST /v1/predict``
        answered by the newest version (or a newer one still)."""
        first = wait_for(lambda: (s := self.served()) and s, deadline_s, "a first served version")
        later = wait_for(lambda: (s := self.served()) and s["version"] > first["version"] and s, deadline_s, "versions advancing")
        assert later["meta"]["examples_seen"] > first["meta"]["examples_seen"]
        event = FraudStream(seed=3).take(1)[0]

        def answer() -> dict[str, Any]:
            response = httpx.post(f"{self.predictor}/v1/predict", json={"features": event.features}, timeout=10)
            assert response.status_code == 200, response.text
            answered: dict[str, Any] = response.json()
            assert answered["model"] == later["model"]
            return answered

        # Behind a Service, replicas swap each on its own announcement: the one that answers may
        # be a version behind the one asked above for a moment, never longer.
        wait_for(lambda: (a := answer())["version"] >= later["version"] and a, deadline_s, "an answer from the newest version")

    def settled(self, ends: dict[str, int]) -> dict[str, Any] | None:
        """The champion's status once its learned state reaches ``ends`` (everything consumed; the
        status names the last offset processed of each partition)."""
        status = self.status()
        if status is None or any(status["offsets"].get(key, -1) + 1 < end for key, end in ends.items()):
            return None
        return status


def parse_offsets(out: str) -> dict[str, int]:
    """``kafka-get-offsets.sh`` lines (``topic:partition:offset``) as ``{"topic:partition": offset}``."""
    ends = {}
    for line in filter(None, out.splitlines()):
        name, partition, offset = line.rsplit(":", 2)
        ends[f"{name}:{partition}"] = int(offset)
    return ends
