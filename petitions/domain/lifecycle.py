"""The statutory life of a case as a state machine: statuses, actions, and which action each
status allows. Pure: no I/O, no framework imports.

The table below is the whole rule of what may happen when. A few one-off facts refine it (a case
is routed once, extended once, an objection is decided only while one is pending...): those are
the `Flags`. Every command of the Case aggregate asks `require_allowed` first and is refused with
IllegalTransition (HTTP 409) when its action is not allowed now; a command that is allowed but
whose content breaks a rule (a date outside its window, a missing field) is a RuleViolation (422).

The same `actions_allowed(status, flags)` serves the aggregate and the case summary fold, so the
summary's `allowed_actions` is exactly what the aggregate would accept.

    registered ──accept──────────────▶ accepted ──reply──▶ replied ──request_review──▶ under_review
        │ ├─not_accept──────────────▶ not_accepted            │  ▲                          │
        │ ├─not_accept_again────────▶ not_accepted_again      │  └─ return visit:           │
        │ ├─answer_on_the_spot──────▶ closed                  │     dissatisfied → reopened │
        │ └─withdraw (voluntary)────▶ withdrawn               │                             ▼
        │                                                     │                          reviewed
        │     terminated ◀──issue_re_review_opinion── under_re_review ◀──request_re_review──┘
        │         │
        └─ any closable status ──close──▶ closed ──archive──▶ archived
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from petitions.domain.calendar import WorkCalendar
from petitions.domain.deadlines import calendar_days_deadline
from petitions.domain.errors import IllegalTransition, RuleViolation
from petitions.domain.values import CaseStatus, local_date

if TYPE_CHECKING:  # pragma: no cover - typing only; case.py imports this module
    from petitions.domain.case import Case


class Action(StrEnum):
    """Every command a case accepts, by the name the API and errors use."""

    ROUTE = "route"
    ACCEPT = "accept"
    NOT_ACCEPT = "not_accept"
    NOT_ACCEPT_AGAIN = "not_accept_again"
    ANSWER_ON_THE_SPOT = "answer_on_the_spot"
    REPORT_PROGRESS = "report_progress"
    HOLD_HEARING = "hold_hearing"
    OBJECT_TO_ASSIGNMENT = "object_to_assignment"
    DECIDE_OBJECTION = "decide_objection"
    GRANT_EXTENSION = "grant_extension"
    REPLY = "reply"
    RECORD_REPLY_RECEIPT = "record_reply_receipt"
    REQUEST_REVIEW = "request_review"
    ISSUE_REVIEW_OPINION = "issue_review_opinion"
    REQUEST_RE_REVIEW = "request_re_review"
    ISSUE_RE_REVIEW_OPINION = "issue_re_review_opinion"
    RECORD_RETURN_VISIT = "record_return_visit"
    WITHDRAW = "withdraw"
    RECORD_HANDLING_OPINION = "record_handling_opinion"
    RECORD_LEADER_SIGN_OFF = "record_leader_sign_off"
    RECORD_PETITIONER_SIGNATURE = "record_petitioner_signature"
    CLOSE = "close"
    ARCHIVE = "archive"


S = CaseStatus
A = Action

# Completing the case file (一案一卷): allowed while the case is open, and after termination,
# because a terminated case must still be closed and closing needs the complete file.
FILE_ITEMS = frozenset({A.RECORD_HANDLING_OPINION, A.RECORD_LEADER_SIGN_OFF,
                        A.RECORD_PETITIONER_SIGNATURE})

# status -> the actions it allows (before the one-off refinements of `actions_allowed`).
TABLE: dict[CaseStatus, frozenset[Action]] = {
    S.REGISTERED: frozenset({A.ROUTE, A.ACCEPT, A.NOT_ACCEPT, A.NOT_ACCEPT_AGAIN,
                             A.ANSWER_ON_THE_SPOT, A.WITHDRAW}),
    S.ACCEPTED: frozenset({A.REPORT_PROGRESS, A.HOLD_HEARING, A.OBJECT_TO_ASSIGNMENT,
                           A.DECIDE_OBJECTION, A.GRANT_EXTENSION, A.REPLY, A.WITHDRAW})
    | FILE_ITEMS,
    S.REPLIED: frozenset({A.RECORD_REPLY_RECEIPT, A.RECORD_RETURN_VISIT, A.REQUEST_REVIEW,
                          A.WITHDRAW, A.CLOSE}) | FILE_ITEMS,
    S.UNDER_REVIEW: frozenset({A.HOLD_HEARING, A.ISSUE_REVIEW_OPINION, A.WITHDRAW}) | FILE_ITEMS,
    S.REVIEWED: frozenset({A.REQUEST_RE_REVIEW, A.WITHDRAW, A.CLOSE}) | FILE_ITEMS,
    S.UNDER_RE_REVIEW: frozenset({A.HOLD_HEARING, A.ISSUE_RE_REVIEW_OPINION, A.WITHDRAW})
    | FILE_ITEMS,
    # 终结: handled at two levels, ended at the third. Only the file may still be completed
    # and closed; a new petition on the same matter is not accepted again (another case).
    S.TERMINATED: frozenset({A.CLOSE}) | FILE_ITEMS,
    S.NOT_ACCEPTED: frozenset({A.CLOSE}),
    S.NOT_ACCEPTED_AGAIN: frozenset({A.CLOSE}),
    S.WITHDRAWN: frozenset({A.CLOSE}),
    S.CLOSED: frozenset({A.ARCHIVE}),
    S.ARCHIVED: frozenset(),
}

# event type -> the status it leads to (events not listed leave the status as it is).
STATUS_AFTER: dict[str, CaseStatus] = {
    "Accepted": S.ACCEPTED,
    "NotAccepted": S.NOT_ACCEPTED,
    "NotAcceptedAgain": S.NOT_ACCEPTED_AGAIN,
    "AnsweredOnTheSpot": S.CLOSED,
    "Replied": S.REPLIED,
    "ReviewRequested": S.UNDER_REVIEW,
    "ReviewOpinionIssued": S.REVIEWED,
    "ReReviewRequested": S.UNDER_RE_REVIEW,
    "ReReviewOpinionIssued": S.TERMINATED,
    "WorkReopened": S.ACCEPTED,
    "Withdrawn": S.WITHDRAWN,
    "Closed": S.CLOSED,
    "Archived": S.ARCHIVED,
}

# Closing these needs no handling file: nothing was handled (or the petitioner withdrew).
CLOSES_WITHOUT_FILE = frozenset({S.NOT_ACCEPTED, S.NOT_ACCEPTED_AGAIN, S.WITHDRAWN})

# What a complete handling file holds, in the order a missing list names them.
FILE_REQUIREMENTS = ("reply", "handling_opinion", "leader_sign_off", "petitioner_signature")

ACCEPT_MODES = ("assign", "transfer")  # 交办 (unit reports back) | 转送 (own remit)
NOT_ACCEPTED_REASONS = ("outside_remit", "litigation_arbitration_review", "criminal_case_filed",
                        "no_clear_subject_or_facts")
NOT_ACCEPTED_AGAIN_GROUNDS = ("same_matter_open", "terminated_after_re_review")
REPLY_OUTCOMES = ("adopted", "supported", "explained_not_supported")
OPINION_OUTCOMES = ("upheld", "changed", "revoked")
SATISFACTION = ("satisfied", "basically_satisfied", "dissatisfied")


@dataclass(frozen=True)
class Flags:
    """One-off facts that refine the table."""

    routed: bool = False
    anonymous: bool = False
    objection_pending: bool = False  # a unit objected; the common superior has not decided
    assignment_objected: bool = False  # the current assignment was already objected to
    extended: bool = False  # the one extension was granted
    reply_received: bool = False  # the current reply reached the petitioner


def actions_allowed(status: CaseStatus | str | None, flags: Flags) -> list[str]:
    """The actions allowed in `status` given `flags`, sorted by name."""
    if status not in TABLE:  # None before registration (StrEnum members equal their values)
        return []
    actions = set(TABLE[CaseStatus(status)])
    if flags.routed:
        actions.discard(A.ROUTE)
    if not flags.objection_pending:
        actions.discard(A.DECIDE_OBJECTION)
    if flags.objection_pending or flags.assignment_objected:
        actions.discard(A.OBJECT_TO_ASSIGNMENT)
    if flags.extended:
        actions.discard(A.GRANT_EXTENSION)
    if flags.reply_received:
        actions.discard(A.RECORD_REPLY_RECEIPT)
    else:
        actions.discard(A.REQUEST_REVIEW)  # the review window runs from receipt of the reply
    if flags.anonymous:
        actions.discard(A.RECORD_PETITIONER_SIGNATURE)  # nobody to sign; nothing is missing
    return sorted(a.value for a in actions)


def allowed_actions(case: Case) -> list[str]:
    return actions_allowed(case.status, case.lifecycle_flags())


def require_allowed(case: Case, action: Action) -> None:
    """Refuse `action` with IllegalTransition unless the case's status (and flags) allow it."""
    allowed = allowed_actions(case)
    if action.value not in allowed:
        raise IllegalTransition(action.value, CaseStatus(case.status).value, allowed)


def missing_file_items(*, has_reply: bool, has_handling_opinion: bool, has_leader_sign_off: bool,
                       has_petitioner_signature: bool, anonymous: bool) -> list[str]:
    """What a handled case's file still lacks before it may be closed (in FILE_REQUIREMENTS
    order). An anonymous petitioner cannot sign, so no signature is required of one."""
    present = {
        "reply": has_reply,
        "handling_opinion": has_handling_opinion,
        "leader_sign_off": has_leader_sign_off,
        "petitioner_signature": has_petitioner_signature or anonymous,
    }
    return [item for item in FILE_REQUIREMENTS if not present[item]]


# -- checks the commands share --------------------------------------------------------------


def require_text(value: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RuleViolation(f"{name} is required")
    return value


def require_one_of(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise RuleViolation(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def reported_day(value: date, name: str, at: datetime, not_before: date | str | None = None,
                 what: str = "") -> str:
    """A date a command reports: not in the future (China's calendar day at `at`) and not
    before the fact it follows. Returned as the ISO string the event stores."""
    if isinstance(value, datetime) or not isinstance(value, date):
        raise RuleViolation(f"{name} must be a date")
    today = local_date(at)
    if value > today:
        raise RuleViolation(f"{name} {value} is in the future (today is {today})")
    if not_before is not None:
        earliest = date.fromisoformat(not_before) if isinstance(not_before, str) else not_before
        if value < earliest:
            raise RuleViolation(f"{name} {value} is before {what} ({earliest})")
    return value.isoformat()


def day_within(value: date, name: str, at: datetime, start: str, what: str, days: int,
               calendar: WorkCalendar) -> str:
    """A reported day no earlier than `start` and within `days` calendar days of it (start day
    not counted; a last day that is a rest day rolls to the next working day)."""
    day = reported_day(value, name, at, start, what)
    window = calendar_days_deadline(date.fromisoformat(start), days, calendar)
    if value > window.due_on:
        raise RuleViolation(f"{name} {value} is too late: the window closed on "
                            f"{window.due_on} ({window.explanation})")
    return day
