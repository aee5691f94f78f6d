"""Recognising the same matter again: repeats (same petitioner) and duplicates (same content
from another channel or organ). Pure.

A petitioner is matched on a keyed hash of the ID number, never the number in clear; content
on a fingerprint of its normalised text, place and category.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata

# Statuses in which a case is still being worked: a repeat or duplicate joins it.
CLOSED_STATUSES = frozenset({"closed", "archived", "terminated", "not_accepted",
                             "not_accepted_again", "withdrawn"})

_SPACE_AND_PUNCTUATION = re.compile(r"[\s\W_]+", re.UNICODE)


def petitioner_key(id_number: str, key: bytes) -> str:
    """Keyed hash of an ID number (upper-cased, so a trailing x/X matches)."""
    normalised = id_number.strip().upper()
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest() if normalised else ""


def content_fingerprint(division: str, category: str, content: str) -> str:
    """Same place, same category, same words once width, case, spaces and punctuation are
    ignored: the same letter sent through several channels gives one fingerprint."""
    text = unicodedata.normalize("NFKC", content).lower()
    text = _SPACE_AND_PUNCTUATION.sub("", text)
    return hashlib.sha256(f"{division}|{category}|{text}".encode()).hexdigest()


def is_open(status: str) -> bool:
    return status not in CLOSED_STATUSES
