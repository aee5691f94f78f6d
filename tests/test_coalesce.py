"""Coalescing concurrent calls into batches: who runs when, with whom, and what each gets."""
from __future__ import annotations

import asyncio

import pytest

from petitions.infra.coalesce import Coalescer


class Recorder:
    """A batch function that records its batches and waits to be released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [n * 10 for n in batch]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_idle_coalescer_runs_a_call_at_once_alone() -> None:
    run = Recorder()
    run.release.set()
    coalescer: Coalescer[int, int] = Coalescer(run)
    assert await coalescer.call(7) == 70
    assert run.batches == [[7]]


async def test_calls_made_while_a_batch_runs_become_the_next_batch() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=3)
    calls = [asyncio.create_task(coalescer.call(n)) for n in range(1, 6)]
    await _settle()
    assert run.batches == [[1]]  # the first ran alone; the others waited for it
    run.release.set()
    assert await asyncio.gather(*calls) == [10, 20, 30, 40, 50]
    assert run.batches == [[1], [2, 3, 4], [5]]  # at most max_batch, in call order
    assert coalescer.batches == 3


async def test_no_more_batches_run_at_once_than_allowed() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, max_batch=10, max_in_flight=2)
    calls = [asyncio.create_task(coalescer.call(n)) for n in range(4)]
    await _settle()
    assert run.batches == [[0], [1]]
    run.release.set()
    await asyncio.gather(*calls)
    assert run.batches == [[0], [1], [2, 3]]


async def test_what_a_batch_raises_every_call_of_that_batch_raises() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    first = asyncio.create_task(coalescer.call(1))
    await _settle()
    run.fail = ConnectionError("database away")
    later = [asyncio.create_task(coalescer.call(n)) for n in (2, 3)]
    await _settle()
    run.release.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    run.fail = None  # the next call runs as usual
    assert await coalescer.call(4) == 40


async def test_a_cancelled_caller_leaves_the_others_of_its_batch_answered() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run)
    first = asyncio.create_task(coalescer.call(1))
    gone, kept = (asyncio.create_task(coalescer.call(n)) for n in (2, 3))
    await _settle()
    gone.cancel()
    run.release.set()
    assert await first == 10 and await kept == 30
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_batch_answered_with_the_wrong_number_of_results_fails_its_calls() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:-1]

    coalescer: Coalescer[int, int] = Coalescer(short)
    with pytest.raises(RuntimeError, match="0 results for a batch of 1"):
        await coalescer.call(1)


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_in_flight=0)


async def test_idle_returns_once_every_request_taken_is_answered() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, max_in_flight=1)
    await coalescer.idle()  # nothing taken yet
    calls = [asyncio.create_task(coalescer.call(n)) for n in range(3)]
    await _settle()
    idle = asyncio.create_task(coalescer.idle())
    await _settle()
    assert not idle.done()  # a batch runs and two requests wait
    run.release.set()
    await idle
    assert [c.result() for c in calls] == [0, 10, 20]
    assert run.batches == [[0], [1, 2]]


async def test_abandon_answers_running_and_waiting_requests_with_the_error() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, max_in_flight=1)
    calls = [asyncio.create_task(coalescer.call(n)) for n in range(3)]
    await _settle()
    coalescer.abandon(ConnectionError("stopping"))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [str(r) for r in results] == ["stopping"] * 3
    await asyncio.wait_for(coalescer.idle(), 1)
    assert run.batches == [[0]]  # the waiting two never ran
