"""Rows as one list per column, for statements that take arrays (`unnest($1::..[], ...)`):
a driver sends arrays of plain types in binary, where rows would go as JSON or composite
text to be built on our side and parsed on the server's."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def as_columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """`rows` (each `width` long) as `width` lists; empty lists for no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
