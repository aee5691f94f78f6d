"""Versioned routing rules and their evaluation: which unit handles a petition, and why.

A `RuleSet` (the parsed `config/routing-rules.json`) says, per category, division subtree, subject
and keywords, which unit leads and which assist. `Router.decide(facts)` picks the most specific
matching rule and explains the choice. Three hard rules no rule set can override:

- `litigation_channel`: an appeal/claim that belongs to litigation, arbitration or administrative
  review is proposed "not accepted" with the channel named (2022 Arts. 29-31);
- `exclude_accused`: an accusation never goes to the accused unit or a unit inside it; it goes to
  the discipline-inspection body above the accused (Arts. 30, 46);
- `apply_recusal`: a unit that declared a conflict with the petitioner or the accused is skipped
  (Art. 28).

Pure: no I/O at import or call, no framework imports.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from petitions.domain.directory import Directory
from petitions.domain.values import Category, division_prefix, is_division_code, is_within

ROUTE = "route"
PROPOSE_NOT_ACCEPTED = "propose_not_accepted"
NO_RULE = "no_rule"

ANY = "*"  # bucket key for "any category" / "any subject"

#: Matters that belong to another legal channel, and the organ that channel leads to.
LITIGATION_CHANNELS: Mapping[str, str] = MappingProxyType(
    {
        "litigation": "people's court",
        "arbitration": "labour/commercial arbitration commission",
        "administrative_review": "administrative review organ",
    }
)
#: Words in the content that point to one of those matters.
LITIGATION_TERMS: Mapping[str, str] = MappingProxyType(
    {
        "诉讼": "litigation",
        "仲裁": "arbitration",
        "行政复议": "administrative_review",
    }
)
#: Categories the litigation hard rule applies to: appeals/claims (申诉求决类, Art. 31). Accusations
#: go to discipline inspection whatever they mention; suggestions are never a case in court.
LITIGATION_CATEGORIES = frozenset({Category.APPEAL.value})

_CATEGORIES = frozenset(c.value for c in Category)
_RULE_FIELDS = frozenset(
    {"id", "category", "division", "subject", "keywords", "lead_unit", "assisting_units",
     "priority"}
)


# ---------------------------------------------------------------------------- value types


@dataclass(frozen=True)
class PetitionFacts:
    """What routing looks at. `petitioner_key` is a pseudonymous key, never the identity."""

    category: str
    division: str
    subject: str
    content: str
    accused_unit: str | None = None
    petitioner_key: str | None = None


@dataclass(frozen=True)
class RoutingRule:
    """One routing rule; None means "any"."""

    id: str
    category: str | None
    division: str | None  # a jurisdiction code; matches any division inside its subtree
    subject: str | None
    keywords: tuple[str, ...]
    lead_unit: str
    assisting_units: tuple[str, ...] = ()
    priority: int = 0

    def keyword_hits(self, facts: PetitionFacts) -> int:
        """How many of the rule's keywords occur in the petition's subject or content."""
        return sum(1 for k in self.keywords if k in facts.subject or k in facts.content)

    def matches(self, facts: PetitionFacts) -> bool:
        return (
            (self.category is None or self.category == facts.category)
            and (self.division is None or is_within(facts.division, self.division))
            and (self.subject is None or self.subject == facts.subject)
            and (not self.keywords or self.keyword_hits(facts) > 0)
        )

    def rank_key(self, facts: PetitionFacts) -> tuple[Any, ...]:
        """Sort key among matching rules: smaller is more specific, and wins."""
        plen = 0 if self.division is None else len(division_prefix(self.division))
        return _rank_key(self, plen, self.keyword_hits(facts))


def _rank_key(rule: RoutingRule, prefix_len: int, hits: int) -> tuple[Any, ...]:
    # longest division prefix, then subject named, then keyword hits, then category named,
    # then priority, then rule id (determinism)
    return (
        -prefix_len,
        rule.subject is None,
        -hits,
        rule.category is None,
        -rule.priority,
        rule.id,
    )


@dataclass(frozen=True)
class RuleSet:
    version: str
    rules: tuple[RoutingRule, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule {r.id!r}: duplicate id in rule set version {self.version}")
            seen.add(r.id)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RuleSet:
        """Build from the parsed rules JSON; `ValueError` names the first bad rule."""
        if not isinstance(d, Mapping):
            raise ValueError("rule set: expected an object with 'version' and 'rules'")
        unknown = sorted(set(d) - {"version", "rules"})
        if unknown:
            raise ValueError(f"rule set: unknown field(s) {', '.join(unknown)}")
        version = d.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or not version.strip():
            raise ValueError(f"rule set: 'version' must be a non-empty string, got {version!r}")
        raw = d.get("rules")
        if not isinstance(raw, list):
            raise ValueError("rule set: 'rules' must be a list")
        return cls(version=version, rules=tuple(_parse_rule(e, i) for i, e in enumerate(raw)))


def _parse_rule(e: Any, i: int) -> RoutingRule:
    what = f"rule #{i}"
    if not isinstance(e, Mapping):
        raise ValueError(f"{what}: expected an object")
    rid = e.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise ValueError(f"{what}: 'id' must be a non-empty string, got {rid!r}")
    what = f"rule #{i} ({rid!r})"
    unknown = sorted(set(e) - _RULE_FIELDS)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}")

    def optional(key: str) -> str | None:
        v = e.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip() or v == ANY:
            raise ValueError(f"{what}: '{key}' must be a non-empty string or null, got {v!r}")
        return v

    def strings(key: str) -> tuple[str, ...]:
        v = e.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ValueError(f"{what}: '{key}' must be a list of non-empty strings, got {v!r}")
        return tuple(v)

    category = optional("category")
    if category is not None and category not in _CATEGORIES:
        raise ValueError(f"{what}: unknown category {category!r}")
    division = optional("division")
    if division is not None and not is_division_code(division):
        raise ValueError(f"{what}: bad division {division!r}, expected a 6-digit division code")
    lead = e.get("lead_unit")
    if not isinstance(lead, str) or not lead.strip():
        raise ValueError(f"{what}: 'lead_unit' must be a non-empty string, got {lead!r}")
    assisting = strings("assisting_units")
    if lead in assisting:
        raise ValueError(f"{what}: lead unit {lead!r} is also listed as assisting")
    priority = e.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError(f"{what}: 'priority' must be an integer, got {priority!r}")
    return RoutingRule(
        id=rid,
        category=category,
        division=division,
        subject=optional("subject"),
        keywords=strings("keywords"),
        lead_unit=lead,
        assisting_units=assisting,
        priority=priority,
    )


@dataclass(frozen=True)
class RoutingDecision:
    outcome: str  # "route" | "propose_not_accepted" | "no_rule"
    lead_unit: str | None
    assisting_units: tuple[str, ...]
    rule_id: str | None
    rule_set_version: str
    explanation: str
    skipped: tuple[tuple[str, str], ...]  # (unit id, why) — recusals and exclusions, recorded
    proposed_channel: str | None = None


# ---------------------------------------------------------------------------- hard rules


def litigation_channel(facts: PetitionFacts) -> tuple[str, str] | None:
    """Hard rule (c): an appeal/claim that belongs to litigation, arbitration or administrative
    review goes to that channel. Returns (matter, channel name), or None.

    Triggered by the subject being one of `LITIGATION_CHANNELS`, or by the content mentioning one
    of `LITIGATION_TERMS` (the earliest mention wins). Only a proposal: a person confirms it.
    """
    if facts.category not in LITIGATION_CATEGORIES:
        return None
    if facts.subject in LITIGATION_CHANNELS:
        return facts.subject, LITIGATION_CHANNELS[facts.subject]
    found = [(pos, matter) for term, matter in LITIGATION_TERMS.items()
             if (pos := facts.content.find(term)) >= 0]
    if not found:
        return None
    matter = min(found)[1]
    return matter, LITIGATION_CHANNELS[matter]


def accused_exclusion(unit_id: str, accused_unit: str, directory: Directory) -> str | None:
    """Why `unit_id` may not handle an accusation against `accused_unit`, or None if it may."""
    if unit_id == accused_unit:
        return "excluded: the accused unit (hard rule)"
    if directory.is_inside(unit_id, accused_unit):
        return f"excluded: inside accused unit {accused_unit} (hard rule)"
    return None


def exclude_accused(
    units: Sequence[str], accused_unit: str, directory: Directory
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Hard rule (a): drop the accused unit and every unit inside it (its superior chain passes
    through the accused). Returns (kept units in order, (unit, why) for each dropped one)."""
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    for u in units:
        why = accused_exclusion(u, accused_unit, directory)
        if why is None:
            kept.append(u)
        else:
            skipped.append((u, why))
    return tuple(kept), tuple(skipped)


def recusal_reason(
    unit_id: str, facts: PetitionFacts, recusals: Mapping[str, frozenset[str]]
) -> str | None:
    """Why `unit_id` must recuse from this petition, or None."""
    declared = recusals.get(unit_id)
    if not declared:
        return None
    if facts.petitioner_key and facts.petitioner_key in declared:
        return "recusal: declared a conflict with the petitioner"
    if facts.accused_unit and facts.accused_unit in declared:
        return f"recusal: declared a conflict with accused unit {facts.accused_unit}"
    return None


class Pick(NamedTuple):
    unit: str | None  # the unit chosen, None when every candidate and superior was skipped
    index: int | None  # which candidate was chosen; None when it is a superior of candidate 0
    skipped: tuple[tuple[str, str], ...]


def apply_recusal(
    candidates: Sequence[str],
    facts: PetitionFacts,
    recusals: Mapping[str, frozenset[str]],
    directory: Directory,
    excluded: Callable[[str], str | None] | None = None,
) -> Pick:
    """Hard rule (b): the first candidate (best first) that has not declared a conflict with the
    petitioner or the accused (and is not `excluded`); when every candidate is skipped, the
    nearest free superior of the best candidate. Every skip is recorded with its reason."""
    skipped: dict[str, str] = {}

    def why(uid: str) -> str | None:
        return (excluded(uid) if excluded else None) or recusal_reason(uid, facts, recusals)

    for i, uid in enumerate(candidates):
        reason = skipped.get(uid) or why(uid)
        if reason is None:
            return Pick(uid, i, tuple(skipped.items()))
        skipped.setdefault(uid, reason)
    if candidates and candidates[0] in directory:
        for sup in directory.superior_chain(candidates[0]):
            reason = why(sup)
            if reason is None:
                return Pick(sup, None, tuple(skipped.items()))
            skipped.setdefault(sup, reason)
    return Pick(None, None, tuple(skipped.items()))


# ---------------------------------------------------------------------------- the router


def _describe(facts: PetitionFacts) -> str:
    subject = f" subject '{facts.subject}'" if facts.subject else ""
    return f"{facts.category} in {facts.division}{subject}"


def _skips(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    return "; skipped " + ", ".join(f"{u} ({why})" for u, why in skipped)


class Router:
    """Evaluates a rule set against petition facts, applying the hard rules.

    `recusals`: unit id -> petitioner keys and accused unit ids the unit declared a conflict with.
    Rules are indexed by (category or "*", division prefix, subject or "*"), so a decision looks at
    no more than 16 small buckets whatever the size of the rule set.
    """

    def __init__(
        self,
        rule_set: RuleSet,
        directory: Directory,
        recusals: Mapping[str, frozenset[str]] | None = None,
    ):
        self.rule_set = rule_set
        self.directory = directory
        self.recusals: Mapping[str, frozenset[str]] = MappingProxyType(
            {u: frozenset(keys) for u, keys in (recusals or {}).items()}
        )
        buckets: dict[tuple[str, str, str], list[RoutingRule]] = {}
        for r in rule_set.rules:
            for uid in (r.lead_unit, *r.assisting_units):
                if uid not in directory:
                    raise ValueError(f"rule {r.id!r}: unknown unit {uid!r}")
            key = (
                r.category or ANY,
                "" if r.division is None else division_prefix(r.division),
                r.subject or ANY,
            )
            buckets.setdefault(key, []).append(r)
        self._buckets = {k: tuple(v) for k, v in buckets.items()}

    def matching_rules(self, facts: PetitionFacts) -> list[RoutingRule]:
        """Every rule that matches, most specific first."""
        div = facts.division
        prefixes = dict.fromkeys(["", *(div[:n] for n in (2, 4, 6) if len(div) >= n)])
        categories = dict.fromkeys((facts.category, ANY))
        subjects = dict.fromkeys((facts.subject, ANY))
        ranked: list[tuple[tuple[Any, ...], RoutingRule]] = []
        get = self._buckets.get
        for c in categories:
            for p in prefixes:
                for s in subjects:
                    bucket = get((c, p, s))
                    if not bucket:
                        continue
                    for r in bucket:
                        hits = 0
                        if r.keywords:
                            hits = r.keyword_hits(facts)
                            if not hits:
                                continue
                        ranked.append((_rank_key(r, len(p), hits), r))
        ranked.sort(key=lambda t: t[0])
        return [r for _, r in ranked]

    def decide(self, facts: PetitionFacts) -> RoutingDecision:
        version = self.rule_set.version
        lit = litigation_channel(facts)
        if lit is not None:
            matter, channel = lit
            return RoutingDecision(
                outcome=PROPOSE_NOT_ACCEPTED,
                lead_unit=None,
                assisting_units=(),
                rule_id=None,
                rule_set_version=version,
                explanation=(
                    f"{_describe(facts)} belongs to {matter.replace('_', ' ')} → propose not "
                    f"accepted, go to the {channel}, hard rule; rule set version {version}"
                ),
                skipped=(),
                proposed_channel=channel,
            )
        ranked = self.matching_rules(facts)
        if facts.category == Category.ACCUSATION and facts.accused_unit:
            return self._decide_accusation(facts, ranked)
        if not ranked:
            return self._no_rule(facts, f"no rule of version {version} matches")
        pick = apply_recusal([r.lead_unit for r in ranked], facts, self.recusals, self.directory)
        if pick.unit is None:
            return self._no_rule(
                facts,
                "every matching unit and its superiors recused",
                pick.skipped,
            )
        rule = ranked[0] if pick.index is None else ranked[pick.index]
        where = f"rule {rule.id} of version {version}"
        if pick.index is None:
            where = f"superior of {rule.lead_unit} ({where})"
        assisting, skipped = self._assisting(rule, pick.unit, facts, None, dict(pick.skipped))
        lead = self.directory.unit(pick.unit)
        return RoutingDecision(
            outcome=ROUTE,
            lead_unit=lead.id,
            assisting_units=assisting,
            rule_id=rule.id,
            rule_set_version=version,
            explanation=f"{_describe(facts)} → unit {lead.id} ({lead.name}), {where}"
            + _skips(skipped),
            skipped=skipped,
        )

    # -- helpers

    def _no_rule(
        self, facts: PetitionFacts, why: str, skipped: tuple[tuple[str, str], ...] = ()
    ) -> RoutingDecision:
        return RoutingDecision(
            outcome=NO_RULE,
            lead_unit=None,
            assisting_units=(),
            rule_id=None,
            rule_set_version=self.rule_set.version,
            explanation=f"{_describe(facts)}: {why}; route by hand" + _skips(skipped),
            skipped=skipped,
        )

    def _assisting(
        self,
        rule: RoutingRule | None,
        lead: str,
        facts: PetitionFacts,
        accused: str | None,
        skipped: dict[str, str],
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        kept: list[str] = []
        units = rule.assisting_units if rule is not None else ()
        if accused is not None:
            units, dropped = exclude_accused(units, accused, self.directory)
            for u, why in dropped:
                skipped.setdefault(u, why)
        for u in units:
            if u == lead or u in kept:
                continue
            why = recusal_reason(u, facts, self.recusals)
            if why is None:
                kept.append(u)
            else:
                skipped.setdefault(u, why)
        return tuple(kept), tuple(skipped.items())

    def _decide_accusation(
        self, facts: PetitionFacts, ranked: list[RoutingRule]
    ) -> RoutingDecision:
        """Hard rule (a): the accused unit and units inside it never handle the accusation."""
        version = self.rule_set.version
        accused = facts.accused_unit
        assert accused is not None
        d = self.directory

        def excluded(uid: str) -> str | None:
            return accused_exclusion(uid, accused, d)

        skipped: dict[str, str] = {}
        best = ranked[0] if ranked else None
        if best is not None and (why := excluded(best.lead_unit)):
            skipped[best.lead_unit] = why
        known = accused in d
        body = d.discipline_body_for(accused) if known else None
        subject = f"accusation against unit {accused} in {facts.division}"

        if body is not None:
            pick = apply_recusal([body.id], facts, self.recusals, d, excluded)
            for u, why in pick.skipped:
                skipped.setdefault(u, why)
            if pick.unit is not None:
                lead = d.unit(pick.unit)
                target = (f"discipline inspection of {accused}'s superior "
                          f"(unit {lead.id}, {lead.name})")
                if pick.index is None:
                    target = (f"unit {lead.id} ({lead.name}), superior of discipline-inspection "
                              f"unit {body.id} which recused")
                assisting, skips = self._assisting(best, lead.id, facts, accused, skipped)
                return RoutingDecision(
                    outcome=ROUTE,
                    lead_unit=lead.id,
                    assisting_units=assisting,
                    rule_id=None,
                    rule_set_version=version,
                    explanation=f"{subject} → {target}, hard rule; rule set version {version}"
                    + (f"; assisting units from rule {best.id}" if assisting and best else "")
                    + _skips(skips),
                    skipped=skips,
                )

        # No free discipline-inspection body above the accused: fall back on the rules, still
        # never to the accused or a unit inside it.
        missing = ("it is not in the directory" if not known
                   else "no free discipline-inspection body above it")
        pick = apply_recusal([r.lead_unit for r in ranked], facts, self.recusals, d, excluded)
        for u, why in pick.skipped:
            skipped.setdefault(u, why)
        if pick.unit is None:
            return self._no_rule(
                facts,
                f"accused unit {accused}: {missing}, and no matching rule names a unit outside it "
                f"(hard rule; rule set version {version})",
                tuple(skipped.items()),
            )
        rule = ranked[0] if pick.index is None else ranked[pick.index]
        where = f"rule {rule.id} of version {version}"
        if pick.index is None:
            where = f"superior of {rule.lead_unit} ({where})"
        assisting, skips = self._assisting(rule, pick.unit, facts, accused, skipped)
        lead = d.unit(pick.unit)
        return RoutingDecision(
            outcome=ROUTE,
            lead_unit=lead.id,
            assisting_units=assisting,
            rule_id=rule.id,
            rule_set_version=version,
            explanation=f"{subject}: {missing} → unit {lead.id} ({lead.name}), {where}; the "
            f"accused unit and units inside it excluded, hard rule" + _skips(skips),
            skipped=skips,
        )
