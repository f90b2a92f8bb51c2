"""Opaque pagination cursors: base64url of a small JSON document that only this API reads.

A cursor is bound to the query it came from (its sort and filters, by a short hash), so a
cursor replayed against a different query is refused instead of silently skipping rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Protocol, TypeVar

import msgspec

from api.http.problems import FieldError, ProblemError

T = TypeVar("T")


class _HasQuery(Protocol):
    query: str


Q = TypeVar("Q", bound=_HasQuery)


def encode_cursor(payload: msgspec.Struct) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(payload)).rstrip(b"=").decode()


def decode_cursor(text: str, kind: type[T], *, field: str = "cursor") -> T:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return msgspec.json.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ProblemError(
            "bad-request", "the cursor is not one this API issued",
            errors=[FieldError(field=f"query:{field}",
                               message="an opaque cursor from a previous page's next_cursor")],
        ) from None


def decode_query_cursor(text: str, kind: type[Q], query: str) -> Q:
    """A cursor (a Struct with a `query` hash) decoded and checked against the query it is
    replayed with: a cursor from other filters is refused, never silently mis-paged."""
    decoded = decode_cursor(text, kind)
    if decoded.query != query:
        raise ProblemError("bad-request", "the cursor belongs to another query", errors=[
            FieldError(field="query:cursor", message="use it with the same filters")])
    return decoded


def query_hash(*parts: object) -> str:
    """A short, stable digest of the query a cursor belongs to."""
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:16]
