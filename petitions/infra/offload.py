"""Decoding and deciding a batch of cases: on the event loop when the batch is small, in a
worker thread when it is large.

Handing work to a thread costs a futex wake, a switch to the worker, the loop's wake-up and
a switch back: at a steady trickle of one or two cases per batch that cost more CPU than
deciding the cases, and on a busy machine each switch also waits for a core. The thread buys
only responsiveness (probes and the other consumers keep being served while a large batch is
worked; the GIL lets no two run at once), so only a large batch is worth it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# About a millisecond of folding and deciding: below it the loop's other work waits no longer
# than one of its own round trips takes.
INLINE_UP_TO_CASES = 8


async def run_sized(fn: Callable[..., T], cases: int, *args: object) -> T:
    """`fn(*args)` on the loop when it concerns at most INLINE_UP_TO_CASES cases, else in a
    worker thread."""
    if cases <= INLINE_UP_TO_CASES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)
