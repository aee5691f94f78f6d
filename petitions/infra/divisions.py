"""A jurisdiction's rows in a listing: the SQL condition for a division prefix.

A prefix comes from `Principal.scope_prefix`: a county's own code, a city's first four digits
or the province's two. A county's code is a parameter (`division = $1`). A city's or the
province's prefix is written into the statement, one statement per prefix: `division LIKE $1`
bounds no index in a prepared statement's generic plan (which then filtered every row of the
province), and a generic plan cannot tell a city with few rows from one with many."""
from __future__ import annotations

from typing import Any


def division_condition(prefix: str, *, by_leading_digits: bool = False,
                       ) -> tuple[str, list[Any]]:
    """The condition on the `division` column and its arguments (at most `$1`). A prefix is
    matched with `LIKE 'p%'` (an index on `division text_pattern_ops`), or with
    `by_leading_digits` as `left(division, n) = 'p'` (an index on the leading digits)."""
    if not (prefix.isdigit() and len(prefix) <= 6):
        # Digits of any script, as the division pattern takes them; no digit is a quote,
        # which is what makes writing the prefix into the statement safe.
        raise ValueError(f"not a division prefix: {prefix!r}")
    if len(prefix) == 6:
        return "division = $1", [prefix]
    if by_leading_digits:
        return f"left(division, {len(prefix)}) = '{prefix}'", []
    return f"division LIKE '{prefix}%'", []
