"""Pulling a durable consumer on real NATS JetStream: what is there comes at once, a message
arriving at an idle consumer is handed over without waiting for a batch to fill, and the
messages are JetStream's own (ack, nak)."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from petitions.infra.pull import Puller

pytestmark = pytest.mark.integration


async def _consumer(bus, ack_wait: float = 30.0) -> tuple[str, str]:
    """A fresh durable on a subject of its own; returns (durable, subject)."""
    name = f"pull_{uuid.uuid4().hex[:8]}"
    subject = f"{bus.prefix}.pulltest.{name}"
    await bus.js.add_consumer(bus.stream, ConsumerConfig(
        durable_name=name, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait, filter_subject=subject))
    return name, subject


@contextlib.asynccontextmanager
async def _pulling(bus, durable: str) -> AsyncIterator[Puller]:
    puller = await Puller(bus.nc, bus.stream, durable).start()
    try:
        yield puller
    finally:
        await puller.stop()


async def _publish(bus, subject: str, n: int, tag: str = "m") -> None:
    for i in range(n):
        await bus.js.publish(subject, f"{tag}{i}".encode(), stream=bus.stream)


async def test_takes_what_is_there_up_to_the_batch(bus):
    durable, subject = await _consumer(bus)
    await _publish(bus, subject, 7)
    async with _pulling(bus, durable) as puller:
        first = await puller.fetch(5, wait=30)
        rest = await puller.fetch(5, wait=30)
        assert [m.data for m in first] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert [m.data for m in rest] == [b"m5", b"m6"]
        for m in first + rest:
            await m.ack()


async def test_an_idle_consumer_hands_over_the_first_message_without_filling_the_batch(bus):
    durable, subject = await _consumer(bus)
    async with _pulling(bus, durable) as puller:
        # A batch of 256 with a 60 s wait: a fetch that waited for the batch to fill (or the
        # wait to run out) would not return within the 20 s allowed here.
        fetching = asyncio.create_task(puller.fetch(256, wait=60))
        await asyncio.sleep(0.3)
        assert not fetching.done()  # nothing there yet: it waits
        await _publish(bus, subject, 3)
        msgs = await asyncio.wait_for(fetching, 20)
        assert 1 <= len(msgs) <= 3
        msgs += await asyncio.wait_for(puller.fetch(256, wait=60), 20) if len(msgs) < 3 else []
        assert sorted(m.data for m in msgs) == [b"m0", b"m1", b"m2"]
        for m in msgs:
            await m.ack()


async def test_nothing_there_returns_nothing_once_the_wait_is_over(bus):
    durable, _ = await _consumer(bus)
    async with _pulling(bus, durable) as puller:
        assert await puller.fetch(10, wait=0.2) == []


async def test_take_returns_what_is_there_and_never_waits_for_more(bus):
    durable, subject = await _consumer(bus)
    async with _pulling(bus, durable) as puller:
        # Nothing there: an empty answer, not a wait for the next message (the 20 s bound
        # only tells "returned" from "waiting for a message that never comes").
        assert await asyncio.wait_for(puller.take(10), 20) == []
        await _publish(bus, subject, 4)
        first = await asyncio.wait_for(puller.take(3), 20)
        rest = await asyncio.wait_for(puller.take(3), 20)
        assert [m.data for m in first] == [b"m0", b"m1", b"m2"]
        assert [m.data for m in rest] == [b"m3"]
        for m in first + rest:
            await m.ack()


async def test_a_nakd_message_comes_again_and_an_acked_one_does_not(bus):
    durable, subject = await _consumer(bus)
    await _publish(bus, subject, 2)
    async with _pulling(bus, durable) as puller:
        msgs = await puller.fetch(10, wait=5)
        assert [m.data for m in msgs] == [b"m0", b"m1"]
        assert msgs[0].metadata.num_delivered == 1
        await msgs[0].ack()
        await msgs[1].nak()
        again = await puller.fetch(10, wait=5)
        assert [m.data for m in again] == [b"m1"]
        assert again[0].metadata.num_delivered == 2
        await again[0].ack()
        assert await puller.fetch(10, wait=0.2) == []


async def test_two_pullers_share_a_consumer_and_each_message_goes_to_one(bus):
    durable, subject = await _consumer(bus)
    pullers = [await Puller(bus.nc, bus.stream, durable).start() for _ in range(2)]
    seen: list[bytes] = []

    async def drain(puller: Puller) -> None:
        while True:
            msgs = await puller.fetch(8, wait=0.5)
            if not msgs:
                return
            for m in msgs:
                seen.append(m.data)
                await m.ack()

    try:
        await _publish(bus, subject, 50)
        await asyncio.gather(*(drain(p) for p in pullers))
        assert sorted(seen) == sorted(f"m{i}".encode() for i in range(50))
    finally:
        for p in pullers:
            await p.stop()


async def test_a_consumer_that_is_gone_gives_nothing_and_says_so(bus, caplog):
    durable, _ = await _consumer(bus)
    async with _pulling(bus, durable) as puller:
        await bus.js.delete_consumer(bus.stream, durable)
        with caplog.at_level("WARNING", logger="petitions.infra.pull"):
            assert await puller.fetch(10, wait=0.2) == []
        # a recent server refuses the request (a status); an older one does not answer it
        said = {r.getMessage() for r in caplog.records if r.name == "petitions.infra.pull"}
        assert said & {"pull request refused", "no answer to a pull request"}
