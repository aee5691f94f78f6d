"""Value types of the petition domain: channels, categories, actors, petitioners.

Pure: no I/O, no framework imports.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum


class Channel(StrEnum):
    LETTER = "letter"
    VISIT = "visit"
    PHONE = "phone"
    ONLINE = "online"
    TRANSFERRED = "transferred"


class Category(StrEnum):
    SUGGESTION = "suggestion"
    ACCUSATION = "accusation"
    APPEAL = "appeal"


class CaseStatus(StrEnum):
    """Where a case stands in its statutory life (transitions: petitions/domain/lifecycle.py)."""

    REGISTERED = "registered"
    ACCEPTED = "accepted"  # 受理: being handled by the lead unit
    NOT_ACCEPTED = "not_accepted"  # 不予受理 (final; only closing and archiving follow)
    NOT_ACCEPTED_AGAIN = "not_accepted_again"  # 不再受理
    REPLIED = "replied"  # written reply (答复意见书) issued
    UNDER_REVIEW = "under_review"  # 复查 requested
    REVIEWED = "reviewed"  # review opinion issued
    UNDER_RE_REVIEW = "under_re_review"  # 复核 requested
    TERMINATED = "terminated"  # 终结 after re-review
    WITHDRAWN = "withdrawn"  # 撤回, voluntarily
    CLOSED = "closed"  # 结案
    ARCHIVED = "archived"  # 归档


DIVISION_CODE = re.compile(r"^[1-9]\d{5}$")


def is_division_code(code: str) -> bool:
    """A 6-digit GB/T 2260 administrative division code (province, city or county level)."""
    return bool(DIVISION_CODE.match(code))


def division_prefix(code: str) -> str:
    """The prefix shared by every division inside `code`'s subtree.

    330000 (province) -> "33", 330100 (city) -> "3301", 330106 (county) -> "330106".
    """
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


def is_within(division: str, jurisdiction: str) -> bool:
    """True when `division` lies in `jurisdiction`'s subtree (a jurisdiction contains itself)."""
    return division.startswith(division_prefix(jurisdiction))


@dataclass(frozen=True)
class Actor:
    """Who did something: a person or a service, acting in a role for a jurisdiction."""

    id: str
    role: str
    jurisdiction: str = ""

    def as_dict(self) -> dict[str, str]:
        # spelled out: every appended event carries its actor, and dataclasses.asdict
        # (recursive, copying) cost some 40 times this
        return {"id": self.id, "role": self.role, "jurisdiction": self.jurisdiction}


@dataclass(frozen=True)
class Petitioner:
    """Identity of a named petitioner. Confidential: never leaves the store in clear."""

    name: str
    id_number: str = ""
    phone: str = ""
    address: str = ""
    email: str = ""

    def as_dict(self) -> dict[str, str]:
        # spelled out, as Actor's: every registration fingerprints it (a test holds it
        # equal to dataclasses.asdict)
        return {"name": self.name, "id_number": self.id_number, "phone": self.phone,
                "address": self.address, "email": self.email}


@dataclass(frozen=True)
class Contact:
    """A person the bureau answers through: a collective visit's representative or a joint
    petition's designated contact. Confidential like a petitioner's identity."""

    name: str
    phone: str = ""
    email: str = ""
    address: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone, "email": self.email,
                "address": self.address}

    @classmethod
    def named(cls, value: Contact | str) -> Contact:
        """Representatives were registered by name alone before contacts were recorded."""
        return value if isinstance(value, Contact) else cls(name=value)


# China Standard Time has had no daylight saving since 1991: a fixed offset is exact and needs
# no time zone database. Statutory days are counted in local dates.
CHINA_TZ = timezone(timedelta(hours=8), "CST")


def local_date(moment: datetime) -> date:
    """The calendar day in China on which `moment` fell."""
    return moment.astimezone(CHINA_TZ).date()
