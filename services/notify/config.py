"""Which parties get which documents on which channels, and how to reach them.

`config/notify-routes.json`: per division prefix ("33" the province, "3301" a city, "330106" a
county) and document kind, the list of `{party, channel[, optional]}` to send it to. The
longest prefix of the case's division that configures a kind wins for that kind, so a county
overrides only what it changes. `optional: true` means "skip quietly when the party has no
address on that channel" (a petitioner without e-mail); otherwise a missing address is
dead-lettered at once, so an operator sees that someone must be told another way.

`config/notify-contacts.json`: e-mail addresses and phone numbers of units (the directory
holds only their webhooks and rejects unknown fields) and the leaders of each jurisdiction.

Pure: parsing and look-ups only; reading the files is the caller's job.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Document kinds notify produces, with their Chinese titles.
KINDS: dict[str, str] = {
    "acceptance_notice": "受理告知书",
    "not_accepted_notice": "不予受理告知书",
    "assignment_slip": "交办单",
    "transfer_slip": "转送单",
    "extension_notice": "延期办理告知书",
    "reply": "信访事项处理意见书",
    "reminder": "催办通知",
    "supervision_notice": "督办通知",
    "escalation_alert": "提请领导关注",
    "emergency_report": "紧急情况报告",
}

PETITIONER = "petitioner"
LEAD_UNIT = "lead_unit"
ASSISTING_UNITS = "assisting_units"
RESPONSIBLE_UNIT = "responsible_unit"  # the unit a clock runs against (bureau for acceptance)
BUREAU = "bureau"
LEADER = "leader"
PARTIES = frozenset({PETITIONER, LEAD_UNIT, ASSISTING_UNITS, RESPONSIBLE_UNIT, BUREAU, LEADER})

WEBHOOK = "webhook"
EMAIL = "email"
SMS = "sms"
CHANNELS = frozenset({WEBHOOK, EMAIL, SMS})


@dataclass(frozen=True)
class Route:
    party: str
    channel: str
    optional: bool = False


@dataclass(frozen=True)
class Routes:
    """Document kind -> routes, per division prefix."""

    by_prefix: Mapping[str, Mapping[str, tuple[Route, ...]]]
    version: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Routes:
        if not isinstance(d, Mapping) or not isinstance(d.get("routes"), Mapping):
            raise ValueError("notify routes: expected {\"routes\": {prefix: {kind: [...]}}}")
        unknown = sorted(set(d) - {"routes", "version", "comment"})
        if unknown:
            raise ValueError(f"notify routes: unknown field(s) {', '.join(unknown)}")
        by_prefix: dict[str, dict[str, tuple[Route, ...]]] = {}
        for prefix, kinds in d["routes"].items():
            what = f"notify routes {prefix!r}"
            if not (isinstance(prefix, str) and prefix.isdigit() and 1 <= len(prefix) <= 6):
                raise ValueError(f"{what}: a prefix is 1-6 digits of a division code")
            if not isinstance(kinds, Mapping):
                raise ValueError(f"{what}: expected an object of document kinds")
            parsed: dict[str, tuple[Route, ...]] = {}
            for kind, routes in kinds.items():
                if kind not in KINDS:
                    raise ValueError(f"{what}: unknown document kind {kind!r}")
                if not isinstance(routes, list):
                    raise ValueError(f"{what}/{kind}: expected a list of routes")
                items = []
                for r in routes:
                    if not isinstance(r, Mapping) or set(r) - {"party", "channel", "optional"}:
                        raise ValueError(f"{what}/{kind}: a route is {{party, channel[, optional]}}")
                    if r.get("party") not in PARTIES:
                        raise ValueError(f"{what}/{kind}: unknown party {r.get('party')!r}")
                    if r.get("channel") not in CHANNELS:
                        raise ValueError(f"{what}/{kind}: unknown channel {r.get('channel')!r}")
                    if r["party"] == PETITIONER and r["channel"] == WEBHOOK:
                        raise ValueError(f"{what}/{kind}: petitioners have no webhook")
                    items.append(Route(r["party"], r["channel"], bool(r.get("optional", False))))
                parsed[kind] = tuple(items)
            by_prefix[prefix] = parsed
        return cls(by_prefix, str(d.get("version", "")))

    def for_kind(self, division: str, kind: str) -> tuple[Route, ...]:
        """The routes of the longest prefix of `division` that configures `kind`."""
        for n in range(len(division), 0, -1):
            kinds = self.by_prefix.get(division[:n])
            if kinds is not None and kind in kinds:
                return kinds[kind]
        return ()


@dataclass(frozen=True)
class Contact:
    id: str
    name: str = ""
    email: str = ""
    phone: str = ""
    webhook: str = ""

    def address(self, channel: str) -> str:
        return {EMAIL: self.email, SMS: self.phone, WEBHOOK: self.webhook}.get(channel, "")


@dataclass(frozen=True)
class Contacts:
    units: Mapping[str, Contact] = field(default_factory=dict)
    leaders: Mapping[str, tuple[Contact, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Contacts:
        if not isinstance(d, Mapping):
            raise ValueError("notify contacts: expected an object")
        unknown = sorted(set(d) - {"units", "leaders", "comment"})
        if unknown:
            raise ValueError(f"notify contacts: unknown field(s) {', '.join(unknown)}")
        units = {uid: _contact(uid, c, f"unit {uid!r}") for uid, c in d.get("units", {}).items()}
        leaders: dict[str, tuple[Contact, ...]] = {}
        for code, people in d.get("leaders", {}).items():
            if not isinstance(people, list):
                raise ValueError(f"leaders of {code!r}: expected a list")
            leaders[code] = tuple(
                _contact(str(p.get("id", "")), p, f"leader of {code!r}") for p in people)
        return cls(units, leaders)

    def unit(self, unit_id: str) -> Contact:
        return self.units.get(unit_id) or Contact(unit_id)

    def leaders_for(self, division: str) -> tuple[Contact, ...]:
        """The leaders of the nearest jurisdiction at or above `division` that lists any."""
        for code in (division, division[:4] + "00", division[:2] + "0000"):
            if self.leaders.get(code):
                return self.leaders[code]
        return ()


def _contact(cid: str, c: Any, what: str) -> Contact:
    if not isinstance(c, Mapping) or set(c) - {"id", "name", "email", "phone", "webhook"}:
        raise ValueError(f"{what}: expected {{id, name, email, phone, webhook}}")
    if not cid:
        raise ValueError(f"{what}: needs an id")
    values = {k: c.get(k, "") for k in ("name", "email", "phone", "webhook")}
    if not all(isinstance(v, str) for v in values.values()):
        raise ValueError(f"{what}: contact fields are strings")
    return Contact(cid, **values)
