"""The identity index: which lead owns each exact identity key, for deduplication on create.

Keys are HMAC-SHA256 of (kind, normalized value) under a key derived from the master key, so the
table never holds an email or phone in plaintext and cannot be reversed by guessing without the
master key. Reservations happen inside the caller's transaction, next to the append.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgspec
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ledger.normalize import InvalidEmailSyntax, normalize_email
from schema.events import LeadFields

EMAIL, PHONE, EXTERNAL = "email", "phone", "external"


class IdentityKey(msgspec.Struct, frozen=True):
    kind: str
    key_hash: bytes


class IdentityClaim(msgspec.Struct, frozen=True):
    """An identity key already owned by another lead."""

    kind: str
    lead_id: str


class IdentityHasher:
    def __init__(self, master_key: bytes) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"leadledger identity index v1"
        ).derive(master_key)

    def key(self, kind: str, value: str) -> IdentityKey:
        digest = hmac.new(self._key, f"{kind}\x1f{value}".encode(), hashlib.sha256).digest()
        return IdentityKey(kind, digest)

    def keys_for(self, fields: LeadFields) -> list[IdentityKey]:
        """The exact identity keys of normalized lead fields (UNSET and None give none)."""
        keys = []
        if isinstance(fields.email, str):
            try:
                keys.append(self.key(EMAIL, normalize_email(fields.email).identity))
            except InvalidEmailSyntax:
                pass
        if isinstance(fields.phone, str) and fields.phone.startswith("+"):
            keys.append(self.key(PHONE, fields.phone))
        if isinstance(fields.external_id, str) and fields.external_id:
            source = fields.source if isinstance(fields.source, str) else ""
            keys.append(self.key(EXTERNAL, f"{source}:{fields.external_id}"))
        return keys


_RESERVE = """
INSERT INTO identity_keys (workspace, kind, key_hash, lead_id)
SELECT %s, k.kind, k.key_hash, %s FROM unnest(%s::text[], %s::bytea[]) AS k(kind, key_hash)
ON CONFLICT (workspace, kind, key_hash) DO NOTHING
RETURNING kind, key_hash
"""
_OWNERS = """
SELECT kind, lead_id FROM identity_keys
WHERE workspace = %s AND (kind, key_hash) IN (SELECT * FROM unnest(%s::text[], %s::bytea[]))
"""
_RELEASE = """
DELETE FROM identity_keys
WHERE workspace = %s AND lead_id = %s
  AND (kind, key_hash) IN (SELECT * FROM unnest(%s::text[], %s::bytea[]))
"""
_RELEASE_ALL = "DELETE FROM identity_keys WHERE workspace = %s AND lead_id = %s"
_REPOINT = "UPDATE identity_keys SET lead_id = %s WHERE workspace = %s AND lead_id = %s"


async def reserve(
    conn: psycopg.AsyncConnection, workspace: str, lead_id: str, keys: Sequence[IdentityKey]
) -> list[IdentityClaim]:
    """Reserves the keys for `lead_id`; returns the ones another lead already owns.

    A concurrent transaction reserving the same key makes this INSERT wait for it to finish
    (unique index), so of two simultaneous creates of one person exactly one sees no claim."""
    if not keys:
        return []
    kinds = [k.kind for k in keys]
    hashes_ = [k.key_hash for k in keys]
    cur = await conn.execute(_RESERVE, (workspace, lead_id, kinds, hashes_))
    taken = {(kind, bytes(h)) for kind, h in await cur.fetchall()}
    missing = [k for k in keys if (k.kind, k.key_hash) not in taken]
    if not missing:
        return []
    cur = await conn.execute(
        _OWNERS, (workspace, [k.kind for k in missing], [k.key_hash for k in missing])
    )
    return [IdentityClaim(kind, owner) for kind, owner in await cur.fetchall() if owner != lead_id]


async def release(
    conn: psycopg.AsyncConnection, workspace: str, lead_id: str, keys: Sequence[IdentityKey]
) -> None:
    if keys:
        await conn.execute(
            _RELEASE, (workspace, lead_id, [k.kind for k in keys], [k.key_hash for k in keys])
        )


async def release_all(conn: psycopg.AsyncConnection, workspace: str, lead_id: str) -> None:
    await conn.execute(_RELEASE_ALL, (workspace, lead_id))


async def repoint(
    conn: psycopg.AsyncConnection, workspace: str, from_lead: str, to_lead: str
) -> None:
    """After a merge, the merged lead's identity keys find the survivor."""
    await conn.execute(_REPOINT, (to_lead, workspace, from_lead))
