"""The deadlines service's work on cases, synchronous (the event store is): bring a case's
clocks in line with its facts, and fire due timers. Async callers use `asyncio.to_thread`.

Both paths decide from the case's own events, so re-running them (a redelivered message, a
timer re-claimed after a crash, a second replica) appends nothing twice; a write that races
another writer of the same case loses on optimistic concurrency and is re-decided on fresh
state.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from petitions.domain.calendar import WorkCalendar
from petitions.domain.case import Case
from petitions.domain.clocks import (
    CANCELLED,
    DEFAULT_POLICY,
    STALE,
    ClockPolicy,
    default_bureau,
    facts_from_events,
    fire_timer,
    plan_clocks,
    reconcile,
    timer_rows,
)
from petitions.domain.values import Actor
from petitions.infra.batching import CONFLICTS, rebuild
from petitions.infra.store import CaseStore, ConcurrencyConflict
from services.deadlines.timers import CaseTimers, Mark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceActor(Actor):
    """An actor whose event field is built without `dataclasses.asdict` (a deep copy that
    costs more than the rest of a reminder on the firing path)."""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "role": self.role, "jurisdiction": self.jurisdiction}


DEADLINES_ACTOR = ServiceActor(id="deadlines-service", role="service")

# The events the clock commands read and write. Their topics are plain in the store, so the
# firing path decodes (decrypts) only these and never a case's registration payload.
CLOCK_EVENTS = (Case.ClockStarted, Case.ClockMoved, Case.ClockStopped, Case.ClockWarned,
                Case.ClockMissed, Case.ClockRecomputed, Case.EscalationProposed)
CLOCK_TOPICS = tuple(get_topic(cls) for cls in CLOCK_EVENTS)


def clock_view(case_id: UUID, version: int, clock_events: Iterable[Any]) -> Case:
    """The case as far as its clocks go: only its clock facts applied, at its real version.

    Enough for the clock commands (warn_clock, record_clock_missed, stop_clock,
    propose_escalation read and write nothing else), and far cheaper than replaying the whole
    case: the registration payload is neither decrypted nor applied. Use it for nothing else;
    its new events are saved like any case's, so optimistic concurrency still guards them.
    """
    case = object.__new__(Case)
    first = None
    for e in clock_events:
        if first is None:
            case.__base_init__(case_id, 0, e.timestamp)
            case.clocks, case.clock_escalations = {}, {}
            first = e
        e.apply(case)
    if first is None:
        case.__base_init__(case_id, 0, datetime.min)
        case.clocks, case.clock_escalations = {}, {}
    case.version = version
    return case


@dataclass
class Reconciled:
    timers: CaseTimers
    appended: list[str]


@dataclass
class FireOutcome:
    marks: list[Mark] = field(default_factory=list)
    stale: dict[UUID, list[Mapping[str, Any]]] = field(default_factory=dict)
    events: int = 0


class ClockEngine:
    # Cases appended per event-store transaction when firing timers. Several cases per
    # transaction is what makes firing fast (the store serialises transactions); more than a
    # few hundred events in one transaction can stall the store's pipelined insert (psycopg
    # pipeline mode, measured here: 800 events hung, 600 did not), so stay well below.
    cases_per_save = 150

    def __init__(self, store: CaseStore, calendar: Callable[[], WorkCalendar],
                 now: Callable[[], datetime], policy: ClockPolicy = DEFAULT_POLICY,
                 bureau_of: Callable[[str], str] = default_bureau,
                 actor: Actor = DEADLINES_ACTOR) -> None:
        self.store = store
        self.calendar = calendar
        self.now = now
        self.policy = policy
        self.bureau_of = bureau_of
        self.actor = actor

    # -- facts -> clocks ---------------------------------------------------------------------

    def reconcile_case(self, case_id: UUID, *, attempts: int = 20) -> Reconciled | None:
        """Append the clock facts the case's history calls for; return its timers.
        None when the case does not exist."""
        for attempt in range(attempts):
            events = self.store.history(case_id)
            if not events:
                return None
            case, result = self.plan(events)
            if result.appended:
                try:
                    self.store.save(case)
                except IntegrityError:
                    CONFLICTS.labels("deadlines").inc()
                    time.sleep(min(0.002 * 2 ** attempt, 0.2))
                    continue
            return result
        raise ConcurrencyConflict(f"case {case_id}: gave up after {attempts} conflicting writes")

    def plan(self, events: Sequence[Any]) -> tuple[Case, Reconciled]:
        """Decide one case from its history (not empty): the case with the clock facts it
        lacks appended (not saved), and its timers as they are once those are stored."""
        case = rebuild(events)
        plan = plan_clocks(facts_from_events(events), self.calendar(), self.policy,
                           bureau_of=self.bureau_of)
        appended = reconcile(case, plan, actor=self.actor, at=self.now())
        rows = timer_rows(case, plan, self.policy)
        return case, Reconciled(CaseTimers(case.id, case.division, case.version, tuple(rows)),
                                appended)

    def decide_many(self, histories: Mapping[UUID, Sequence[Any]]
                    ) -> tuple[dict[UUID, tuple[Case, Reconciled]], dict[UUID, BaseException]]:
        """`plan` for several cases: the decided ones, and those whose decision failed (one
        bad case never holds back the others)."""
        decided: dict[UUID, tuple[Case, Reconciled]] = {}
        failed: dict[UUID, BaseException] = {}
        for case_id, events in histories.items():
            if not events:
                continue
            try:
                decided[case_id] = self.plan(events)
            except Exception as exc:
                failed[case_id] = exc
        return decided, failed

    async def save_decided(self, pool: Any, decided: Mapping[UUID, tuple[Case, Reconciled]],
                           contexts: Mapping[UUID, Any] | None = None) -> None:
        """Append what the decided cases lack, `cases_per_save` cases a transaction, over an
        asyncpg pool (`CaseStore.save_async`). IntegrityError (another writer appended to one
        of them since it was read) stores nothing of that transaction: decide them all again
        on fresh histories."""
        changed = [case for case, result in decided.values() if result.appended]
        for start in range(0, len(changed), self.cases_per_save):
            chunk = changed[start:start + self.cases_per_save]
            await self.store.save_async(
                pool, *chunk,
                contexts=[contexts.get(c.id) for c in chunk] if contexts is not None else None)

    # -- timers -> case events -----------------------------------------------------------------

    def fire_batch(self, rows: Sequence[Mapping[str, Any]],
                   stored: Sequence[Mapping[str, Any]], now: datetime) -> FireOutcome:
        """Fire claimed timers: decide each from its case's own clock facts (`stored`: the
        cases' events in one query, payloads of clock events only), append what is new for
        several cases per transaction, and say how to mark each row. On a write conflict the
        cases of that transaction are redone one by one on fresh state."""
        by_case: dict[UUID, list[Mapping[str, Any]]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: r["fire_at"]):
            by_case[r["case_id"]].append(r)
        versions: dict[UUID, int] = {}
        clock_events: dict[UUID, list[Any]] = defaultdict(list)
        for s in stored:  # in (case, version) order
            case_id = s["originator_id"]
            versions[case_id] = s["originator_version"]
            if s["topic"] in CLOCK_TOPICS:
                clock_events[case_id].append(self.store.decode(
                    case_id, s["originator_version"], s["topic"], s["state"]))
        out = FireOutcome()
        decided: dict[UUID, _Decided] = {}
        for case_id, timers in by_case.items():
            if case_id not in versions:  # no such case: nothing will ever fire for it
                out.marks += [_mark(r, CANCELLED, r["generation"]) for r in timers]
                continue
            case = clock_view(case_id, versions[case_id], clock_events.get(case_id, ()))
            decided[case_id] = self._decide(case, timers, now)
        changed = [case_id for case_id, d in decided.items() if d.appended]
        for start in range(0, len(changed), self.cases_per_save):
            chunk = changed[start:start + self.cases_per_save]
            try:
                self.store.save(*(decided[case_id].case for case_id in chunk))
            except IntegrityError:
                # Another writer appended to one of these cases meanwhile; nothing of this
                # chunk was stored. Decide each of its cases again on fresh state.
                for case_id in chunk:
                    decided[case_id] = self._fire_alone(case_id, by_case[case_id], now)
        for case_id, d in decided.items():
            out.events += d.appended
            for r, state in d.pairs:
                if state == STALE:
                    out.stale.setdefault(case_id, []).append(r)
                else:
                    version = d.case.version if d.case is not None else r["generation"]
                    out.marks.append(_mark(r, state, version))
        return out

    def _decide(self, case: Case, timers: Sequence[Mapping[str, Any]], now: datetime
                ) -> _Decided:
        before = case.version
        pairs = [(r, fire_timer(case, r["clock"], r["kind"], r["due_on"], r["obligation"], now,
                                actor=self.actor)) for r in timers]
        return _Decided(case, pairs, case.version - before)

    def _fire_alone(self, case_id: UUID, timers: Sequence[Mapping[str, Any]], now: datetime,
                    attempts: int = 20) -> _Decided:
        for attempt in range(attempts):
            case = self.store.get(case_id)
            if case is None:
                return _Decided(None, [(r, CANCELLED) for r in timers], 0)
            d = self._decide(case, timers, now)
            if d.appended:
                try:
                    self.store.save(case)
                except IntegrityError:
                    time.sleep(min(0.002 * 2 ** attempt, 0.2))
                    continue
            return d
        raise ConcurrencyConflict(f"case {case_id}: gave up after {attempts} conflicting writes")


@dataclass
class _Decided:
    case: Case | None
    pairs: list[tuple[Mapping[str, Any], str]]
    appended: int


def _mark(r: Mapping[str, Any], state: str, generation: int) -> Mark:
    return Mark(r["case_id"], r["clock"], r["kind"], state, generation)
