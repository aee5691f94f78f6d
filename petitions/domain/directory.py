"""The jurisdiction tree and the units that handle petitions in it.

Built from the parsed `config/directory.json` (`{"jurisdictions": [...], "units": [...]}`) with
`Directory.from_dict`, which validates everything and raises `ValueError` naming the bad entry.
All look-ups are dict indexes built once, so thousands of jurisdictions and units are cheap.

Pure: no I/O at import or call, no framework imports. Reading the JSON file is the caller's job.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from petitions.domain.values import Category, is_division_code, is_within

BUREAU = "bureau"
DEPARTMENT = "department"
DISCIPLINE_INSPECTION = "discipline_inspection"
GOVERNMENT = "government"

_CATEGORIES = frozenset(c.value for c in Category)
_JURISDICTION_FIELDS = frozenset({"code", "name", "parent", "bureau_unit_id"})
_UNIT_FIELDS = frozenset(
    {"id", "name", "jurisdiction", "kind", "categories", "subjects", "superior", "webhook",
     "discipline_body"}
)
_UNIT_REQUIRED = frozenset({"id", "name", "jurisdiction", "kind"})


@dataclass(frozen=True)
class Jurisdiction:
    """An administrative division (6-digit GB/T 2260 code) and its petition bureau."""

    code: str
    name: str
    parent: str | None
    bureau_unit_id: str


@dataclass(frozen=True)
class Unit:
    """A handling unit: a bureau, a department, a government, a discipline-inspection body."""

    id: str
    name: str
    jurisdiction: str
    kind: str  # e.g. "bureau", "department", "discipline_inspection", "government"
    categories: frozenset[str]
    subjects: frozenset[str]
    superior: str | None
    webhook: str = ""
    discipline_body: str | None = None  # the discipline-inspection unit that oversees this unit


def _fields(entry: Any, what: str, allowed: frozenset[str], required: Iterable[str]) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{what}: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}")
    missing = sorted(k for k in required if k not in entry)
    if missing:
        raise ValueError(f"{what}: missing field(s) {', '.join(missing)}")


def _text(entry: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> str | None:
    value = entry.get(key)
    if optional and (value is None or value == ""):
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: '{key}' must be a non-empty string, got {value!r}")
    return value


def _string_set(entry: Mapping[str, Any], key: str, what: str) -> frozenset[str]:
    value = entry.get(key, [])
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(v, str) and v for v in value
    ):
        raise ValueError(f"{what}: '{key}' must be a list of non-empty strings, got {value!r}")
    return frozenset(value)


class Directory:
    """The jurisdiction tree and its units, indexed for constant-time look-ups.

    Unknown codes or ids raise `KeyError`.
    """

    def __init__(self, jurisdictions: Iterable[Jurisdiction], units: Iterable[Unit]):
        self._jurisdictions: dict[str, Jurisdiction] = {}
        self._units: dict[str, Unit] = {}
        for j in jurisdictions:
            if j.code in self._jurisdictions:
                raise ValueError(f"jurisdiction {j.code!r}: duplicate code")
            self._jurisdictions[j.code] = j
        for u in units:
            if u.id in self._units:
                raise ValueError(f"unit {u.id!r}: duplicate id")
            self._units[u.id] = u
        self._validate()
        self._build_indexes()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Directory:
        """Build from the parsed directory JSON; `ValueError` names the first bad entry."""
        if not isinstance(d, Mapping):
            raise ValueError("directory: expected an object with 'jurisdictions' and 'units'")
        unknown = sorted(set(d) - {"jurisdictions", "units"})
        if unknown:
            raise ValueError(f"directory: unknown field(s) {', '.join(unknown)}")
        raw_j = d.get("jurisdictions")
        raw_u = d.get("units")
        if not isinstance(raw_j, list) or not isinstance(raw_u, list):
            raise ValueError("directory: 'jurisdictions' and 'units' must both be lists")

        jurisdictions: list[Jurisdiction] = []
        for i, e in enumerate(raw_j):
            what = f"jurisdiction #{i}" + (
                f" ({e.get('code')!r})" if isinstance(e, Mapping) and "code" in e else ""
            )
            _fields(e, what, _JURISDICTION_FIELDS, _JURISDICTION_FIELDS - {"parent"})
            code = _text(e, "code", what)
            assert code is not None
            what = f"jurisdiction {code!r}"
            if not is_division_code(code):
                raise ValueError(f"{what}: bad code, expected a 6-digit division code")
            jurisdictions.append(
                Jurisdiction(
                    code=code,
                    name=_text(e, "name", what) or "",
                    parent=_text(e, "parent", what, optional=True),
                    bureau_unit_id=_text(e, "bureau_unit_id", what) or "",
                )
            )

        units: list[Unit] = []
        for i, e in enumerate(raw_u):
            what = f"unit #{i}" + (
                f" ({e.get('id')!r})" if isinstance(e, Mapping) and "id" in e else ""
            )
            _fields(e, what, _UNIT_FIELDS, _UNIT_REQUIRED)
            uid = _text(e, "id", what)
            what = f"unit {uid!r}"
            webhook = e.get("webhook", "")
            if not isinstance(webhook, str):
                raise ValueError(f"{what}: 'webhook' must be a string, got {webhook!r}")
            units.append(
                Unit(
                    id=uid or "",
                    name=_text(e, "name", what) or "",
                    jurisdiction=_text(e, "jurisdiction", what) or "",
                    kind=_text(e, "kind", what) or "",
                    categories=_string_set(e, "categories", what),
                    subjects=_string_set(e, "subjects", what),
                    superior=_text(e, "superior", what, optional=True),
                    webhook=webhook,
                    discipline_body=_text(e, "discipline_body", what, optional=True),
                )
            )
        return cls(jurisdictions, units)

    def _validate(self) -> None:
        for j in self._jurisdictions.values():
            what = f"jurisdiction {j.code!r}"
            if not is_division_code(j.code):
                raise ValueError(f"{what}: bad code, expected a 6-digit division code")
            if j.parent is not None:
                if j.parent not in self._jurisdictions:
                    raise ValueError(f"{what}: unknown parent {j.parent!r}")
                if j.parent == j.code or not is_within(j.code, j.parent):
                    raise ValueError(f"{what}: parent {j.parent!r} does not contain it")
            if j.bureau_unit_id not in self._units:
                raise ValueError(f"{what}: unknown bureau unit {j.bureau_unit_id!r}")
        for u in self._units.values():
            what = f"unit {u.id!r}"
            if u.jurisdiction not in self._jurisdictions:
                raise ValueError(f"{what}: unknown jurisdiction {u.jurisdiction!r}")
            bad = sorted(u.categories - _CATEGORIES)
            if bad:
                raise ValueError(f"{what}: unknown categor(ies) {', '.join(bad)}")
            if u.superior is not None:
                if u.superior not in self._units:
                    raise ValueError(f"{what}: unknown superior {u.superior!r}")
                if u.superior == u.id:
                    raise ValueError(f"{what}: is its own superior")
            if u.discipline_body is not None:
                body = self._units.get(u.discipline_body)
                if body is None:
                    raise ValueError(f"{what}: unknown discipline body {u.discipline_body!r}")
                if body.id == u.id:
                    raise ValueError(f"{what}: is its own discipline body")
                if body.kind != DISCIPLINE_INSPECTION:
                    raise ValueError(
                        f"{what}: discipline body {body.id!r} is a {body.kind!r}, "
                        f"not a {DISCIPLINE_INSPECTION!r} unit"
                    )
        # superior chains must end: no cycles
        state: dict[str, int] = {}  # 1 = on the current path, 2 = known to terminate
        for start in self._units:
            path: list[str] = []
            cur: str | None = start
            while cur is not None and state.get(cur) != 2:
                if state.get(cur) == 1:
                    raise ValueError(f"unit {cur!r}: superior chain loops back to itself")
                state[cur] = 1
                path.append(cur)
                cur = self._units[cur].superior
            for p in path:
                state[p] = 2

    def _build_indexes(self) -> None:
        # superior chain of each unit (nearest first), built with memoisation
        chains: dict[str, tuple[str, ...]] = {}
        for start in self._units:
            path: list[str] = []
            cur: str | None = start
            while cur is not None and cur not in chains:
                path.append(cur)
                cur = self._units[cur].superior
            tail: tuple[str, ...] = () if cur is None else (cur, *chains[cur])
            for uid in reversed(path):
                chains[uid] = tail
                tail = (uid, *tail)
        self._chains = chains
        self._chain_sets = {uid: frozenset(c) for uid, c in chains.items()}

        ancestors: dict[str, tuple[str, ...]] = {}
        for code in self._jurisdictions:
            up: list[str] = []
            parent = self._jurisdictions[code].parent
            while parent is not None:
                up.append(parent)
                parent = self._jurisdictions[parent].parent
            ancestors[code] = tuple(up)
        self._ancestors = ancestors

        by_j: dict[str, list[Unit]] = {code: [] for code in self._jurisdictions}
        for u in self._units.values():
            by_j[u.jurisdiction].append(u)
        self._units_by_j = {
            code: tuple(sorted(us, key=lambda u: u.id)) for code, us in by_j.items()
        }
        self._di_by_j = {
            code: tuple(u for u in us if u.kind == DISCIPLINE_INSPECTION)
            for code, us in self._units_by_j.items()
        }
        self._gov_by_j = {
            code: tuple(u for u in us if u.kind == GOVERNMENT)
            for code, us in self._units_by_j.items()
        }

    # ------------------------------------------------------------------ look-ups

    def __contains__(self, unit_id: object) -> bool:
        return unit_id in self._units

    def __len__(self) -> int:
        return len(self._jurisdictions)

    @property
    def units(self) -> Mapping[str, Unit]:
        return self._units

    @property
    def jurisdictions(self) -> Mapping[str, Jurisdiction]:
        return self._jurisdictions

    def unit(self, id: str) -> Unit:
        try:
            return self._units[id]
        except KeyError:
            raise KeyError(f"unknown unit {id!r}") from None

    def jurisdiction(self, code: str) -> Jurisdiction:
        try:
            return self._jurisdictions[code]
        except KeyError:
            raise KeyError(f"unknown jurisdiction {code!r}") from None

    def ancestors(self, code: str) -> list[Jurisdiction]:
        """The jurisdictions above `code`, from its parent up to the root."""
        self.jurisdiction(code)
        return [self._jurisdictions[c] for c in self._ancestors[code]]

    def units_in(self, code: str) -> list[Unit]:
        """The units of jurisdiction `code` itself (not of the jurisdictions below it), by id."""
        self.jurisdiction(code)
        return list(self._units_by_j[code])

    def superior_of(self, unit_id: str) -> Unit | None:
        u = self.unit(unit_id)
        return None if u.superior is None else self._units[u.superior]

    def superior_chain(self, unit_id: str) -> tuple[str, ...]:
        """Ids of the unit's superior, its superior, ... up to the top (nearest first)."""
        self.unit(unit_id)
        return self._chains[unit_id]

    def is_inside(self, unit_id: str, container_id: str) -> bool:
        """True when `unit_id` is `container_id` or its superior chain passes through it.

        An id unknown to the directory is inside only itself.
        """
        if unit_id == container_id:
            return True
        chain = self._chain_sets.get(unit_id)
        return chain is not None and container_id in chain

    def discipline_body_for(self, unit_id: str) -> Unit | None:
        """The discipline-inspection body that handles accusations against `unit_id`.

        Walks up the unit's superiors for the first one whose `discipline_body` is set (a superior
        that is itself a discipline-inspection unit with none set counts as its own body); failing
        that, the discipline-inspection unit of the parent jurisdiction, then of the jurisdictions
        further up, then of the unit's own jurisdiction. Never returns the unit itself or a unit
        inside it; None when no such body exists.
        """
        u = self.unit(unit_id)
        for sup_id in self._chains[unit_id]:
            sup = self._units[sup_id]
            body = sup.discipline_body
            if body is None and sup.kind == DISCIPLINE_INSPECTION:
                body = sup.id
            if body is not None and not self.is_inside(body, unit_id):
                return self._units[body]
        for code in (*self._ancestors[u.jurisdiction], u.jurisdiction):
            for di in self._di_by_j[code]:
                if not self.is_inside(di.id, unit_id):
                    return di
        return None

    def common_superior(self, a: str, b: str) -> Unit | None:
        """The unit that decides a dispute between units `a` and `b` (2022 Art. 24).

        The nearest unit on both superior chains (a unit counts as being on its own chain, so
        if `a` is above `b` the answer is `a`); when the chains never meet, the government unit of
        the nearest jurisdiction containing both; None when there is none.
        """
        ua, ub = self.unit(a), self.unit(b)
        chain_b = self._chain_sets[b] | {b}
        for cand in (a, *self._chains[a]):
            if cand in chain_b:
                return self._units[cand]
        above_b = {ub.jurisdiction, *self._ancestors[ub.jurisdiction]}
        for code in (ua.jurisdiction, *self._ancestors[ua.jurisdiction]):
            if code in above_b:
                govs = self._gov_by_j[code]
                if govs:
                    return govs[0]
        return None
