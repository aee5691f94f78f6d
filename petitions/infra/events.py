"""Plain-data views of domain events, shared by the relay, the bus and the projections."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from petitions.domain.summary import fold_events

CASE_EVENT_TOPIC_PREFIX = "petitions.domain.case:Case."
_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}

# Fields that identify a petitioner: they never travel on the bus (consumers that need them
# load the case from the store, which access rules guard).
CONFIDENTIAL_FIELDS = frozenset({"petitioner"})


@dataclass(frozen=True)
class LoggedEvent:
    """One event as read from the notification log."""

    position: int
    case_id: UUID
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, Any]
    topic: str = ""
    # W3C trace context stored beside the event (event_trace_context), when read with it.
    traceparent: str | None = None

    @property
    def is_case_event(self) -> bool:
        return self.topic.startswith(CASE_EVENT_TOPIC_PREFIX)

    @property
    def event_id(self) -> str:
        return event_id(self.case_id, self.version)

    @classmethod
    def from_domain_event(cls, position: int, event: Any) -> LoggedEvent:
        return cls(
            position=position,
            case_id=event.originator_id,
            version=event.originator_version,
            type=type(event).__name__,
            recorded_at=event.timestamp,
            data=event_data(event),
            topic=f"{type(event).__module__}:{type(event).__qualname__}",
        )

    def to_message(self) -> dict[str, Any]:
        """The bus message: the event without confidential fields."""
        return {
            "event_id": self.event_id,
            "case_id": str(self.case_id),
            "version": self.version,
            "type": self.type,
            "recorded_at": self.recorded_at.isoformat(),
            "position": self.position,
            "data": {k: v for k, v in self.data.items() if k not in CONFIDENTIAL_FIELDS},
        }


def event_id(case_id: UUID, version: int) -> str:
    """Stable identity of an event: its case and its version in that case."""
    return f"{case_id}:{version}"


def event_data(event: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(event).items() if k not in _BASE_FIELDS}


def history_entry(event: Any) -> dict[str, Any]:
    """An event as shown in a case's history (API and export)."""
    data = event_data(event)
    return {
        "type": type(event).__name__,
        "version": event.originator_version,
        "recorded_at": event.timestamp.isoformat(),
        "class_version": getattr(type(event), "class_version", 1),
        "actor": data.pop("actor", None),
        "reason": data.pop("reason", None),
        "data": data,
    }


def fold_domain_events(case_id: UUID, events: Iterable[Any]) -> dict[str, Any] | None:
    """A case's summary folded straight from its domain events (as the projection would)."""
    return fold_events(None, str(case_id), (
        (type(e).__name__, e.originator_version, e.timestamp.isoformat(), event_data(e))
        for e in events))
