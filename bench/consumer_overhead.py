"""Consumer overhead: a faust agent against aiokafka's batch ``getmany`` on the same topic.

Why the trainer reads Kafka itself: the same events, the same broker, in the same run, with
no work per record, so the figure is what consuming alone costs.

    python bench/consumer_overhead.py            # 50,000 records
    python bench/consumer_overhead.py --smoke    # 5,000 records, for CI
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_devstack import KafkaBroker, free_port
from streamwise_trainer.consumer import BatchConsumer
from streamwise_trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = json.dumps({"id": "x" * 36, "features": {"amount": 12.5, "merchant": "grocery", "hour": 13}}).encode()

# A faust worker that consumes the topic with one agent and prints its rate when done.
FAUST_WORKER = textwrap.dedent(
    """
    import os, sys, time, faust
    topic_name, bootstrap = os.environ["BENCH_TOPIC"], os.environ["BENCH_BOOTSTRAP"]
    total, port = int(os.environ["BENCH_TOTAL"]), int(os.environ["BENCH_PORT"])
    app = faust.App("bench-overhead", broker=f"kafka://{bootstrap}", store="memory://", web_port=port,
                    topic_disable_leader=True, consumer_auto_offset_reset="earliest",
                    key_serializer="raw", value_serializer="raw")
    topic = app.topic(topic_name, value_type=bytes)
    state = {"n": 0, "first": None}

    @app.agent(topic)
    async def consume(stream):
        async for _ in stream:
            if state["first"] is None:
                state["first"] = time.perf_counter()
            state["n"] += 1
            if state["n"] >= total:
                print(f"RATE {(total - 1) / (time.perf_counter() - state['first'])}", flush=True)
                sys.stdout.flush()
                os._exit(0)

    app.main()
    """
)


async def fill(bootstrap: str, topic: str, n: int) -> None:
    await ensure_topics(KafkaSettings(bootstrap=bootstrap), [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for _ in range(n):
            await producer.send(topic, PAYLOAD)
        await producer.flush()
    finally:
        await producer.stop()


async def getmany_rate(bootstrap: str, topic: str, n: int) -> float:
    """The trainer's own adapter (``BatchConsumer``), batches of 500."""
    consumer = BatchConsumer(
        KafkaSettings(bootstrap=bootstrap), [topic], client_id="bench-overhead",
        fetch_max_wait_ms=TrainerSettings.model_fields["fetch_max_wait_ms"].default,
    )
    await consumer.start({})
    try:
        consumed, timed, first = 0, 0, 0.0
        while consumed < n:
            batch = await consumer.next_batch({}, max_records=500, timeout_ms=100)
            consumed += len(batch)
            if batch and not first:
                first = time.perf_counter()  # timing starts when the first batch is in hand
            elif first:
                timed += len(batch)
        return timed / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def faust_rate(bootstrap: str, topic: str, n: int, work: Path) -> float:
    script = work / "faust_overhead_worker.py"
    script.write_text(FAUST_WORKER)
    done = subprocess.run(
        [sys.executable, str(script), "worker", "-l", "warn"],
        capture_output=True, text=True, timeout=600, cwd=work,
        env={**os.environ, "BENCH_TOPIC": topic, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOTAL": str(n), "BENCH_PORT": str(free_port())},
    )
    for line in (done.stdout + done.stderr).splitlines():  # faust routes print() to its log
        if "RATE " in line:
            return float(line.split("RATE ")[1].split()[0])
    raise RuntimeError(f"faust worker gave no rate (rc {done.returncode}):\n{done.stderr[-3000:]}")


def main(
    records: Annotated[int, typer.Option(help="Records on the topic")] = 50_000,
    smoke: Annotated[bool, typer.Option(help="Tiny run for CI")] = False,
) -> None:
    if smoke:
        records = 5_000
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker(Path(tmp) / "kafka") as broker:
        topic = "overhead"
        asyncio.run(fill(broker.bootstrap, topic, records))
        raw = asyncio.run(getmany_rate(broker.bootstrap, topic, records))
        agent = faust_rate(broker.bootstrap, topic, records, Path(tmp))
    table = Table(title=f"Consuming {records:,} records, no work per record (records/s)")
    for col in ("faust agent", "trainer BatchConsumer (aiokafka getmany, 500)", "faust / getmany"):
        table.add_column(col, justify="right")
    table.add_row(f"{agent:,.0f}", f"{raw:,.0f}", f"{agent / raw:.2f}")
    Console().print(table)
    out = ROOT / "bench" / "results" / f"consumer_overhead{'-smoke' if smoke else ''}.json"
    out.write_text(json.dumps({"records": records, "faust_agent": agent, "getmany": raw, "ratio": agent / raw}, indent=2))


if __name__ == "__main__":
    typer.run(main)
