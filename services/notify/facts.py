"""What notify needs to know about a case, folded from its events. Pure.

Read from the events' data rather than the aggregate's attributes, so the documents depend on
the recorded facts only (and on nothing a later refactoring of `Case` renames).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CaseFacts:
    case_id: str
    version: int = 0
    case_number: str = ""
    division: str = ""
    channel: str = ""
    category: str = ""
    subject: str = ""
    content: str = ""
    requests: list[str] = field(default_factory=list)
    people_count: int = 1
    anonymous: bool = False
    # Identity: the petitioner as registered, the accused unit, a collective visit's
    # representatives and a joint petition's designated contact (name, phone, e-mail, address).
    petitioner: dict[str, str] | None = None
    representatives: list[dict[str, str]] = field(default_factory=list)
    contact: dict[str, str] | None = None
    accused_unit: str = ""
    received_at: str = ""
    registered_at: str = ""
    lead_unit: str = ""
    lead_unit_name: str = ""
    assisting_units: list[str] = field(default_factory=list)
    mode: str = ""  # "assign" | "transfer" once accepted
    routing_explanation: str = ""
    clocks: dict[str, dict[str, Any]] = field(default_factory=dict)
    earlier_divisions: list[str] = field(default_factory=list)

    @property
    def divisions(self) -> list[str]:
        return [self.division, *self.earlier_divisions]


def fold(case_id: str, events: list[tuple[str, int, str, dict[str, Any]]]) -> CaseFacts | None:
    """`events`: (type, version, recorded_at ISO, data) in order. None without a registration."""
    facts: CaseFacts | None = None
    for etype, version, at, data in events:
        if etype == "Registered":
            facts = CaseFacts(
                case_id=case_id, case_number=data["case_number"], division=data["division"],
                channel=data["channel"], category=data["category"], subject=data["subject"],
                content=data.get("content", ""), requests=list(data.get("requests") or []),
                people_count=int(data.get("people_count", 1)),
                anonymous=bool(data.get("anonymous")), petitioner=data.get("petitioner"),
                representatives=[_contact(r) for r in data.get("representatives") or []],
                contact=data.get("contact") or None,
                accused_unit=data.get("accused_unit") or "",
                received_at=data.get("received_at", ""), registered_at=at,
            )
        if facts is None:
            continue
        facts.version = version
        if etype == "RoutedToUnit":
            facts.lead_unit = data["unit_id"]
            facts.lead_unit_name = data.get("unit_name", "")
            facts.routing_explanation = data.get("explanation", "")
        elif etype == "Accepted":
            facts.mode = data.get("mode", "")
            if data.get("lead_unit"):
                facts.lead_unit = data["lead_unit"]
                facts.lead_unit_name = ""
            facts.assisting_units = list(data.get("assisting_units") or [])
        elif etype == "ClockStarted":
            facts.clocks[data["clock"]] = dict(data)
        elif etype == "ReassignedToUnit" and data.get("unit_id"):
            facts.lead_unit = data["unit_id"]
            facts.lead_unit_name = data.get("unit_name", "")
        elif etype == "ObjectionDecided" and data.get("upheld") and data.get("new_lead_unit"):
            facts.lead_unit = data["new_lead_unit"]
            facts.lead_unit_name = ""
        elif etype == "TransferredToJurisdiction" and data.get("to_division"):
            # the case moves to another county's queue: its bureau and routes apply now;
            # both keep seeing it
            facts.earlier_divisions.append(facts.division)
            facts.division = data["to_division"]
            facts.lead_unit = ""
            facts.lead_unit_name = ""
    return facts


def _contact(value: dict[str, str] | str) -> dict[str, str]:
    # events folded from their stored data keep the shape they were recorded in
    return dict(value) if isinstance(value, dict) else {"name": str(value)}
