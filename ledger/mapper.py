"""Turns typed events into stored bytes and back, encrypting their personal fields.

The store never sees domain types: it gets (type, version, data, personal) from here. Personal
fields are lifted out of the event by their dotted paths, encrypted together under the subject's
data key, and replaced on read; when the key is gone they read as REDACTED, never as an error.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from ledger.crypto import DataKey
from schema.events import Event
from schema.registry import DEFAULT_REGISTRY, EventRegistry

REDACTED = "[redacted]"
_ABSENT = object()
_PRESENT = "_personal"  # which personal paths the ciphertext holds (names only, never values)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class StoredPayload(msgspec.Struct, frozen=True):
    event_type: str
    schema_version: int
    data: bytes
    personal: bytes | None


def event_aad(workspace: str, stream_id: str, event_id: str) -> bytes:
    return f"{workspace}\x1f{stream_id}\x1f{event_id}".encode()


def to_stored(event: Event, key: DataKey | None, aad: bytes) -> StoredPayload:
    data: dict[str, Any] = msgspec.to_builtins(event)
    secret: dict[str, Any] = {}
    for path in event.personal:
        value = _pop_path(data, path)
        if value is not _ABSENT:
            secret[path] = value  # None too: clearing a field is itself a change to keep
    personal = None
    if secret:
        if key is None:
            raise ValueError(f"{event.event_type} carries personal data but no subject key")
        data[_PRESENT] = sorted(secret)
        personal = key.encrypt(_encode(secret), aad)
    return StoredPayload(event.event_type, event.schema_version, _encode(data), personal)


def from_stored(
    event_type: str,
    schema_version: int,
    data: bytes,
    personal: bytes | None,
    key: DataKey | None,
    aad: bytes,
    registry: EventRegistry = DEFAULT_REGISTRY,
) -> tuple[Event, bool]:
    """Returns the event and whether its personal fields were redacted."""
    if personal is None:
        return registry.decode(event_type, schema_version, data), False
    fields: dict[str, Any] = _decode(data)
    present = fields.pop(_PRESENT, ())
    redacted = key is None
    if redacted:
        secret = {path: REDACTED for path in present}
    else:
        secret = _decode(key.decrypt(personal, aad))
    for path, value in secret.items():
        _set_path(fields, path, value)
    return registry.load(event_type, schema_version, fields), redacted


def _pop_path(data: dict[str, Any], path: str) -> Any:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return _ABSENT
    return node.pop(leaf, _ABSENT)


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parents, leaf = _split(path)
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


@lru_cache(maxsize=1024)
def _split(path: str) -> tuple[tuple[str, ...], str]:
    """A dotted path as (parents, leaf). Cached: a replay sets a handful of distinct paths on
    every event with personal data."""
    *parents, leaf = path.split(".")
    return tuple(parents), leaf
