"""Clock rules: which recorded fact starts, stops, moves or pauses which statutory clock.

`RULES` is the table, one row per triggering event type. `plan_clocks` folds a case's facts
through it and says, for every clock, each run it should have had (start day, length, pauses,
who is responsible, due date with its explanation, and how it ended). `reconcile` compares that
plan with the clocks the case itself records and appends only the difference, so running it
again (a redelivered message, a crash and retry, events seen out of order) appends nothing.
`timer_rows` derives the timers a case needs from its recorded clocks, and `fire_timer`
decides what a due timer means (a reminder, a supervision notice, an escalation, an expired
window) from the case's own state, which is the source of truth for "did this already fire".

Decisions the regulation leaves open, made here:
- Duty clocks (the organ or unit must act: acceptance, handling, review and re-review
  opinions, return visit, local working-day limits) get a reminder 3 days before the due date,
  a supervision notice the day after it (`ClockMissed`; the clock keeps running, the case is
  overdue) and, once a run has had two notices without result, an escalation proposal.
- Windows (the petitioner or a unit *may* act: objection, review request, re-review request)
  are not duties: no reminders; at expiry they stop with outcome "closed", never "missed".
- Reopened work (`WorkReopened`) starts a new 60-day handling run from the day it was
  reopened: the unit owes a new reply; the earlier run keeps its own outcome. The review
  request window and return visit tied to the superseded reply are closed. Two reopenings
  (two replies sent back) propose an escalation, like two unanswered reminders.
- `Closed`, `Withdrawn` and a re-review opinion (the matter is terminated, Art. 36) stop
  every running clock with outcome "closed" (the re-review clock itself is met or late).
- A stop is "met" when the fact's date is on or before the due date, otherwise "late".
- The day a fact happened is the date field the event carries (decided_on, replied_on, ...);
  an event without one counts from the day it was recorded (China time).

Pure: no I/O, no clock. Time (`at`, `now`) is always passed in.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from petitions.domain.calendar import WorkCalendar
from petitions.domain.case import Case
from petitions.domain.deadlines import (
    ACCEPTANCE_DAYS,
    CALENDAR_DAYS,
    HANDLING_DAYS,
    OBJECTION_WORKING_DAYS,
    RE_REVIEW_OPINION_DAYS,
    RE_REVIEW_REQUEST_DAYS,
    REMINDER_DAYS_BEFORE,
    RETURN_VISIT_DAYS,
    REVIEW_OPINION_DAYS,
    REVIEW_REQUEST_DAYS,
    WORKING_DAYS,
    Deadline,
    add_paused_days,
    calendar_days_deadline,
    working_days_deadline,
)
from petitions.domain.values import CHINA_TZ, Actor, local_date

DUTY = "duty"
WINDOW = "window"

MET = "met"
LATE = "late"
CLOSED = "closed"

WARN = "warn"
DUE = "due"

PENDING = "pending"
FIRED = "fired"
CANCELLED = "cancelled"
STALE = "stale"  # the timer no longer matches the case's clock: recompute the case's timers

# Two unanswered notices (reminder, supervision) on one run of a clock propose a sanction.
ESCALATE_AFTER_NOTICES = 2
ESCALATE_AFTER_REOPENINGS = 2
PUBLIC_CRITICISM = "public_criticism"

BUREAU = "bureau"
LEAD_UNIT = "lead_unit"
ORGAN = "organ"

_ROLL_ON = ("roll-forward: on (Civil Code Art. 201-203: a period whose last day is a rest day "
            "ends on the next working day)")


@dataclass(frozen=True)
class ClockSpec:
    """What a clock measures: its length, how days count, and whose it is."""

    name: str
    length: int
    day_kind: str
    obligation: str  # DUTY or WINDOW
    responsible: str  # BUREAU, LEAD_UNIT or ORGAN
    description: str


SPECS: dict[str, ClockSpec] = {s.name: s for s in (
    ClockSpec("acceptance", ACCEPTANCE_DAYS, CALENDAR_DAYS, DUTY, BUREAU,
              "decide acceptance and tell the petitioner within 15 days of receipt "
              "(2022 Art. 22-23)"),
    ClockSpec("handling", HANDLING_DAYS, CALENDAR_DAYS, DUTY, LEAD_UNIT,
              "handle and reply within 60 days of acceptance (Art. 34)"),
    ClockSpec("objection", OBJECTION_WORKING_DAYS, WORKING_DAYS, WINDOW, LEAD_UNIT,
              "the assigned unit may object within 5 working days (Art. 23)"),
    ClockSpec("review_request", REVIEW_REQUEST_DAYS, CALENDAR_DAYS, WINDOW, BUREAU,
              "the petitioner may ask for review within 30 days of receiving the reply "
              "(Art. 35)"),
    ClockSpec("review_opinion", REVIEW_OPINION_DAYS, CALENDAR_DAYS, DUTY, ORGAN,
              "review opinion within 30 days of the request, hearing time not counted "
              "(Art. 35-36)"),
    ClockSpec("re_review_request", RE_REVIEW_REQUEST_DAYS, CALENDAR_DAYS, WINDOW, BUREAU,
              "the petitioner may ask for re-review within 30 days of the review opinion "
              "(Art. 36)"),
    ClockSpec("re_review_opinion", RE_REVIEW_OPINION_DAYS, CALENDAR_DAYS, DUTY, ORGAN,
              "re-review opinion within 30 days of the request, hearing time not counted "
              "(Art. 36)"),
    ClockSpec("return_visit", RETURN_VISIT_DAYS, CALENDAR_DAYS, DUTY, BUREAU,
              "return visit or call within 10 days of the written reply"),
)}


# --- actions: the vocabulary of the rules table --------------------------------------------

@dataclass(frozen=True)
class Start:
    """Start a run of `clock` counted from the fact's `on` date (None: the day recorded).

    A running clock is left alone unless `restart`, which closes it and starts a new run.
    `when` = (field, value) limits the rule to facts whose field has that value.
    `unit_from` names the field holding the responsible unit or organ.
    """

    clock: str
    on: str | None
    restart: bool = False
    when: tuple[str, Any] | None = None
    unit_from: str | None = None


@dataclass(frozen=True)
class Stop:
    """Stop `clock` on the fact's `on` date: met (or late, after the due date), or closed."""

    clock: str
    on: str | None
    outcome: str = MET


@dataclass(frozen=True)
class Move:
    """Lengthen `clock` by the number of days in the fact's `by` field (an extension)."""

    clock: str
    by: str


@dataclass(frozen=True)
class Pause:
    """Push whichever of `clocks` is running out by the fact's `by` days (hearing time)."""

    clocks: tuple[str, ...]
    by: str


@dataclass(frozen=True)
class StopAll:
    """Stop every running clock with outcome closed (except those listed)."""

    on: str | None
    why: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reassign:
    """The responsible unit of `clocks` changes to the fact's `unit_from` field."""

    clocks: tuple[str, ...]
    unit_from: str
    when: tuple[str, Any] | None = None


@dataclass(frozen=True)
class StartLimit:
    """Start a jurisdiction's own working-day limit when it applies to the case and unit."""

    limit: UnitLimit


Action = Start | Stop | Move | Pause | StopAll | Reassign | StartLimit

# The table. Each triggering event type (by name) -> what it does to the clocks, in order.
RULES: dict[str, tuple[Action, ...]] = {
    "Registered": (Start("acceptance", on="received_at"),),
    "Accepted": (
        Stop("acceptance", on="decided_on"),
        Start("handling", on="decided_on", unit_from="lead_unit"),
        Start("objection", on="decided_on", when=("mode", "assign"), unit_from="lead_unit"),
    ),
    "NotAccepted": (Stop("acceptance", on="decided_on"),),
    "NotAcceptedAgain": (Stop("acceptance", on="decided_on"),),
    "AnsweredOnTheSpot": (Stop("acceptance", on="decided_on"),),
    "AssignmentObjected": (Stop("objection", on="objected_on"),),
    "ObjectionDecided": (
        # Upheld: the new lead unit takes over the running handling clock, and has its own
        # 5 working days to object in turn.
        Reassign(("handling",), unit_from="new_lead_unit", when=("upheld", True)),
        Start("objection", on=None, restart=True, when=("upheld", True),
              unit_from="new_lead_unit"),
    ),
    "ExtensionGranted": (Move("handling", by="days"),),
    "Replied": (Stop("handling", on="replied_on"),),
    "ReplyReceived": (
        Start("review_request", on="received_on", restart=True),
        Start("return_visit", on="received_on", restart=True),
    ),
    "ReviewRequested": (
        Stop("review_request", on="requested_on"),
        Start("review_opinion", on="requested_on", unit_from="organ"),
    ),
    "HearingHeld": (Pause(("review_opinion", "re_review_opinion"), by="duration_days"),),
    "ReviewOpinionIssued": (
        Stop("review_opinion", on="issued_on"),
        Start("re_review_request", on="issued_on"),
    ),
    "ReReviewRequested": (
        Stop("re_review_request", on="requested_on"),
        Start("re_review_opinion", on="requested_on", unit_from="organ"),
    ),
    "ReReviewOpinionIssued": (
        Stop("re_review_opinion", on="issued_on"),
        StopAll(on="issued_on", why="the matter is terminated after re-review (Art. 36)"),
    ),
    "ReturnVisitRecorded": (Stop("return_visit", on="visited_on"),),
    "WorkReopened": (
        Stop("review_request", on=None, outcome=CLOSED),
        Stop("re_review_request", on=None, outcome=CLOSED),
        Stop("return_visit", on=None, outcome=CLOSED),
        Start("handling", on=None, restart=True),
    ),
    "Withdrawn": (StopAll(on=None, why="the petition was withdrawn"),),
    "Closed": (StopAll(on="closed_on", why="the case was closed"),),
}

# Facts that start or stop no clock but change whose clocks they are (the jurisdiction that
# holds the case, the responsible unit): the service listens to them to keep timers current.
CONTEXT_EVENTS = ("RoutedToUnit", "ReassignedToUnit", "TransferredToJurisdiction")

# Date fields, in the order tried when a rule names none.
_DATE_FIELDS = ("decided_on", "replied_on", "received_on", "requested_on", "issued_on",
                "objected_on", "visited_on", "held_on", "closed_on", "archived_on")


# --- policy: per-jurisdiction configuration --------------------------------------------------

@dataclass(frozen=True)
class UnitLimit:
    """A working-day limit a jurisdiction sets for its own units (e.g. 5 working days for
    simple matters): starts on `trigger` for cases in `division` (a division code prefix)
    whose responsible unit is `unit_id` (any unit when None), met by any of `met_by`."""

    division: str
    clock: str
    working_days: int
    trigger: str
    unit_id: str | None = None
    met_by: tuple[str, ...] = ("Replied",)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.division.isdigit() or not 2 <= len(self.division) <= 6:
            raise ValueError(f"unit limit: division must be a division code prefix, "
                             f"got {self.division!r}")
        if not self.clock or self.clock in SPECS:
            raise ValueError(f"unit limit: clock name {self.clock!r} is empty or statutory")
        if (isinstance(self.working_days, bool) or not isinstance(self.working_days, int)
                or self.working_days < 1):
            raise ValueError(f"unit limit {self.clock}: working_days must be a positive int")
        if not self.trigger:
            raise ValueError(f"unit limit {self.clock}: trigger event type is required")

    def applies(self, division: str, unit_id: str | None) -> bool:
        return division.startswith(self.division) and (
            self.unit_id is None or self.unit_id == unit_id)

    @property
    def spec(self) -> ClockSpec:
        text = self.description or f"{self.working_days} working days (local rule)"
        return ClockSpec(self.clock, self.working_days, WORKING_DAYS, DUTY, LEAD_UNIT,
                         f"{text}; local limit of {self.division}"
                         + (f" for {self.unit_id}" if self.unit_id else ""))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnitLimit:
        unknown = set(d) - {"division", "unit_id", "clock", "working_days", "trigger",
                            "met_by", "description"}
        if unknown:
            raise ValueError(f"unit limit: unknown fields {sorted(unknown)}")
        return cls(division=str(d["division"]), clock=str(d["clock"]),
                   working_days=d["working_days"], trigger=str(d["trigger"]),
                   unit_id=d.get("unit_id") or None,
                   met_by=tuple(d.get("met_by") or ("Replied",)),
                   description=str(d.get("description") or ""))


@dataclass(frozen=True)
class ClockPolicy:
    """Configuration: local working-day limits, and the jurisdictions (division code
    prefixes) that switched the Civil Code roll-forward off."""

    unit_limits: tuple[UnitLimit, ...] = ()
    no_roll_forward: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [u.clock for u in self.unit_limits]
        for prefix in self.no_roll_forward:
            if not prefix.isdigit():
                raise ValueError(f"no_roll_forward: {prefix!r} is not a division code prefix")
        # One clock name may be configured for several divisions or units; its met_by must
        # agree, or which fact meets it would depend on the case.
        for name in set(names):
            met = {u.met_by for u in self.unit_limits if u.clock == name}
            if len(met) > 1:
                raise ValueError(f"unit limit {name}: conflicting met_by {sorted(met)}")

    @classmethod
    def from_config(cls, unit_limits: Mapping[str, Any] | None = None,
                    calendar_rules: Mapping[str, Any] | None = None) -> ClockPolicy:
        limits = tuple(UnitLimit.from_dict(d) for d in (unit_limits or {}).get("limits", []))
        no_roll = tuple(str(p) for p in (calendar_rules or {}).get("no_roll_forward", []))
        return cls(unit_limits=limits, no_roll_forward=no_roll)

    def roll_forward(self, division: str) -> tuple[bool, str]:
        """Whether the roll-forward rule applies in `division`, and how to say so."""
        for prefix in self.no_roll_forward:
            if division.startswith(prefix):
                return False, (f"roll-forward: off in jurisdiction {prefix} (its configured "
                               "rule): the period ends on its last calendar day")
        return True, _ROLL_ON

    def rules(self) -> dict[str, tuple[Action, ...]]:
        """The statutory table plus this configuration's local limits."""
        table = {k: list(v) for k, v in RULES.items()}
        for limit in self.unit_limits:
            table.setdefault(limit.trigger, []).append(StartLimit(limit))
        for name, met_by in {u.clock: u.met_by for u in self.unit_limits}.items():
            for event_type in met_by:
                table.setdefault(event_type, []).append(Stop(name, on=None))
        return {k: tuple(v) for k, v in table.items()}

    def trigger_types(self) -> list[str]:
        """Every event type the deadlines service must see."""
        return sorted(set(self.rules()) | set(CONTEXT_EVENTS))

    def spec(self, clock: str) -> ClockSpec | None:
        if clock in SPECS:
            return SPECS[clock]
        for limit in self.unit_limits:
            if limit.clock == clock:
                return limit.spec
        return None

    def obligation(self, clock: str) -> str:
        spec = self.spec(clock)
        return spec.obligation if spec else DUTY


DEFAULT_POLICY = ClockPolicy()


# --- facts ----------------------------------------------------------------------------------

_BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp",
                          "originator_topic"})


@dataclass(frozen=True)
class Fact:
    """One recorded case event, as the rules see it."""

    type: str
    version: int
    recorded_at: datetime
    data: Mapping[str, Any]

    @classmethod
    def from_event(cls, event: Any) -> Fact:
        data = {k: v for k, v in vars(event).items() if k not in _BASE_FIELDS}
        return cls(type(event).__name__, event.originator_version, event.timestamp, data)

    def day(self, field_name: str | None) -> date:
        """The day the fact happened: its named date field, else any known date field, else
        the (China) day it was recorded."""
        names = (field_name,) if field_name else _DATE_FIELDS
        for name in names:
            value = self.data.get(name)
            if value:
                return _as_date(value)
        return local_date(self.recorded_at)

    def matches(self, when: tuple[str, Any] | None) -> bool:
        return when is None or self.data.get(when[0]) == when[1]


def facts_from_events(events: Iterable[Any]) -> list[Fact]:
    return [Fact.from_event(e) for e in events]


def _as_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    moment = value if isinstance(value, datetime) else None
    text = str(value)
    if moment is None and len(text) <= 10:
        return date.fromisoformat(text)
    moment = moment or datetime.fromisoformat(text)
    try:
        return local_date(moment)
    except OverflowError:
        # At the very edge of the calendar (year 1 with a large offset) China's date does
        # not exist as a `date`; the moment's own date is the closest there is.
        return moment.date()


# --- the plan ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedClock:
    """One run of one clock as the facts say it should be."""

    clock: str
    instance: int
    obligation: str
    started_on: date
    length: int
    day_kind: str
    paused_days: int
    unit_id: str
    trigger: str
    deadline: Deadline
    explanation: str
    running: bool
    outcome: str | None = None
    stopped_on: date | None = None
    stop_reason: str = ""
    start_reason: str = ""

    @property
    def due_on(self) -> date:
        return self.deadline.due_on

    @property
    def provisional(self) -> bool:
        return self.deadline.provisional


@dataclass(frozen=True)
class PlannedEscalation:
    key: str
    clock: str
    reason: str


@dataclass(frozen=True)
class ClockPlan:
    division: str
    clocks: dict[str, tuple[PlannedClock, ...]]
    escalations: tuple[PlannedEscalation, ...] = ()

    def current(self, clock: str) -> PlannedClock | None:
        runs = self.clocks.get(clock)
        return runs[-1] if runs else None

    def run(self, clock: str, instance: int) -> PlannedClock | None:
        runs = self.clocks.get(clock) or ()
        return runs[instance - 1] if 1 <= instance <= len(runs) else None


@dataclass
class _Run:
    spec: ClockSpec
    instance: int
    started_on: date
    unit_id: str
    trigger: str
    start_reason: str
    roll: bool = True
    roll_text: str = _ROLL_ON
    extension_days: int = 0
    paused_days: int = 0
    outcome: str | None = None
    stopped_on: date | None = None
    stop_reason: str = ""

    @property
    def running(self) -> bool:
        return self.outcome is None


def default_bureau(division: str) -> str:
    """The petition bureau of a jurisdiction, by the directory's naming convention."""
    return f"bureau-{division}"


def plan_clocks(facts: Iterable[Fact], calendar: WorkCalendar,
                policy: ClockPolicy = DEFAULT_POLICY, *,
                bureau_of: Callable[[str], str] = default_bureau) -> ClockPlan:
    """Fold a case's facts (in version order) through the rules into the clocks it should
    have: every run of every clock, with its due date computed on `calendar`."""
    rules = policy.rules()
    roll, roll_text = True, _ROLL_ON
    division = ""
    unit: str | None = None  # the unit currently responsible for the matter
    runs: dict[str, list[_Run]] = {}
    reopenings = 0

    def deadline(run: _Run) -> Deadline:
        return _deadline(run, calendar)

    def running(name: str) -> _Run | None:
        r = runs.get(name)
        return r[-1] if r and r[-1].running else None

    def stop(run: _Run, day: date, outcome: str, why: str) -> None:
        if outcome == MET:
            outcome = MET if day <= deadline(run).due_on else LATE
            if run.spec.obligation == WINDOW and outcome == LATE:
                outcome = CLOSED  # a window used after it expired: it had closed anyway
        run.outcome, run.stopped_on, run.stop_reason = outcome, day, why

    def start(spec: ClockSpec, fact: Fact, day: date, unit_id: str, restart: bool) -> None:
        current = running(spec.name)
        if current is not None:
            if not restart:
                return
            stop(current, day, CLOSED, f"superseded by a new run ({fact.type})")
        instance = len(runs.get(spec.name, [])) + 1
        runs.setdefault(spec.name, []).append(_Run(
            spec, instance, day, unit_id, f"{fact.type}@{fact.version}",
            f"{fact.type}: {spec.description}", roll, roll_text))

    def responsible(spec: ClockSpec, fact: Fact, unit_from: str | None) -> str:
        if unit_from and fact.data.get(unit_from):
            return str(fact.data[unit_from])
        if spec.responsible == BUREAU:
            return bureau_of(division) if division else ""
        return unit or ""

    for fact in sorted(facts, key=lambda f: f.version):
        if fact.type == "Registered":
            division = str(fact.data.get("division") or "")
            roll, roll_text = policy.roll_forward(division)
        elif fact.type in ("RoutedToUnit", "ReassignedToUnit"):
            unit = str(fact.data.get("unit_id") or "") or unit
        elif fact.type == "TransferredToJurisdiction" and fact.data.get("to_division"):
            # Clocks started from now on count by the receiving jurisdiction's rules.
            division = str(fact.data["to_division"])
            roll, roll_text = policy.roll_forward(division)
        elif fact.type == "Accepted" and fact.data.get("lead_unit"):
            unit = str(fact.data["lead_unit"])
        elif fact.type == "WorkReopened":
            reopenings += 1
        for action in rules.get(fact.type, ()):
            if isinstance(action, Start):
                if fact.matches(action.when):
                    spec = SPECS[action.clock]
                    start(spec, fact, fact.day(action.on),
                          responsible(spec, fact, action.unit_from), action.restart)
            elif isinstance(action, StartLimit):
                if action.limit.applies(division, unit):
                    start(action.limit.spec, fact, fact.day(None), unit or "", False)
            elif isinstance(action, Stop):
                run = running(action.clock)
                if run is not None:
                    stop(run, fact.day(action.on), action.outcome, fact.type)
            elif isinstance(action, Move):
                run = running(action.clock)
                days = fact.data.get(action.by)
                if run is not None and isinstance(days, int) and days > 0:
                    run.extension_days += days
            elif isinstance(action, Pause):
                days = fact.data.get(action.by)
                for name in action.clocks:
                    run = running(name)
                    if run is not None and isinstance(days, int) and days > 0:
                        run.paused_days += days
            elif isinstance(action, StopAll):
                day = fact.day(action.on)
                for name in list(runs):
                    run = running(name)
                    if run is not None and name not in action.except_:
                        stop(run, day, CLOSED, f"{fact.type}: {action.why}")
            elif isinstance(action, Reassign):
                if fact.matches(action.when) and fact.data.get(action.unit_from):
                    unit = str(fact.data[action.unit_from])
                    for name in action.clocks:
                        run = running(name)
                        if run is not None:
                            run.unit_id = unit

    planned = {name: tuple(_planned(r, deadline(r)) for r in rs)
               for name, rs in runs.items()}
    escalations = ()
    if reopenings >= ESCALATE_AFTER_REOPENINGS:
        escalations = (PlannedEscalation(
            "replies-sent-back", "handling",
            f"{reopenings} replies sent back without result: public criticism proposed"),)
    return ClockPlan(division, planned, escalations)


def _deadline(run: _Run, calendar: WorkCalendar) -> Deadline:
    length = run.spec.length + run.extension_days
    if run.spec.day_kind == WORKING_DAYS:
        return working_days_deadline(run.started_on, length, calendar)
    d = calendar_days_deadline(run.started_on, length, calendar, roll_forward=run.roll)
    return add_paused_days(d, run.paused_days, calendar) if run.paused_days else d


def _planned(run: _Run, deadline: Deadline) -> PlannedClock:
    parts = [run.spec.description]
    if run.extension_days:
        parts.append(f"extended by {run.extension_days} days (Art. 34)")
    parts.append(deadline.explanation)
    parts.append(run.roll_text if run.spec.day_kind == CALENDAR_DAYS else
                 "working days on the national holiday calendar, swapped working days count")
    return PlannedClock(
        clock=run.spec.name, instance=run.instance, obligation=run.spec.obligation,
        started_on=run.started_on, length=run.spec.length + run.extension_days,
        day_kind=run.spec.day_kind, paused_days=run.paused_days, unit_id=run.unit_id,
        trigger=run.trigger, deadline=deadline, explanation="; ".join(parts),
        running=run.running, outcome=run.outcome, stopped_on=run.stopped_on,
        stop_reason=run.stop_reason, start_reason=run.start_reason,
    )


# --- reconciling a case with its plan ---------------------------------------------------------

def reconcile(case: Case, plan: ClockPlan, *, actor: Actor, at: datetime) -> list[str]:
    """Append to `case` whatever clock facts the plan has and the case lacks; return their
    names. Running it again on the result appends nothing."""
    appended: list[str] = []
    for name, runs in plan.clocks.items():
        actual = case.clocks.get(name)
        done = actual["instance"] if actual else 0
        if actual is not None and 1 <= done <= len(runs):
            appended += _catch_up(case, runs[done - 1], actual, actor, at)
        for run in runs[done:]:
            case.start_clock(
                clock=name, started_on=run.started_on.isoformat(),
                due_on=run.due_on.isoformat(), length=run.length, day_kind=run.day_kind,
                explanation=run.explanation, provisional=run.provisional, actor=actor, at=at,
                reason=run.start_reason)
            appended.append("ClockStarted")
            if run.paused_days:
                # A run that starts already paused records its pause as a move.
                case.move_clock(clock=name, due_on=run.due_on.isoformat(),
                                explanation=run.explanation, provisional=run.provisional,
                                length=run.length, paused_days=run.paused_days, actor=actor,
                                at=at, reason="hearing time is not counted")
                appended.append("ClockMoved")
            if not run.running:
                _stop(case, run, actor, at)
                appended.append("ClockStopped")
    for esc in plan.escalations:
        if esc.key not in case.clock_escalations:
            case.propose_escalation(key=esc.key, clock=esc.clock, actor=actor, at=at,
                                    reason=esc.reason)
            appended.append("EscalationProposed")
    return appended


def _catch_up(case: Case, run: PlannedClock, actual: Mapping[str, Any], actor: Actor,
              at: datetime) -> list[str]:
    if actual["state"] not in Case.CLOCK_RUNNING_STATES:
        return []  # stopped (met, late, closed, an expired window): that run is over
    appended = []
    due = run.due_on.isoformat()
    if (run.length, run.paused_days) != (actual["length"], actual.get("paused_days", 0)):
        reason = ("handling extended (Art. 34)" if run.length != actual["length"]
                  else "hearing time is not counted (Art. 36)")
        case.move_clock(clock=run.clock, due_on=due, explanation=run.explanation,
                        provisional=run.provisional, length=run.length,
                        paused_days=run.paused_days, actor=actor, at=at, reason=reason)
        appended.append("ClockMoved")
    elif actual["provisional"] and (due, run.provisional) != (actual["due_on"],
                                                              actual["provisional"]):
        # Only a provisional date is ever recomputed, so a replica with an older calendar
        # can never undo a date computed on official data.
        case.recompute_clock(clock=run.clock, due_on=due, provisional=run.provisional,
                             explanation=run.explanation, actor=actor, at=at)
        appended.append("ClockRecomputed")
    if not run.running:
        _stop(case, run, actor, at)
        appended.append("ClockStopped")
    return appended


def _stop(case: Case, run: PlannedClock, actor: Actor, at: datetime) -> None:
    assert run.outcome is not None and run.stopped_on is not None
    case.stop_clock(clock=run.clock, outcome=run.outcome, stopped_on=run.stopped_on.isoformat(),
                    actor=actor, at=at, reason=run.stop_reason or run.outcome)


# --- timers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TimerRow:
    """One timer of one clock: the reminder (warn) or the due-date check (due)."""

    clock: str
    kind: str
    fire_at: datetime
    due_on: date
    state: str
    unit_id: str
    obligation: str
    provisional: bool


def local_midnight(day: date) -> datetime:
    """The start of `day` in China."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TZ)


def warn_fire_at(due_on: date) -> datetime:
    """Reminders go out at the start of the day 3 days before the due date."""
    return local_midnight(due_on - timedelta(days=REMINDER_DAYS_BEFORE))


def due_fire_at(due_on: date) -> datetime:
    """A period ends at the end of its last day: it is missed at the start of the next."""
    return local_midnight(due_on + timedelta(days=1))


def timer_rows(case: Case, plan: ClockPlan | None = None,
               policy: ClockPolicy = DEFAULT_POLICY) -> list[TimerRow]:
    """The timers `case` needs, from its recorded clocks (pending, fired, or cancelled once
    the clock stopped). `plan` supplies each run's responsible unit."""
    rows = []
    for name, c in case.clocks.items():
        run = plan.run(name, c["instance"]) if plan else None
        obligation = run.obligation if run else policy.obligation(name)
        unit_id = run.unit_id if run else ""
        due = date.fromisoformat(c["due_on"])
        alive = c["state"] in Case.CLOCK_RUNNING_STATES

        def state(done: bool) -> str:
            return CANCELLED if not alive else FIRED if done else PENDING

        if obligation == DUTY:
            rows.append(TimerRow(name, WARN, warn_fire_at(due), due,
                                 state(c.get("warned_for") == c["due_on"]), unit_id,
                                 obligation, bool(c["provisional"])))
        rows.append(TimerRow(name, DUE, due_fire_at(due), due,
                             state(c.get("missed_for") == c["due_on"]), unit_id, obligation,
                             bool(c["provisional"])))
    return rows


def fire_timer(case: Case, clock: str, kind: str, due_on: date, obligation: str,
               now: datetime, *, actor: Actor) -> str:
    """What a due timer means for the case, decided from the case's own clock state; appends
    the events to `case` and returns the timer's new state (FIRED, CANCELLED or STALE).

    Re-firing after a crash finds the event already in the case and appends nothing.
    """
    c = case.clocks.get(clock)
    if c is None:
        return STALE
    if c["state"] not in Case.CLOCK_RUNNING_STATES:
        return CANCELLED
    if c["due_on"] != due_on.isoformat():
        return STALE
    due = due_on.isoformat()
    if kind == WARN:
        if c.get("warned_for") != due and local_date(now) <= due_on:
            case.warn_clock(clock=clock, due_on=due, actor=actor, at=now,
                            reason=f"reminder notice (催办预告): '{clock}' is due on {due}")
        # A reminder that would arrive after the due date is not sent: the miss is reported.
        return FIRED
    if obligation == WINDOW:
        case.stop_clock(clock=clock, outcome=CLOSED, stopped_on=due, actor=actor, at=now,
                        reason=f"window expired at the end of {due} (a window, not a duty)")
        return CANCELLED
    if c.get("missed_for") != due:
        case.record_clock_missed(
            clock=clock, due_on=due, actor=actor, at=now,
            reason=f"'{clock}' was due on {due}: supervision notice (督办); the case is overdue")
    key = f"{clock}#{c['instance']}"
    if c["notices"] >= ESCALATE_AFTER_NOTICES and key not in case.clock_escalations:
        case.propose_escalation(
            key=key, clock=clock, actor=actor, at=now,
            reason=f"'{clock}' has had {c['notices']} notices (reminder, supervision) "
                   "without result: public criticism (通报批评) proposed")
    return FIRED


__all__ = [
    "CLOSED", "DUE", "DUTY", "LATE", "MET", "RULES", "SPECS", "WARN", "WINDOW",
    "ClockPlan", "ClockPolicy", "ClockSpec", "Fact", "PlannedClock", "TimerRow", "UnitLimit",
    "facts_from_events", "fire_timer", "plan_clocks", "reconcile", "timer_rows",
]
