"""Maps a stored (event type, schema version) to its Struct, upcasting older versions.

An upcaster turns the plain data of version N into the plain data of version N+1; reading an
old event applies the chain up to the current Struct. Events are never rewritten in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from schema.events import LEAD_EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(LookupError):
    """A stored event whose type or version this code does not know."""


class EventRegistry:
    def __init__(self, types: Iterable[type[Event]] = LEAD_EVENT_TYPES) -> None:
        self._current: dict[str, type[Event]] = {t.event_type: t for t in types}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._decoders: dict[str, msgspec.json.Decoder] = {}

    def register(self, event_cls: type[Event]) -> None:
        self._current[event_cls.event_type] = event_cls
        self._decoders.pop(event_cls.event_type, None)

    def register_upcaster(self, event_type: str, from_version: int, upcast: Upcaster) -> None:
        """`upcast` turns data of `from_version` into data of `from_version + 1`."""
        self._upcasters[(event_type, from_version)] = upcast

    def event_class(self, event_type: str) -> type[Event]:
        try:
            return self._current[event_type]
        except KeyError:
            raise UnknownEventType(f"unknown event type {event_type!r}") from None

    def decode(self, event_type: str, schema_version: int, data: bytes) -> Event:
        """Straight from stored JSON to the Struct when the event is of the current version
        (the common case, and the hot path of a replay); through `load` otherwise."""
        cls = self.event_class(event_type)
        if schema_version != cls.schema_version:
            return self.load(event_type, schema_version, msgspec.json.decode(data))
        decoder = self._decoders.get(event_type)
        if decoder is None:
            decoder = self._decoders[event_type] = msgspec.json.Decoder(cls)
        return decoder.decode(data)

    def load(self, event_type: str, schema_version: int, data: dict[str, Any]) -> Event:
        cls = self.event_class(event_type)
        version = schema_version
        while version < cls.schema_version:
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise UnknownEventType(
                    f"no upcaster for {event_type} v{version} → v{version + 1}"
                )
            data = upcast(data)
            version += 1
        if version > cls.schema_version:
            raise UnknownEventType(
                f"{event_type} v{version} is newer than this code (v{cls.schema_version})"
            )
        return msgspec.convert(data, type=cls)


DEFAULT_REGISTRY = EventRegistry()
