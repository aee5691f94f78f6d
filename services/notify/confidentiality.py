"""Nothing addressed to a unit, a leader or a bureau carries the petitioner's identity (2022
Art. 30, 46: an accusation, or anything identifying its author, never reaches the accused).

Unit-facing documents are rendered from a context without identity fields, every free text in
it (content, requests, reasons) has the registered identity scrubbed out, and the rendered
output is checked once more before anything is stored or sent: a hit raises
`ConfidentialityBreach` and the notice is dead-lettered instead of sent. Pure.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from services.notify.facts import CaseFacts

MASK = "某某"


class ConfidentialityBreach(Exception):
    """Unit-addressed output contained something identifying the petitioner."""


def identity_terms(facts: CaseFacts) -> list[str]:
    """The strings that identify this case's petitioners (longest first). Worked out once
    per folded facts (planning and every send of the event ask): a case's identity is
    what its registration recorded, and folding never changes it afterwards."""
    cached: list[str] | None = facts.__dict__.get("_identity_terms")
    if cached is None:
        cached = facts.__dict__["_identity_terms"] = _identity_terms(facts)
    return cached


def _identity_terms(facts: CaseFacts) -> list[str]:
    people: list[dict[str, str]] = []
    if facts.petitioner:
        people.append(facts.petitioner)
    if facts.contact:
        people.append(facts.contact)
    people.extend(facts.representatives)
    terms: set[str] = set()
    for p in people:
        for key in ("name", "id_number", "phone", "address", "email", "employer"):
            value = str(p.get(key) or "").strip()
            if _meaningful(key, value):
                terms.add(value)
    return sorted(terms, key=len, reverse=True)


def _meaningful(key: str, value: str) -> bool:
    if key == "name":
        return len(value) >= 2
    if key in ("phone", "id_number"):
        return len(_digits(value)) >= 5
    return len(value) >= 4


_NON_DIGIT = re.compile(r"\D")


def _digits(text: str) -> str:
    return _NON_DIGIT.sub("", text)


def _pattern_source(term: str) -> str:
    digits = _digits(term)
    if len(digits) >= 5 and len(digits) >= len(term.replace(" ", "").replace("-", "")) - 1:
        # a number: match it with or without separators between the digits
        return r"[\s\-]?".join(re.escape(c) for c in term if not c.isspace() and c != "-")
    return re.escape(term)


@functools.lru_cache(maxsize=4096)
def _matcher(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of every term (longest first), compiled once per set of terms."""
    if not terms:
        return None
    return re.compile("|".join(_pattern_source(t) for t in terms), re.IGNORECASE)


def scrub(value: Any, terms: Iterable[str]) -> Any:
    """`value` (strings, lists, dicts, nested) with every identity term masked."""
    matcher = _matcher(tuple(terms))
    if matcher is None:
        return value
    return _scrub(value, matcher)


def _scrub(value: Any, matcher: re.Pattern[str]) -> Any:
    # a context is mostly dicts of strings: those are masked in place of a call each
    if type(value) is dict:
        sub = matcher.sub
        return {k: sub(MASK, v) if type(v) is str else _scrub(v, matcher)
                for k, v in value.items()}
    if isinstance(value, str):
        return matcher.sub(MASK, value)
    if isinstance(value, dict):
        return {k: _scrub(v, matcher) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)([_scrub(v, matcher) for v in value])
    return value


@functools.lru_cache(maxsize=4096)
def _number_matcher(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """The identity numbers (7+ digits) with any spaces or hyphens between their digits: a
    match is exactly a number that a run of digits, spaces and hyphens holds once its
    separators are stripped. One search instead of splitting every number in the text."""
    numbers = dict.fromkeys(d for d in (_digits(t) for t in terms) if len(d) >= 7)
    if not numbers:
        return None
    return re.compile("|".join(r"[ \-]*".join(n) for n in numbers))


def find_identity(text: str, terms: Iterable[str]) -> list[str]:
    """Which identity terms occur in `text` (numbers also with separators stripped)."""
    key = tuple(terms)
    matcher = _matcher(key)
    if matcher is None:
        return []
    found = ["term" for _ in matcher.finditer(text)]
    numbers = _number_matcher(key)
    if numbers is not None and not found:
        found = ["number" for _ in numbers.finditer(text)]
    return found


def assert_clean(text: str, terms: Iterable[str]) -> None:
    hits = find_identity(text, terms)
    if hits:
        # Never put the identity itself into the error: it is logged and recorded.
        raise ConfidentialityBreach(
            f"unit-addressed output contains {len(hits)} identifying item(s) of the petitioner")
