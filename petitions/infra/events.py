"""Plain-data views of domain events, shared by the relay, the bus and the projections."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import Mapper
from eventsourcing.utils import resolve_topic

from petitions.domain.summary import (
    Summary,
    apply_event,
    changes_summary,
    fold_events,
    refresh_derived,
)
from petitions.infra.jsoncodec import loads

CASE_EVENT_TOPIC_PREFIX = "petitions.domain.case:Case."
_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


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


@dataclass(frozen=True)
class EventNotice:
    """A stored event as the bus announces it: which case changed, to which version, by
    which kind of event, at which position of the log. Nothing of the event's content: the
    consumers load the case from the store (its payloads encrypted, its reads guarded), so
    neither identities (petitioners, representatives, contacts) nor a petition's words reach
    the broker's storage, and the relay reads no payload to announce an event."""

    position: int
    case_id: UUID
    version: int
    type: str
    # W3C trace context stored beside the event (event_trace_context), if any.
    traceparent: str | None = None

    @property
    def event_id(self) -> str:
        return event_id(self.case_id, self.version)

    def to_message(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "case_id": str(self.case_id),
                "version": self.version, "type": self.type, "position": self.position}


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


# -- decoding stored events for the read side ------------------------------------------------

Decoder = Callable[[UUID, int, str, bytes], Any]
# (type name, recorded at (ISO 8601, as `timestamp.isoformat()`), data): what the read side
# needs of an event.
DecodedEvent = tuple[str, str, dict[str, Any]]
_TYPE_MARK = b'"_type_"'


class EventDecoder:
    """Stored events (topic, state bytes) to (type, timestamp, data), exactly as the store's
    mapper decodes them (decryption, decompression, upcasting), without building domain event
    objects: folding a summary needs only the plain data, and building the objects was half
    the cost of reading a case.

    The JSON is parsed without the transcoder's per-object hook when the only custom-typed
    value in it is the timestamp (always so for case events today); anything else goes the
    transcoder's way."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        cipher = mapper.cipher
        # eventsourcing's AESCipher builds an AESGCM per call; one is enough.
        self._aesgcm = AESGCM(cipher.key) if type(cipher) is AESCipher else None
        self._cipher = cipher
        self._compressor = mapper.compressor
        self._transcoder = mapper.transcoder
        self._classes: dict[str, tuple[str, int, type]] = {}

    @staticmethod
    def for_decode(decode: Decoder) -> EventDecoder | GenericDecoder:
        """The decoder for a store's `decode` (a bound `CaseStore.decode` carries the mapper);
        any other function is used as it is, through domain event objects."""
        mapper = getattr(getattr(decode, "__self__", None), "mapper", None)
        if isinstance(mapper, Mapper):
            return _decoder_for(mapper)
        return GenericDecoder(decode)

    def type_name(self, topic: str) -> str:
        return self.event_class(topic)[0]

    def event_class(self, topic: str) -> tuple[str, int, type]:
        try:
            return self._classes[topic]
        except KeyError:
            cls = resolve_topic(topic)
            found = self._classes[topic] = (cls.__name__, getattr(cls, "class_version", 1), cls)
            return found

    def _plaintext(self, state: bytes) -> bytes:
        if self._aesgcm is not None:
            # eventsourcing's layout: nonce (12 bytes), tag (16), ciphertext.
            if len(state) < 28:
                raise ValueError("Damaged cipher text: too short")
            try:
                state = self._aesgcm.decrypt(state[:12], state[28:] + state[12:28], None)
            except InvalidTag as e:
                raise ValueError("Invalid cipher tag") from e
        elif self._cipher is not None:
            state = self._cipher.decrypt(state)
        if self._compressor is not None:
            state = self._compressor.decompress(state)
        return state

    def decode(self, case_id: UUID, version: int, topic: str, state: bytes) -> DecodedEvent:
        name, class_version, cls = self.event_class(topic)
        fields, recorded_at = self.fields(bytes(state))
        if recorded_at is None:
            recorded_at = fields.pop("timestamp").isoformat()
        else:
            del fields["timestamp"]
        upcast(cls, class_version, fields)
        for key in _STATE_ONLY:
            fields.pop(key, None)
        return name, recorded_at, fields

    def fields(self, state: bytes) -> tuple[dict[str, Any], str | None]:
        """The event's stored fields, decrypted and parsed, and the timestamp's ISO 8601 text
        when it is the only custom-typed value (its field left as stored); otherwise None
        and every field decoded the transcoder's way (the timestamp a datetime)."""
        plain = self._plaintext(state)
        fields = loads(plain)
        stamp = fields.get("timestamp")
        if (type(stamp) is dict and stamp.get("_type_") == "datetime_iso"
                and plain.count(_TYPE_MARK) == 1):
            # Stored as datetime.isoformat() wrote it: the string is what isoformat() of the
            # decoded datetime would give again.
            return fields, stamp["_data_"]
        return self._transcoder.decode(plain), None


def upcast(cls: type, class_version: int, fields: dict[str, Any]) -> None:
    """Stored fields of an older `class_version` brought to the class's own, in place."""
    from_version = fields.pop("class_version", 1)
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(fields)
        from_version += 1


_STATE_ONLY = ("originator_id", "originator_version", "originator_topic")


@functools.lru_cache(maxsize=8)
def _decoder_for(mapper: Mapper[Any]) -> EventDecoder:
    return EventDecoder(mapper)


class GenericDecoder:
    """The same interface over any decode function returning domain event objects."""

    def __init__(self, decode: Decoder) -> None:
        self._decode = decode
        self._names: dict[str, str] = {}

    def type_name(self, topic: str) -> str:
        try:
            return self._names[topic]
        except KeyError:
            name = self._names[topic] = resolve_topic(topic).__name__
            return name

    def decode(self, case_id: UUID, version: int, topic: str, state: bytes) -> DecodedEvent:
        e = self._decode(case_id, version, topic, bytes(state))
        return type(e).__name__, e.timestamp.isoformat(), event_data(e)


def fold_stored(decoder: EventDecoder | GenericDecoder, case_id: UUID,
                rows: Sequence[Sequence[Any]], at: datetime | None = None,
                summary: Summary | None = None,
                observe: Callable[[str, dict[str, Any]], None] | None = None
                ) -> Summary | None:
    """Fold a case's stored rows (version, topic, state), in version order, into its summary
    (in place, when one is given); with `at`, only the prefix recorded at or before it (an
    event is never recorded before its predecessor, so the first one recorded later ends the
    prefix). None: nothing to fold.

    Without `at`, an event that changes nothing but `version` and `updated_at` is decoded only
    when it is the last row: every later event overwrites both. `observe` sees each event
    decoded (type, data)."""
    cid = str(case_id)
    last = len(rows) - 1
    for i, (version, topic, state) in enumerate(rows):
        if at is None and i != last and not changes_summary(decoder.type_name(topic)):
            continue
        name, recorded_at, data = decoder.decode(case_id, version, topic, state)
        if at is not None and datetime.fromisoformat(recorded_at) > at:
            break
        if observe is not None:
            observe(name, data)
        summary = apply_event(summary, cid, name, version, recorded_at, data)
    return refresh_derived(summary) if summary is not None else None
