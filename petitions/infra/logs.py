"""Structured JSON logs on stderr: one object per line, with the trace id and the case id
wherever they are known, and never a petitioner's ID number or mobile number.

- `ContextFilter` adds `trace_id`/`span_id` (the current OpenTelemetry span) and `case_id`
  (the `bind_case` context variable, set by consumers and API handlers).
- `RedactingFilter` scrubs 18-digit resident ID numbers and 11-digit mainland mobile numbers
  from the message, string extras and exception text. Names cannot be recognised by pattern:
  code must never log them (bus messages and log extras carry case ids, not identities).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from opentelemetry import trace

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Extras that only repeat the message (uvicorn's ANSI-coloured copy).
_OMITTED = _STANDARD | {"color_message"}

CASE_ID: ContextVar[str | None] = ContextVar("case_id", default=None)

REDACTED = "[redacted]"
# 17 digits and a check character (digit or X), not part of a longer run of letters/digits.
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
# 1[3-9]x xxxx xxxx, optionally +86 / 86 in front, optionally grouped with spaces or dashes.
MOBILE = re.compile(
    r"(?<![0-9A-Za-z])(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?![0-9A-Za-z])")


EMAIL = re.compile(r"[^\s@\"'<>()]+@[^\s@\"'<>()]+\.[A-Za-z]{2,}")


def redact(text: str) -> str:
    """The text with ID numbers, mobile numbers and e-mail addresses replaced by `[redacted]`."""
    return EMAIL.sub(REDACTED, MOBILE.sub(REDACTED, ID_NUMBER.sub(REDACTED, text)))


def bind_case(case_id: Any) -> None:
    """Name the case the current task (or thread) works on, for every log line it writes."""
    CASE_ID.set(str(case_id))


@contextlib.contextmanager
def case_bound(case_id: Any) -> Iterator[None]:
    token = CASE_ID.set(str(case_id))
    try:
        yield
    finally:
        CASE_ID.reset(token)


class ContextFilter(logging.Filter):
    """Adds trace_id, span_id and case_id to each record where they are known."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid and not hasattr(record, "trace_id"):
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        case_id = CASE_ID.get()
        if case_id is not None and not hasattr(record, "case_id"):
            record.case_id = case_id
        return True


class RedactingFilter(logging.Filter):
    """Scrubs ID numbers and mobile numbers from every part of a record that is written."""

    _format_exception = logging.Formatter().formatException

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._format_exception(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _OMITTED})
        if record.exc_text:
            entry["error"] = record.exc_text
        elif record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        # Last line of defence for extras that are not strings (dicts, lists, objects).
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    # On the handler, not the root logger: records from child loggers reach handlers
    # without passing the root logger's filters.
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # A crash is logged like anything else: one JSON line, redacted (not a bare traceback).
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(
        args.exc_type, args.exc_value, args.exc_traceback)  # type: ignore[arg-type]


def _log_uncaught(exc_type: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("uncaught exception; exiting",
                                           exc_info=(exc_type, exc, tb))
