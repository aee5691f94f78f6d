"""JSON on the hot paths (event decoding, summaries, bus messages): orjson, a fraction of the
standard library's CPU, wherever it gives the same values; the standard library for what
orjson refuses (NaN, lone surrogates, non-string keys) or would change (integers past 64 bits)."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_JSON = json.JSONDecoder()
# A JSON number of 19 digits or more (orjson would read an integer past 64 bits as a float)
# starts after ":", "," or "[" and maybe spaces and "-": with digits made "0" and those three
# ":", it is ":" and 19 "0"s (the same in a string only costs the slower parser). A regular
# expression took five times what the parse does.
_NUMBER_SHAPES = bytes(48 if 48 <= b <= 57 else 58 if b in b":,[" else 120 for b in range(256))
_LONG_NUMBER = b":" + b"0" * 19


def loads(plain: bytes) -> Any:
    """UTF-8 JSON as the standard decoder reads it."""
    if _LONG_NUMBER not in plain.translate(_NUMBER_SHAPES, b" \t\n\r-"):
        try:
            return orjson.loads(plain)
        except orjson.JSONDecodeError:
            pass
    return _JSON.decode(plain.decode("utf-8"))


def dumps(obj: Any, *, default: Callable[[Any], Any] | None = None,
          datetimes_by_default: bool = False) -> bytes:
    """`obj` as UTF-8 JSON, as `json.dumps(obj, ensure_ascii=False, default=default)` would
    write its values. `datetimes_by_default`: datetimes go to `default` too (as the standard
    encoder sends them there), instead of orjson's own ISO form."""
    option = orjson.OPT_PASSTHROUGH_DATETIME if datetimes_by_default else 0
    try:
        return orjson.dumps(obj, default=default, option=option)
    except orjson.JSONEncodeError:
        return json.dumps(obj, ensure_ascii=False, default=default).encode()
