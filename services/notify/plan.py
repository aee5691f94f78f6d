"""From one case event to the documents it requires and the deliveries that carry them. Pure.

Event -> document kinds (the procedure) -> parties and channels (the jurisdiction's routes) ->
recipients (directory and contacts) -> one document per (kind, recipient), one delivery per
(event, recipient, channel) carrying that recipient's documents for the event.

Petitioner-facing documents are rendered with the petitioner's name and address; everything
else from a context with no identity at all, its free text scrubbed, and checked again after
rendering (see `confidentiality`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from petitions.domain.directory import Directory
from services.notify.config import (
    ASSISTING_UNITS,
    BUREAU,
    LEAD_UNIT,
    LEADER,
    PETITIONER,
    RESPONSIBLE_UNIT,
    Contacts,
    Route,
    Routes,
)
from services.notify.confidentiality import assert_clean, identity_terms, scrub
from services.notify.documents import (
    CATEGORY_LABELS,
    CHANNEL_LABELS,
    CLOCK_LABELS,
    NOT_ACCEPTED_AGAIN_GROUNDS,
    NOT_ACCEPTED_REASONS,
    OUTCOME_LABELS,
    PROPOSED_ACTIONS,
    Rendered,
    Renderer,
    cn_date,
    document_id,
    title_of,
)
from services.notify.facts import CaseFacts

# The events notify acts on, and the documents each requires.
TRIGGERS = ("RoutedToUnit", "Accepted", "NotAccepted", "NotAcceptedAgain", "ExtensionGranted",
            "Replied", "ClockWarned", "ClockMissed", "EscalationProposed", "EmergencyReported")


def kinds_for(event_type: str, data: dict[str, Any]) -> list[str]:
    if event_type == "RoutedToUnit":
        return ["assignment_slip"]
    if event_type == "Accepted":
        slip = "transfer_slip" if data.get("mode") == "transfer" else "assignment_slip"
        return ["acceptance_notice", slip]
    return {
        "NotAccepted": ["not_accepted_notice"],
        "NotAcceptedAgain": ["not_accepted_notice"],
        "ExtensionGranted": ["extension_notice"],
        "Replied": ["reply"],
        "ClockWarned": ["reminder"],
        "ClockMissed": ["supervision_notice"],
        "EscalationProposed": ["escalation_alert"],
        "EmergencyReported": ["emergency_report"],
    }.get(event_type, [])


@dataclass(frozen=True)
class Trigger:
    """The event that makes notify act."""

    case_id: str
    version: int
    type: str
    recorded_at: str
    data: dict[str, Any]

    @property
    def event_id(self) -> str:
        return f"{self.case_id}:{self.version}"


@dataclass(frozen=True)
class Recipient:
    id: str         # unit id, "petitioner", "representative:<n>", "leader:<id>"
    party: str
    name: str
    role: str = ""  # 主办 / 协办 for slips


REPRESENTATIVE_PREFIX = "representative:"
PERSON_ADDRESS_FIELD = {"sms": "phone", "email": "email"}


def answered_through(facts: CaseFacts) -> list[tuple[str, dict[str, str]]]:
    """Who receives what the petitioners are owed, by recipient id: nobody for an anonymous
    petition (no reply is owed); a collective visit's representatives; a joint petition's
    designated contact; otherwise the petitioner."""
    if facts.anonymous or not facts.petitioner:
        return []
    if facts.representatives:
        return [(f"{REPRESENTATIVE_PREFIX}{n}", person)
                for n, person in enumerate(facts.representatives, 1)]
    return [(PETITIONER, facts.contact or facts.petitioner)]


@dataclass
class PlannedDelivery:
    event_id: str
    case_id: str
    trigger_version: int
    division: str
    recipient: str
    party: str
    channel: str
    optional: bool
    documents: list[Rendered] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The idempotency key: (event, recipient, channel)."""
        return f"{self.event_id}:{self.recipient}:{self.channel}"

    @property
    def kind(self) -> str:
        return "+".join(dict.fromkeys(d.kind for d in self.documents))


@dataclass
class Plan:
    documents: list[Rendered]
    deliveries: list[PlannedDelivery]
    skipped: list[str] = field(default_factory=list)  # reasons, no identity


class Planner:
    def __init__(self, directory: Directory, routes: Routes, contacts: Contacts,
                 renderer: Renderer) -> None:
        self.directory = directory
        self.routes = routes
        self.contacts = contacts
        self.renderer = renderer

    # ------------------------------------------------------------------ parties

    def bureau_of(self, division: str) -> str | None:
        for code in (division, division[:4] + "00", division[:2] + "0000"):
            if code in self.directory.jurisdictions:
                return self.directory.jurisdiction(code).bureau_unit_id
        return None

    def unit_name(self, unit_id: str, fallback: str = "") -> str:
        try:
            return self.directory.unit(unit_id).name
        except KeyError:
            return fallback or unit_id

    def recipients(self, party: str, facts: CaseFacts, trigger: Trigger) -> list[Recipient]:
        d = trigger.data
        if party == PETITIONER:
            return [Recipient(rid, PETITIONER, str(who.get("name", "")))
                    for rid, who in answered_through(facts)]
        if party == LEAD_UNIT:
            uid = (d.get("unit_id") if trigger.type == "RoutedToUnit"
                   else d.get("lead_unit") if trigger.type == "Accepted" else None)
            uid = uid or facts.lead_unit
            return [self._unit(uid, LEAD_UNIT, "主办")] if uid else []
        if party == ASSISTING_UNITS:
            units = (d.get("assisting_units") if trigger.type == "Accepted" else None)
            units = units if units is not None else facts.assisting_units
            return [self._unit(u, ASSISTING_UNITS, "协办") for u in units]
        if party == RESPONSIBLE_UNIT:
            uid = None if d.get("clock") == "acceptance" else facts.lead_unit
            uid = uid or self.bureau_of(facts.division)
            return [self._unit(uid, RESPONSIBLE_UNIT, "")] if uid else []
        if party == BUREAU:
            uid = self.bureau_of(facts.division)
            return [self._unit(uid, BUREAU, "")] if uid else []
        if party == LEADER:
            return [Recipient(f"leader:{c.id}", LEADER, c.name)
                    for c in self.contacts.leaders_for(facts.division)]
        return []

    def _unit(self, unit_id: str, party: str, role: str) -> Recipient:
        return Recipient(unit_id, party, self.unit_name(unit_id), role)

    def is_accused(self, recipient: Recipient, facts: CaseFacts) -> bool:
        """An accusation never goes to the accused unit or a unit inside it."""
        if not facts.accused_unit or recipient.party in (PETITIONER, LEADER):
            return False
        return self.directory.is_inside(recipient.id, facts.accused_unit)

    # ------------------------------------------------------------------ the plan

    def plan(self, facts: CaseFacts, trigger: Trigger) -> Plan:
        documents: dict[tuple[str, str], Rendered] = {}
        deliveries: dict[tuple[str, str], PlannedDelivery] = {}
        skipped: list[str] = []
        terms = identity_terms(facts)  # the same for every document of the event
        for kind in kinds_for(trigger.type, trigger.data):
            for route in self.routes.for_kind(facts.division, kind):
                for r in self.recipients(route.party, facts, trigger):
                    if self.is_accused(r, facts):
                        skipped.append(f"{kind} not sent to {r.id}: it is the accused unit")
                        continue
                    if route.optional and not self.has_address(r, route, facts):
                        continue
                    doc = documents.get((kind, r.id))
                    if doc is None:
                        doc = self.render(kind, facts, trigger, r, terms)
                        documents[(kind, r.id)] = doc
                    key = (r.id, route.channel)
                    delivery = deliveries.get(key)
                    if delivery is None:
                        delivery = deliveries[key] = PlannedDelivery(
                            trigger.event_id, trigger.case_id, trigger.version, facts.division,
                            r.id, r.party, route.channel, route.optional)
                    if doc not in delivery.documents:
                        delivery.documents.append(doc)
        return Plan(list(documents.values()), list(deliveries.values()), skipped)

    def has_address(self, r: Recipient, route: Route, facts: CaseFacts) -> bool:
        return bool(self.address(r.party, r.id, route.channel, facts))

    def address(self, party: str, recipient: str, channel: str, facts: CaseFacts | None) -> str:
        """Where a recipient is reached on a channel; "" when nowhere. Webhooks of units
        without one in the directory are the caller's default."""
        if party == PETITIONER:
            who = dict(answered_through(facts)).get(recipient) if facts else None
            return str((who or {}).get(PERSON_ADDRESS_FIELD.get(channel, "-"), "") or "")
        if party == LEADER:
            lid = recipient.split(":", 1)[1]
            for c in self.contacts.leaders_for(facts.division if facts else ""):
                if c.id == lid:
                    return c.address(channel)
            return ""
        if channel == "webhook":
            try:
                return self.directory.unit(recipient).webhook
            except KeyError:
                return ""
        return self.contacts.unit(recipient).address(channel)

    # ------------------------------------------------------------------ rendering

    def render(self, kind: str, facts: CaseFacts, trigger: Trigger, r: Recipient,
               terms: list[str] | None = None) -> Rendered:
        """`terms`: identity_terms(facts), when the caller already has them."""
        for_petitioner = r.party == PETITIONER
        context = self.context(kind, facts, trigger, r)
        if terms is None:
            terms = identity_terms(facts)
        if not for_petitioner:
            context = scrub(context, terms)
        html, text, template = self.renderer.render(kind, facts.division, context)
        if not for_petitioner:
            assert_clean(html, terms, text)
        data = _petitioner_data(context) if for_petitioner else _public_data(context)
        return Rendered(
            id=document_id(trigger.event_id, kind, r.id), event_id=trigger.event_id,
            division=facts.division, kind=kind, recipient=r.id,
            party=r.party, title=context["doc"]["title"], html=html, text=text,
            template=template, data=data, for_petitioner=for_petitioner,
            digest=Rendered.digest_of(html),
        )

    def context(self, kind: str, facts: CaseFacts, trigger: Trigger,
                r: Recipient) -> dict[str, Any]:
        bureau_id = self.bureau_of(facts.division)
        issuer = self.unit_name(bureau_id) if bureau_id else "信访工作机构"
        title = title_of(kind)
        if trigger.type == "NotAcceptedAgain":
            title = "不再受理告知书"
        if kind in ("assignment_slip", "transfer_slip") and r.role:
            title = f"{title}（{r.role}）"
        ctx: dict[str, Any] = {
            "doc": {
                "kind": kind, "title": title,
                "number": f"{facts.case_number}-{trigger.version:03d}",
                "date": cn_date(trigger.recorded_at),
            },
            "issuer": issuer,
            "case": {
                "case_number": facts.case_number,
                "subject": facts.subject,
                "category": CATEGORY_LABELS.get(facts.category, facts.category),
                "channel": CHANNEL_LABELS.get(facts.channel, facts.channel),
                "received_on": cn_date(facts.received_at),
                "people_count": facts.people_count,
                "requests": list(facts.requests),
                "division": facts.division,
            },
            "recipient": {"name": r.name, "role": r.role, "party": r.party},
            "event": {},
        }
        if r.party != PETITIONER:
            # the matter, for those who must handle it; identity is scrubbed by the caller
            ctx["case"]["content"] = facts.content
            ctx["case"]["lead_unit"] = self.unit_name(facts.lead_unit) if facts.lead_unit else ""
            ctx["case"]["deadlines"] = {
                CLOCK_LABELS.get(c, c): cn_date(v.get("due_on")) for c, v in facts.clocks.items()}
        else:
            who = dict(answered_through(facts)).get(r.id) or {}
            ctx["petitioner"] = {"name": who.get("name", ""), "address": who.get("address", ""),
                                 "joint": bool(facts.contact),
                                 "representative": r.id.startswith(REPRESENTATIVE_PREFIX),
                                 "representatives": [p.get("name", "")
                                                     for p in facts.representatives]}
        ctx["event"] = self.event_context(kind, facts, trigger, r)
        return ctx

    def event_context(self, kind: str, facts: CaseFacts, trigger: Trigger,
                      r: Recipient) -> dict[str, Any]:
        d = trigger.data
        if trigger.type == "RoutedToUnit":
            return {"mode": "assign", "unit_name": d.get("unit_name") or r.name,
                    "explanation": d.get("explanation", ""),
                    "due_on": cn_date((facts.clocks.get("acceptance") or {}).get("due_on"))}
        if trigger.type == "Accepted":
            assisting = [self.unit_name(u) for u in d.get("assisting_units") or []]
            return {"mode": d.get("mode", "assign"), "decided_on": cn_date(d.get("decided_on")),
                    "lead_unit": self.unit_name(d.get("lead_unit", "")) if d.get("lead_unit")
                    else "", "assisting_units": assisting,
                    "handling_days": 60}
        if trigger.type == "NotAccepted":
            code = d.get("reason_code", "")
            return {"again": False, "reason": NOT_ACCEPTED_REASONS.get(code, code),
                    "reason_code": code, "redirect_organ": d.get("redirect_organ", ""),
                    "decided_on": cn_date(d.get("decided_on"))}
        if trigger.type == "NotAcceptedAgain":
            ground = d.get("ground", "")
            return {"again": True, "reason": NOT_ACCEPTED_AGAIN_GROUNDS.get(ground, ground),
                    "earlier_case_id": d.get("earlier_case_id", ""), "redirect_organ": "",
                    "decided_on": cn_date(d.get("decided_on"))}
        if trigger.type == "ExtensionGranted":
            return {"days": d.get("days"), "approver": d.get("approver", ""),
                    "reason": d.get("reason", "")}
        if trigger.type == "Replied":
            outcome = d.get("outcome", "")
            return {"outcome": OUTCOME_LABELS.get(outcome, outcome),
                    "reply_text": d.get("reply_text", ""),
                    "replied_on": cn_date(d.get("replied_on")),
                    "review_days": 30}
        if trigger.type in ("ClockWarned", "ClockMissed"):
            clock = d.get("clock", "")
            return {"clock": CLOCK_LABELS.get(clock, clock), "due_on": cn_date(d.get("due_on")),
                    "reminder_kind": d.get("kind", "reminder")}
        if trigger.type == "EscalationProposed":
            action = d.get("proposed_action", "")
            return {"reason": d.get("reason", ""),
                    "proposed_action": PROPOSED_ACTIONS.get(action, action),
                    "clock": CLOCK_LABELS.get(d.get("clock", ""), d.get("clock", ""))}
        if trigger.type == "EmergencyReported":
            return {"occurred_at": _cn_time(d.get("occurred_at", "")), "place": d.get("place", ""),
                    "scale": d.get("scale", ""), "people": d.get("people", ""),
                    "cause": d.get("cause", ""), "requests": list(d.get("requests") or []),
                    "nature": d.get("nature", "")}
        return {}


def _cn_time(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    from petitions.domain.values import CHINA_TZ

    local = moment.astimezone(CHINA_TZ) if moment.tzinfo else moment
    return f"{local.year}年{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}"


def _public_data(context: dict[str, Any]) -> dict[str, Any]:
    """Structured fields of a unit-facing document (already scrubbed) for webhook bodies."""
    return {"title": context["doc"]["title"], "number": context["doc"]["number"],
            "date": context["doc"]["date"], "issuer": context["issuer"],
            "case": context["case"], "event": context["event"],
            "recipient": context["recipient"]}


def _petitioner_data(context: dict[str, Any]) -> dict[str, Any]:
    """What is stored in clear about a petitioner's document: no identity, no content."""
    return {"title": context["doc"]["title"], "number": context["doc"]["number"],
            "date": context["doc"]["date"], "issuer": context["issuer"],
            "case": {"case_number": context["case"]["case_number"]}}
