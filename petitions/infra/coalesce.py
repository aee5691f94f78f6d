"""Concurrent requests' statements coalesced into one round trip per batch.

On a busy service every statement costs its client a pool checkout, the protocol and a few
task switches, and costs the server a transaction, a snapshot and the execution of a bound
statement; a statement taking the requests of a batch as arrays pays those once per batch.

No artificial delay: an idle `Coalescer` runs a request at once, alone. While `max_in_flight`
batches are running, new requests queue, and the first batch to finish starts the next one
with whatever queued meanwhile (up to `max_batch`). At shutdown, `idle` waits until every
request taken has been answered; `abandon` answers those left with an error.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]], *,
                 max_batch: int = 100, max_in_flight: int = 1) -> None:
        """`run_batch` answers a batch of requests with one result per request, in order;
        whatever it raises is raised to every request of the batch."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        # Each running batch's task (a strong reference until it is done) and its answers.
        self._running: dict[asyncio.Task[None], list[asyncio.Future[R]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0  # run so far, for tests and metrics

    async def call(self, request: T) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._idle.clear()
        if len(self._running) < self.max_in_flight:
            self._start_batch()
        # A caller cancelled here leaves its request in the batch: its answer is dropped.
        return await answer

    async def idle(self) -> None:
        """Return once no request waits and no batch runs."""
        await self._idle.wait()

    def abandon(self, exc: Exception) -> None:
        """Answer every request not answered yet with `exc`, and cancel the running batches."""
        answers = [answer for _, answer in self._waiting]
        self._waiting.clear()
        for task, batch_answers in self._running.items():
            answers += batch_answers
            task.cancel()
        for answer in answers:
            if not answer.done():
                answer.set_exception(exc)
        if not self._running:
            self._idle.set()

    def _start_batch(self) -> None:
        n = min(self.max_batch, len(self._waiting))
        batch = [self._waiting.popleft() for _ in range(n)]
        task = asyncio.create_task(self._answer(batch))
        self._running[task] = [answer for _, answer in batch]
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        if self._waiting and len(self._running) < self.max_in_flight:
            self._start_batch()
        elif not self._waiting and not self._running:
            self._idle.set()

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            results = await self._run_batch([request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for _, answer in batch:
                answer.cancel()
            raise
        except Exception as exc:  # every request of the batch gets what the batch raised
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), result in zip(batch, results, strict=True):
            if not answer.done():
                answer.set_result(result)
