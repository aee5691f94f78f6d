"""The case summary read model, as a pure fold over a case's events.

The projection stores exactly what `fold_summary` returns, so rebuilding from the log
reproduces it, and the same fold serves a case straight from the store. Appliers change the
summary in place; `fold_summary` and `fold_events` work on a copy of what they are given.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from petitions.domain.intake_rules import is_major_collective_visit
from petitions.domain.lifecycle import (
    CLOSES_WITHOUT_FILE,
    STATUS_AFTER,
    Flags,
    actions_allowed,
    missing_file_items,
)
from petitions.domain.values import local_date

Summary = dict[str, Any]


def fold_summary(summary: Summary | None, case_id: str, event_type: str, version: int,
                 recorded_at: str, data: dict[str, Any], *, refresh: bool = True) -> Summary:
    """Apply one event to a copy of `summary` (which stays as it was). `refresh=False` skips
    the derived lifecycle fields, for folding many events at once (`refresh_derived` once at
    the end gives the same result)."""
    summary = apply_event(None if summary is None else _copy(summary), case_id, event_type,
                          version, recorded_at, data)
    if refresh:
        _refresh_lifecycle(summary)
    return summary


def apply_event(summary: Summary | None, case_id: str, event_type: str, version: int,
                recorded_at: str, data: dict[str, Any]) -> Summary:
    """As `fold_summary(..., refresh=False)`, but changes `summary` in place: for a caller
    that owns it (a fold from nothing, a summary just read from storage). Copying the summary
    for every event made folding a case with many notices quadratic."""
    if summary is None:
        summary = _empty(case_id)
    summary["version"] = version
    summary["updated_at"] = recorded_at
    apply = _APPLIERS.get(event_type)
    if apply is not None:
        apply(summary, data, version, recorded_at)
    return summary


def changes_summary(event_type: str) -> bool:
    """Whether an event of this type changes more than `version` and `updated_at`: the others
    need not be decoded unless they are the newest event folded."""
    return event_type in _APPLIERS


def fold_events(summary: Summary | None, case_id: str,
                events: Iterable[tuple[str, int, str, dict[str, Any]]]) -> Summary | None:
    """Fold (type, version, recorded_at, data) events, deriving lifecycle fields once."""
    if summary is not None:
        summary = _copy(summary)
    for event_type, version, recorded_at, data in events:
        summary = apply_event(summary, case_id, event_type, version, recorded_at, data)
    if summary is not None:
        _refresh_lifecycle(summary)
    return summary


def _copy(value: Any) -> Any:
    """A copy of a summary sharing no dict or list with it (appliers change them in place)."""
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def refresh_derived(summary: Summary) -> Summary:
    _refresh_lifecycle(summary)
    return summary


def _empty(case_id: str) -> Summary:
    return {"case_id": case_id, "status": None, "unit": None, "deadlines": {}, "notices": {},
            **_lifecycle_defaults()}


def _registered(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.update(
        case_number=d["case_number"],
        status="registered",
        channel=d["channel"],
        category=d["category"],
        division=d["division"],
        subject=d["subject"],
        requests=d["requests"],
        people_count=d["people_count"],
        anonymous=d["anonymous"],
        received_at=d["received_at"],
        registered_at=at,
        representatives_count=len(d.get("representatives") or []),
        major=is_major_collective_visit(d["people_count"]),
        accused_unit=d.get("accused_unit") or None,
        repeat_count=0,
    )


def _routed(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["unit"] = {
        "unit_id": d["unit_id"],
        "unit_name": d["unit_name"],
        "rule_id": d["rule_id"],
        "rule_set_version": d["rule_set_version"],
        "explanation": d["explanation"],
        "assisting_units": d.get("assisting_units", []),
        "skipped": d.get("skipped", []),
    }


def _non_acceptance_proposed(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["routing_proposal"] = {"reason_code": d["reason_code"],
                             "proposed_channel": d["proposed_channel"],
                             "explanation": d["explanation"]}


def _transferred(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["division"] = d["to_division"]
    s.setdefault("jurisdictions", [d["from_division"]]).append(d["to_division"])
    s["unit"] = None
    s["routing_proposal"] = None
    s.setdefault("transfers", []).append(
        {"from": d["from_division"], "to": d["to_division"], "at": at})


def _reassigned(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["unit"] = {**(s.get("unit") or {}), "unit_id": d["unit_id"], "unit_name": d["unit_name"],
                 "rule_id": "", "explanation": f"reassigned: {d['reason']}"}


def _remit_dispute(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.setdefault("remit_disputes", []).append(
        {"units": d["units"], "common_superior": d["common_superior"], "at": at})


def _clock_started(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["deadlines"][d["clock"]] = {
        "started_on": d["started_on"],
        "due_on": d["due_on"],
        "length": d["length"],
        "day_kind": d["day_kind"],
        "explanation": d["explanation"],
        "provisional": d["provisional"],
        "state": "running",
    }


def _notice(state: str):
    def apply(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
        final_state = "dead_lettered" if d.get("final") else state
        s["notices"][d["notice_id"]] = {
            "kind": d["kind"],
            "recipient": d["recipient"],
            "channel": d["channel"],
            "attempts": d["attempts"],
            "state": final_state,
            "at": at,
        }

    return apply


def _repeat(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["repeat_count"] = d["repeat_number"]
    s["visit_count"] = d["visit_number"]


def _duplicate(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.setdefault("merged_duplicates", []).append(
        {"channel": d["channel"], "source": d["source"], "at": at})


def _escalated(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.setdefault("leader_escalations", []).append({"trigger": d["trigger"], "at": at})


def _notice_requeued(s: Summary, d: dict[str, Any], at: str) -> None:
    before = s["notices"].get(d["notice_id"], {})
    s["notices"][d["notice_id"]] = {
        "kind": d["kind"], "recipient": d["recipient"], "channel": d["channel"],
        "attempts": before.get("attempts", 0), "state": "requeued", "at": at}


def _emergency(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    # Time, place, scale and nature only: the people involved stay in the history.
    s.setdefault("emergencies", []).append({
        "occurred_at": d["occurred_at"], "place": d["place"], "scale": d["scale"],
        "nature": d["nature"], "version": version, "at": at})


_APPLIERS = {
    "NonAcceptanceProposed": _non_acceptance_proposed,
    "TransferredToJurisdiction": _transferred,
    "ReassignedToUnit": _reassigned,
    "RemitDisputeEscalated": _remit_dispute,
    "RepeatPetitionLinked": _repeat,
    "DuplicateMerged": _duplicate,
    "EscalatedToPrincipalLeader": _escalated,
    "Registered": _registered,
    "RoutedToUnit": _routed,
    "ClockStarted": _clock_started,
    "NoticeDelivered": _notice("delivered"),
    "NoticeDeliveryFailed": _notice("failed"),
    "NoticeSent": _notice("sent"),
    "NoticeDeadLettered": _notice("dead_lettered"),
    "NoticeRequeued": lambda s, d, v, at: _notice_requeued(s, d, at),
    "EmergencyReported": lambda s, d, v, at: _emergency(s, d, v, at),
}


# -- clock supervision (the deadlines service) ---------------------------------------------
# Each deadline shows its state (running / overdue / met / late / closed), due date, how it
# was computed (explanation: the period, the holidays in it, the roll-forward rule that
# applied) and whether it is provisional; the case carries an `overdue` flag while any clock
# is past due with its duty unmet.


def _with_clock(s: Summary, clock: str, **changes: Any) -> None:
    deadlines = s["deadlines"]
    deadlines[clock] = {**deadlines.get(clock, {"clock": clock}), **changes}
    s["overdue"] = any(d.get("state") == "overdue" for d in s["deadlines"].values())


def _clock_started_supervised(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _clock_started(s, d, version, at)
    _with_clock(s, d["clock"], outcome=None, stopped_on=None, warned_for=None, missed_for=None,
                paused_days=0)


def _still_overdue(s: Summary, clock: str, due_on: str) -> str:
    return "overdue" if s["deadlines"].get(clock, {}).get("missed_for") == due_on else "running"


def _clock_moved(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _with_clock(s, d["clock"], due_on=d["due_on"], explanation=d["explanation"],
                provisional=d["provisional"], length=d["length"], paused_days=d["paused_days"],
                state=_still_overdue(s, d["clock"], d["due_on"]))


def _clock_recomputed(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _with_clock(s, d["clock"], due_on=d["due_on"], explanation=d["explanation"],
                provisional=d["provisional"], state=_still_overdue(s, d["clock"], d["due_on"]))


def _clock_stopped(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _with_clock(s, d["clock"], state=d["outcome"], outcome=d["outcome"],
                stopped_on=d["stopped_on"])


def _clock_warned(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _with_clock(s, d["clock"], warned_for=d["due_on"], warned_at=at)


def _clock_missed(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    _with_clock(s, d["clock"], missed_for=d["due_on"], missed_at=at, state="overdue")


def _escalation_proposed(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.setdefault("escalations_proposed", []).append({
        "clock": d["clock"], "key": d["key"], "proposed_action": d["proposed_action"],
        "reason": d.get("reason", ""), "version": version, "at": at})


_APPLIERS.update({
    "ClockStarted": _clock_started_supervised,
    "ClockMoved": _clock_moved,
    "ClockRecomputed": _clock_recomputed,
    "ClockStopped": _clock_stopped,
    "ClockWarned": _clock_warned,
    "ClockMissed": _clock_missed,
    "EscalationProposed": _escalation_proposed,
})


# -- lifecycle: acceptance, handling, reply, review, re-review, closing -------------------
# Outcomes, dates, units and flags only: free texts (replies, opinions, answers, notes) stay
# in the case's history, where access rules guard them.


def _lifecycle_defaults() -> Summary:
    return {
        "acceptance": None, "lead_unit": None, "assisting_units": [], "objection": None,
        "progress_reports": 0, "last_progress_at": None, "hearings": [], "extension": None,
        "reply": None, "review": None, "re_review": None, "return_visits": [],
        "satisfaction": None, "reopened": 0,
        "withdrawal": {"withdrawn": False, "flagged_for_investigation": 0},
        "file": {"handling_opinion": False, "leader_sign_off": None,
                 "petitioner_signature": None, "missing": []},
        "closed_on": None, "archived_on": None, "allowed_actions": [],
    }


def _refresh_lifecycle(s: Summary) -> None:
    """Derived fields, recomputed after every event: what may be done now, and what the
    case file still lacks before the case can be closed."""
    for key, value in _lifecycle_defaults().items():
        s.setdefault(key, value)
    objection, reply = s["objection"], s["reply"]
    flags = Flags(
        # As Case.is_routed: a unit was chosen, or not accepting was proposed.
        routed=s.get("unit") is not None or s.get("routing_proposal") is not None,
        anonymous=bool(s.get("anonymous")),
        objection_pending=objection is not None and objection["state"] == "pending",
        assignment_objected=objection is not None and objection["state"] != "upheld",
        extended=s["extension"] is not None,
        reply_received=bool(reply and reply["received_on"]),
    )
    s["allowed_actions"] = list(_actions_allowed(s.get("status"), flags))
    file = s["file"]
    handled = (s["acceptance"] or {}).get("decision") == "accepted"
    needs_file = handled and s.get("status") not in CLOSES_WITHOUT_FILE
    s["file"] = {**file, "missing": missing_file_items(
        has_reply=reply is not None, has_handling_opinion=file["handling_opinion"],
        has_leader_sign_off=file["leader_sign_off"] is not None,
        has_petitioner_signature=file["petitioner_signature"] is not None,
        anonymous=bool(s.get("anonymous")),
    ) if needs_file else []}


@functools.lru_cache(maxsize=512)
def _actions_allowed(status: str | None, flags: Flags) -> tuple[str, ...]:
    # A few dozen (status, flags) pairs cover every case: rebuilding a projection asks for
    # the same ones for every case.
    return tuple(actions_allowed(status, flags))


def _advance(event_type: str):
    """An applier that moves the status as lifecycle.STATUS_AFTER says, then applies `body`."""
    def wrap(body):
        def apply(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
            body(s, d, at)
            s["status"] = STATUS_AFTER[event_type].value
        return apply
    return wrap


def _keep(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: d[k] for k in keys}


@_advance("Accepted")
def _accepted(s: Summary, d: dict[str, Any], at: str) -> None:
    s["acceptance"] = {"decision": "accepted", **_keep(d, "mode", "decided_on")}
    s["lead_unit"] = d["lead_unit"]
    s["assisting_units"] = list(d["assisting_units"])
    s["assigned_on"] = d["decided_on"]
    s["objection"] = None


@_advance("NotAccepted")
def _not_accepted(s: Summary, d: dict[str, Any], at: str) -> None:
    s["acceptance"] = {"decision": "not_accepted",
                       **_keep(d, "reason_code", "redirect_organ", "decided_on")}


@_advance("NotAcceptedAgain")
def _not_accepted_again(s: Summary, d: dict[str, Any], at: str) -> None:
    s["acceptance"] = {"decision": "not_accepted_again",
                       **_keep(d, "earlier_case_id", "ground", "decided_on")}


@_advance("AnsweredOnTheSpot")
def _answered_on_the_spot(s: Summary, d: dict[str, Any], at: str) -> None:
    s["acceptance"] = {"decision": "answered_on_the_spot", "decided_on": d["decided_on"]}
    s["closed_on"] = d["decided_on"]


def _progress(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["progress_reports"] = s.get("progress_reports", 0) + 1
    s["last_progress_at"] = at


def _hearing(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    stage = {"under_review": "review", "under_re_review": "re_review"}.get(s["status"],
                                                                          "handling")
    s.setdefault("hearings", []).append({"held_on": d["held_on"],
                                         "duration_days": d["duration_days"], "stage": stage})
    if stage != "handling":
        current = s[stage]
        s[stage] = {**current, "hearing_days": current["hearing_days"] + d["duration_days"]}


def _objected(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["objection"] = {**_keep(d, "unit_id", "objected_on"), "state": "pending",
                      "decided_by": None, "new_lead_unit": None}


def _objection_decided(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["objection"] = {**s["objection"], "state": "upheld" if d["upheld"] else "rejected",
                      **_keep(d, "decided_by", "new_lead_unit")}
    if d["upheld"] and d["new_lead_unit"]:
        s["lead_unit"] = d["new_lead_unit"]
        s["assisting_units"] = [u for u in s["assisting_units"] if u != d["new_lead_unit"]]
        s["assigned_on"] = local_date(datetime.fromisoformat(at)).isoformat()


def _extended(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["extension"] = {**_keep(d, "days", "approver", "petitioner_told"), "granted_at": at}


@_advance("Replied")
def _replied(s: Summary, d: dict[str, Any], at: str) -> None:
    s["reply"] = {**_keep(d, "outcome", "replied_on"), "received_on": None}


def _reply_received(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s["reply"] = {**s["reply"], "received_on": d["received_on"]}


def _stage_requested(stage: str, event_type: str):
    @_advance(event_type)
    def apply(s: Summary, d: dict[str, Any], at: str) -> None:
        s[stage] = {**_keep(d, "requested_on", "organ"), "outcome": None, "issued_on": None,
                    "hearing_days": 0}
    return apply


def _stage_opinion(stage: str, event_type: str):
    @_advance(event_type)
    def apply(s: Summary, d: dict[str, Any], at: str) -> None:
        s[stage] = {**s[stage], **_keep(d, "outcome", "issued_on")}
    return apply


def _return_visit(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    s.setdefault("return_visits", []).append(_keep(d, "satisfaction", "visited_on"))
    s["satisfaction"] = d["satisfaction"]


@_advance("WorkReopened")
def _reopened(s: Summary, d: dict[str, Any], at: str) -> None:
    s["reply"] = None
    s["reopened"] = s.get("reopened", 0) + 1


@_advance("Withdrawn")
def _withdrawn(s: Summary, d: dict[str, Any], at: str) -> None:
    s["withdrawal"] = {**s["withdrawal"], "withdrawn": True}


def _withdrawal_flagged(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
    w = s["withdrawal"]
    s["withdrawal"] = {**w, "flagged_for_investigation": w["flagged_for_investigation"] + 1}


def _file_item(key: str, value):
    def apply(s: Summary, d: dict[str, Any], version: int, at: str) -> None:
        s["file"] = {**s["file"], key: value(d)}
    return apply


@_advance("Closed")
def _closed(s: Summary, d: dict[str, Any], at: str) -> None:
    s["closed_on"] = d["closed_on"]


@_advance("Archived")
def _archived(s: Summary, d: dict[str, Any], at: str) -> None:
    s["archived_on"] = d["archived_on"]


_LIFECYCLE_APPLIERS = {
    "NonAcceptanceProposed": _non_acceptance_proposed,
    "TransferredToJurisdiction": _transferred,
    "ReassignedToUnit": _reassigned,
    "RemitDisputeEscalated": _remit_dispute,
    "Accepted": _accepted,
    "NotAccepted": _not_accepted,
    "NotAcceptedAgain": _not_accepted_again,
    "AnsweredOnTheSpot": _answered_on_the_spot,
    "ProgressReported": _progress,
    "HearingHeld": _hearing,
    "AssignmentObjected": _objected,
    "ObjectionDecided": _objection_decided,
    "ExtensionGranted": _extended,
    "Replied": _replied,
    "ReplyReceived": _reply_received,
    "ReviewRequested": _stage_requested("review", "ReviewRequested"),
    "ReviewOpinionIssued": _stage_opinion("review", "ReviewOpinionIssued"),
    "ReReviewRequested": _stage_requested("re_review", "ReReviewRequested"),
    "ReReviewOpinionIssued": _stage_opinion("re_review", "ReReviewOpinionIssued"),
    "ReturnVisitRecorded": _return_visit,
    "WorkReopened": _reopened,
    "Withdrawn": _withdrawn,
    "WithdrawalFlaggedForInvestigation": _withdrawal_flagged,
    "HandlingOpinionRecorded": _file_item("handling_opinion", lambda d: True),
    "LeaderSignedOff": _file_item("leader_sign_off", lambda d: d["leader"]),
    "PetitionerSignatureRecorded": _file_item(
        "petitioner_signature", lambda d: "signed" if d["signed"] else "refused"),
    "Closed": _closed,
    "Archived": _archived,
}


_APPLIERS.update(_LIFECYCLE_APPLIERS)
