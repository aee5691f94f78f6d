"""Rules about who and how many come: representatives, collective visits, escalation. Pure.

2022 regulation Art. 20: a visit of 5 or more people names at most 5 representatives;
5-29 people is an ordinary collective visit, 30+ a major one. Escalate to the principal
leader on a person's 3rd visit on a matter, a collective visit of 10+ people, or 3+ people on
their 3rd visit. A joint petition (联名: several signatories, not in person) is answered through
its designated contact.
"""
from __future__ import annotations

from petitions.domain.errors import RuleViolation
from petitions.domain.values import Channel, Contact

MAX_REPRESENTATIVES = 5
COLLECTIVE_VISIT_PEOPLE = 5
MAJOR_COLLECTIVE_VISIT_PEOPLE = 30
LEADER_COLLECTIVE_VISIT_PEOPLE = 10
LEADER_REPEAT_VISIT = 3
LEADER_REPEAT_GROUP_PEOPLE = 3


def check_registration(channel: Channel, people_count: int, representatives: list[Contact],
                       *, contact: Contact | None = None, anonymous: bool = False) -> None:
    check_people(channel, people_count, representatives)
    if contact is not None:
        check_designated_contact(channel, people_count, anonymous)


def check_designated_contact(channel: Channel, people_count: int, anonymous: bool) -> None:
    """Only a joint petition has a designated contact; an anonymous one has nobody to tell."""
    if anonymous:
        raise RuleViolation("an anonymous petition has no designated contact")
    if not is_joint_petition(channel, people_count):
        raise RuleViolation(
            "a designated contact is named by a joint petition (2 or more signatories, not a "
            "visit); a visit names representatives")


def is_joint_petition(channel: Channel, people_count: int) -> bool:
    return channel is not Channel.VISIT and people_count >= 2


def check_people(channel: Channel, people_count: int, representatives: list[Contact]) -> None:
    if people_count < 1:
        raise RuleViolation("people_count must be at least 1")
    if len(representatives) > MAX_REPRESENTATIVES:
        raise RuleViolation(
            f"a collective visit names at most {MAX_REPRESENTATIVES} representatives, "
            f"got {len(representatives)}")
    if is_collective_visit(channel, people_count) and not representatives:
        raise RuleViolation(
            f"a visit of {people_count} people must name its representatives "
            f"(at most {MAX_REPRESENTATIVES})")


def is_collective_visit(channel: Channel, people_count: int) -> bool:
    return channel is Channel.VISIT and people_count >= COLLECTIVE_VISIT_PEOPLE


def is_major_collective_visit(people_count: int) -> bool:
    return people_count >= MAJOR_COLLECTIVE_VISIT_PEOPLE


def leader_escalation_reason(channel: Channel, people_count: int, visit_number: int) -> str | None:
    """Why this visit goes to the principal leader, or None. `visit_number` counts this visit
    among the same petitioner's visits on the matter (1 for a first visit)."""
    if channel is not Channel.VISIT:
        return None
    if people_count >= LEADER_COLLECTIVE_VISIT_PEOPLE:
        return f"collective visit of {people_count} people (10 or more)"
    if visit_number >= LEADER_REPEAT_VISIT and people_count >= LEADER_REPEAT_GROUP_PEOPLE:
        return f"{people_count} people on their visit no. {visit_number} on this matter"
    if visit_number >= LEADER_REPEAT_VISIT:
        return f"visit no. {visit_number} by the same petitioner on this matter"
    return None
