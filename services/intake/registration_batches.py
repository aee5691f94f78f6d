"""Registrations in batches: the petitions that arrive while earlier batches run are screened
together in one statement, and the new cases among them are appended together in one
transaction, by the same task.

Screening and appending are one stage, not two queues one after the other: a petition waits
once for a batch, and its request is not woken between its screening and its append (on a
busy intake, each wake-up and each second queue was a wait on the event loop, and the waits
in turn, not the database, bounded throughput). No artificial delay: an idle intake runs a
petition at once, alone (a `Coalescer`). Up to `max_in_flight` batches run at once; the
screening statement commits its case numbers without waiting for the flush, so one batch
screens while another's append flushes.

A petition that is not new (a retried request, a repeat or a duplicate of an open case) is
only screened here: its request goes on from the screening (see `Registrar`)."""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from petitions.infra.coalesce import Coalescer
from petitions.infra.committer import CommitterStopped, GroupCommit, NewAggregate
from petitions.infra.metrics import REGISTRATION_STAGE
from services.intake.matching import OpenCaseFinder, Screening, ScreeningRequest

log = logging.getLogger(__name__)

QUEUED = REGISTRATION_STAGE.labels("queued")
SCREENED = REGISTRATION_STAGE.labels("screen")


class NewPetition(NamedTuple):
    request: ScreeningRequest
    # Builds the petition's new case from its screening (the case number taken, the
    # terminated matter it repeats); run in `context`. Raises what the domain refuses.
    new_case: Callable[[Screening], Any]
    context: contextvars.Context  # its request's (trace, case), for the stored trace context
    queued_at: float  # time.monotonic()


class Screened(NamedTuple):
    screening: Screening
    case: Any = None  # the new case built for the petition, saved unless `error`
    error: Exception | None = None  # building or appending the new case failed


class RegistrationBatches:
    def __init__(self, finder: OpenCaseFinder, commit: GroupCommit, *, max_batch: int = 100,
                 max_in_flight: int = 2) -> None:
        self.finder = finder
        self.commit = commit
        self._batches: Coalescer[NewPetition, Screened] = Coalescer(
            self._run, max_batch=max_batch, max_in_flight=max_in_flight)
        self._stopped = False

    @property
    def batches(self) -> int:
        """Batches run so far."""
        return self._batches.batches

    async def register(self, request: ScreeningRequest,
                       new_case: Callable[[Screening], Any]) -> Screened:
        """Screen the petition and, if it is new (its screening took a case number), build
        its case with `new_case` and append it."""
        if self._stopped:
            raise CommitterStopped("shutting down; not registering")
        return await self._batches.call(
            NewPetition(request, new_case, contextvars.copy_context(), time.monotonic()))

    async def _run(self, petitions: list[NewPetition]) -> list[Screened]:
        started = time.monotonic()
        for petition in petitions:
            QUEUED.observe(started - petition.queued_at)
        screenings = await self.finder.screen_batch([p.request for p in petitions])
        SCREENED.observe(time.monotonic() - started)
        answers = [_built(p, s) for p, s in zip(petitions, screenings, strict=True)]
        new = [i for i, a in enumerate(answers) if a.case is not None]
        errors = await self.commit.append(
            [NewAggregate(answers[i].case, petitions[i].context) for i in new])
        for i, error in zip(new, errors, strict=True):
            if error is not None:
                answers[i] = answers[i]._replace(error=error)
        return answers

    async def stop(self, timeout: float = 30.0) -> None:
        """Take no new petitions, finish every batch taken, then stop."""
        self._stopped = True
        try:
            await asyncio.wait_for(self._batches.idle(), timeout)
        except TimeoutError:
            log.warning("registration batches did not finish in %ss; cancelled", timeout)
            self._batches.abandon(CommitterStopped("shutting down; not registered"))


def _built(petition: NewPetition, screening: Screening) -> Screened:
    """The petition's new case when its screening took a number (it matched nothing)."""
    if screening.seq is None:
        return Screened(screening)
    try:
        return Screened(screening, petition.context.run(petition.new_case, screening))
    except Exception as exc:  # the domain refused it: only this petition fails
        return Screened(screening, error=exc)
