"""A bad record becomes one dead letter, whatever the number of models reading it."""

from __future__ import annotations

import asyncio
import dataclasses

from streamwise_trainer.dead_letters import FirstToReach
from streamwise_trainer.learning import Rejected
from streamwise_trainer.runtime import TrainerRuntime

from .trainer_support import Clients, DeadLetters, records, runtime_without_clients


def models_sharing(claims: FirstToReach, producer: DeadLetters, n: int) -> list[TrainerRuntime]:
    """``n`` models of one app writing to the same dead-letters topic."""
    runtimes = []
    for _ in range(n):
        fakes = Clients()
        fakes.dead_letters = producer
        runtimes.append(runtime_without_clients(publish_every_n=10**6, publish_every_ms=10**6, fakes=fakes, claim=claims.claim))
    return runtimes


def test_four_models_one_dead_letter_per_bad_record_whoever_reaches_it_first() -> None:
    producer = DeadLetters()
    models = models_sharing(FirstToReach(), producer, 4)
    batch = records(models[0], 300)
    batch[40] = dataclasses.replace(batch[40], value=b"{")
    batch[250] = dataclasses.replace(batch[250], value=b'{"kind": "nonsense"}')

    async def go() -> None:
        await models[2].after_batch(await models[2].learn(batch[:100]))  # ahead of the others
        for model in models:
            for start in range(0, 300, 50):
                await model.after_batch(await model.learn(batch[start:start + 50]))

    asyncio.run(go())
    assert sorted(letter["offset"] for letter in producer.sent) == [40, 250]
    assert [m.status()["dead_letters"] for m in models] == [1, 0, 1, 0]
    assert all(letter["consumer"] == "trainer" for letter in producer.sent)


def test_a_failure_of_one_models_learning_is_its_own_dead_letter() -> None:
    producer = DeadLetters()
    first, second = models_sharing(FirstToReach(), producer, 2)
    record = records(first, 1)[0]
    failed = Rejected(record, "cannot learn: ValueError()", model_specific=True)

    async def go() -> None:
        await first.after_batch([failed])
        await second.after_batch([failed])

    asyncio.run(go())
    assert [letter["consumer"] for letter in producer.sent] == ["trainer:fraud-lr", "trainer:fraud-lr"]


def test_after_a_restart_what_the_furthest_model_had_passed_is_not_dead_lettered_again() -> None:
    claims = FirstToReach([{"t:0": 120, "u:0": 5}, {"t:0": 300}])
    runtime = runtime_without_clients()
    bad = dataclasses.replace(records(runtime, 1)[0], topic="t", partition=0)
    assert not claims.claim(dataclasses.replace(bad, offset=300))
    assert claims.claim(dataclasses.replace(bad, offset=301))
    assert claims.claim(dataclasses.replace(bad, topic="u", offset=6))
    assert claims.claim(dataclasses.replace(bad, partition=1, offset=0))
