"""Nothing addressed to a unit, a leader or a bureau carries the petitioner's identity (2022
Art. 30, 46: an accusation, or anything identifying its author, never reaches the accused).

Unit-facing documents are rendered from a context without identity fields, every free text in
it (content, requests, reasons) has the registered identity scrubbed out, and the rendered
output is checked once more before anything is stored or sent: a hit raises
`ConfidentialityBreach` and the notice is dead-lettered instead of sent. Pure.
"""
from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterable
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
_ANY_DIGIT = re.compile(r"\d")
# What may stand between the characters of a number as written: "138 0000-0000".
_NUMBER_SEPARATORS = re.compile(r"[\s\-]+")


def _digits(text: str) -> str:
    return _NON_DIGIT.sub("", text)


def _is_number(term: str) -> bool:
    """Digits, spaces and hyphens, with at most one other character (the X of an identity
    number, the + of a dialling code)."""
    digits = _digits(term)
    return len(digits) >= 5 and len(digits) >= len(_NUMBER_SEPARATORS.sub("", term)) - 1


def _lower(text: str) -> str:
    """`text` lower-cased character by character, so positions stay positions (a few
    characters lower to two)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(low_c if len(low_c := c.lower()) == 1 else c for c in text)


Span = tuple[int, int]


class IdentityMatcher:
    """Finds a case's identity terms in text, ignoring case; a number also when spaces or
    hyphens are written between its characters, and by its digits alone.

    Searches are plain substring searches in C: no pattern is compiled per case (every case
    has its own petitioner, so a compiled pattern was never reused, and compiling it cost
    more than all the rest of planning a notice)."""

    def __init__(self, terms: tuple[str, ...]) -> None:
        self.words = tuple(dict.fromkeys(_lower(t) for t in terms if not _is_number(t)))
        # A number as registered, and the digits of any term that has 7 or more: most of an
        # identity number without its check character still identifies its holder.
        self.numbers = tuple(dict.fromkeys(
            [_lower(_packed(t)) for t in terms if _is_number(t)]
            + [d for d in map(_digits, terms) if len(d) >= 7]))

    def spans(self, text: str) -> list[Span]:
        """Where the terms occur in `text`, overlapping occurrences joined."""
        found: list[Span] = []
        if self.words:
            low = _lower(text)
            for word in self.words:
                found.extend(_occurrences(low, word))
        if self.numbers and _ANY_DIGIT.search(text):
            found.extend(self._number_spans(text))
        return _joined(found)

    def _number_spans(self, text: str) -> list[Span]:
        packed = _lower(_packed(text))
        hits = [span for number in self.numbers for span in _occurrences(packed, number)]
        if not hits:
            return []
        to_text = _unpacker(text)
        return [(to_text(start), to_text(end - 1) + 1) for start, end in hits]

    def sub(self, mask: str, text: str) -> str:
        spans = self.spans(text)
        if not spans:
            return text
        parts, at = [], 0
        for start, end in spans:
            parts += (text[at:start], mask)
            at = end
        parts.append(text[at:])
        return "".join(parts)


def _packed(text: str) -> str:
    """`text` without the characters `_NUMBER_SEPARATORS` matches (split() splits at the same
    whitespace as the pattern's \\s, and is several times faster than substituting it)."""
    return "".join(text.split()).replace("-", "")


def _occurrences(text: str, term: str) -> list[Span]:
    spans, at = [], text.find(term)
    while at >= 0:
        spans.append((at, at + len(term)))
        at = text.find(term, at + 1)
    return spans


def _joined(spans: list[Span]) -> list[Span]:
    if len(spans) < 2:
        return spans
    spans.sort()
    out = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = out[-1]
        if start < last_end:
            out[-1] = (last_start, max(last_end, end))
        else:
            out.append((start, end))
    return out


def _unpacker(text: str) -> Callable[[int], int]:
    """Maps a position in `text` with its separators removed back to `text`."""
    gaps = [(m.start(), m.end() - m.start()) for m in _NUMBER_SEPARATORS.finditer(text)]
    # packed_at[i]: where the i-th run of separators was cut out, in the packed text;
    # removed[i]: separator characters cut out up to and including that run
    packed_at, removed, total = [], [], 0
    for start, length in gaps:
        packed_at.append(start - total)
        total += length
        removed.append(total)

    def to_text(packed: int) -> int:
        i = bisect.bisect_right(packed_at, packed)
        return packed + (removed[i - 1] if i else 0)
    return to_text


@functools.lru_cache(maxsize=1024)
def _matcher(terms: tuple[str, ...]) -> IdentityMatcher | None:
    return IdentityMatcher(terms) if terms else None


# Joins texts for one search: no term contains it, and it is neither a space nor a hyphen,
# so nothing is found across it (a number's separators are packed out, this is not).
_APART = "\x00"


def scrub(value: Any, terms: Iterable[str]) -> Any:
    """`value` (strings, lists, dicts, nested) with every identity term masked; `value`
    itself when nothing in it needs masking."""
    matcher = _matcher(tuple(terms))
    if matcher is None:
        return value
    texts: list[str] = []
    _texts(value, texts)
    # Usually nothing is found: one search of all the texts instead of one per text.
    if not matcher.spans(_APART.join(texts)):
        return value
    return _scrub(value, matcher)


def _texts(value: Any, out: list[str]) -> None:
    """Every string inside `value`, in the order `_scrub` meets them."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _texts(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _texts(v, out)


def _scrub(value: Any, matcher: IdentityMatcher) -> Any:
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


def find_identity(text: str, terms: Iterable[str]) -> list[str]:
    """Which identity terms occur in `text` (numbers also with separators stripped)."""
    matcher = _matcher(tuple(terms))
    if matcher is None:
        return []
    return ["term" for _ in matcher.spans(text)]


def assert_clean(text: str, terms: Iterable[str], *more: str) -> None:
    """Raises `ConfidentialityBreach` when `text` (or any of `more`) holds an identity term."""
    hits = find_identity(_APART.join((text, *more)) if more else text, terms)
    if hits:
        # Never put the identity itself into the error: it is logged and recorded.
        raise ConfidentialityBreach(
            f"unit-addressed output contains {len(hits)} identifying item(s) of the petitioner")
