"""The uninterrupted run, in a fresh interpreter (so with another hash seed than the trainer's).

``python -m tests.e2e.reference_run BOOTSTRAP PREFIX N`` learns the first N records of the
events topic with one pure ``Trainer`` and prints its metrics and probe predictions as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.schema import to_model_input
from streamwise_devstack.fraud import holdout
from streamwise_trainer.learning import Record, Trainer

from .conftest import APP_SPEC


def probe_inputs() -> list[dict[str, float | str]]:
    spec = load_app_spec(APP_SPEC)
    return [to_model_input(spec, e.features) for e in holdout(200, seed=3, after_drift=True)]


async def replay(bootstrap: str, topics: Topics, n: int) -> Trainer:
    trainer = Trainer(load_app_spec(APP_SPEC), topics)
    consumer = AIOKafkaConsumer(topics.events, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen = 0
        while seen < n:
            for messages in (await consumer.getmany(timeout_ms=2000)).values():
                for m in messages[: n - seen]:
                    if trainer.handle(Record(m.topic, m.partition, m.offset, m.key, m.value)) is not None:
                        raise SystemExit(f"record {m.offset} was rejected")
                    seen += 1
    finally:
        await consumer.stop()
    return trainer


def main() -> None:
    bootstrap, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    trainer = asyncio.run(replay(bootstrap, Topics.for_app(prefix, "fraud"), n))
    model = trainer.state.learner.model
    json.dump(
        {
            "examples_seen": trainer.examples_seen,
            "learned_digest": trainer.state.learned_digest,
            "metrics": trainer.state.learner.metrics.snapshot(),
            "probe": [model.predict_proba_one(x)[True] for x in probe_inputs()],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
