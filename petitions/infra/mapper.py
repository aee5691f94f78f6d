"""The event store's mapper: eventsourcing's, with stored events read the way the read side
reads them (`EventDecoder`: one AES-GCM key object, orjson where it gives the same values).

Reading dominates: every command loads its case, and the services fold histories for every
event they handle; the library's mapper parsed each event's JSON with a Python hook per
object, most of the cost of loading a case. Writing is the library's own, unchanged."""
from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    find_id_convertor,
)

from petitions.infra.events import EventDecoder, upcast


class CaseEventMapper(Mapper[UUID]):
    """Named by `MAPPER_TOPIC` in the store's environment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._decoder = EventDecoder(self)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        _, class_version, cls = self._decoder.event_class(stored_event.topic)
        try:
            fields, recorded_at = self._decoder.fields(bytes(stored_event.state))
        except Exception as e:
            raise MapperDeserialisationError(
                f"Failed to deserialise state of stored event with topic "
                f"'{stored_event.topic}', originator_id '{stored_event.originator_id}' and "
                f"originator_version {stored_event.originator_version}: {e}") from e
        if recorded_at is not None:
            fields["timestamp"] = datetime.fromisoformat(recorded_at)
        originator_id = stored_event.originator_id
        fields["originator_id"] = find_id_convertor(cls, type(originator_id))(originator_id)
        fields["originator_version"] = stored_event.originator_version
        upcast(cls, class_version, fields)
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", fields)
        return event
