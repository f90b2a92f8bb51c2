"""Idempotency-Key (draft-ietf-httpapi-idempotency-key) for every POST that creates.

Keys are scoped to the API key that sends them and kept 24 hours. The first request with a key
claims it; a retry of a finished request gets the stored response again (with
`Idempotent-Replayed: true`); a retry while the first is still running is 409; the same key with
a different request (method, path or body) is 422. Only successful responses are stored: a
request refused before it wrote anything releases its key, so a corrected retry may reuse it.

Crash safety comes from the ledger, not from this table: each claim carries a random
request_uuid from which the request derives its lead, note and event ids. If the server dies
mid-request its claim's lease lapses, a retry takes the claim over with the same request_uuid,
and its appends carry the same event ids, which the ledger reports as already written.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request, Response
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.http.problems import FieldError, ProblemError
from ledger.errors import ConcurrencyError, DomainError

HEADER = "idempotency-key"
_KEY = re.compile(r'^[\x21\x23-\x5b\x5d-\x7e]{1,255}$')  # visible ASCII but `"` and `\`


class Reply(msgspec.Struct, frozen=True):
    """A response in the form it is stored and replayed in."""

    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response[bytes]:
        return Response(
            self.body, status_code=self.status, headers=self.headers,
            media_type=self.headers.get("content-type", "application/json"),
        )


def reply(status: int, body: msgspec.Struct, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, msgspec.json.encode(body), {"content-type": "application/json", **(headers or {})}
    )


class Claimed(msgspec.Struct, frozen=True):
    request_uuid: uuid.UUID


# Every write to this table commits without waiting for its WAL flush. Safe here: a claim only
# matters once the request appends to the ledger, and the ledger's synchronous commit flushes
# the WAL up to and past the claim (the WAL is flushed in order). A completion lost in a crash
# leaves the claim in flight; its lease lapses and the retry takes it over with the same
# request_uuid, which the ledger answers idempotently. It saves an fsync per row written.
# `set_config(..., true)` inside the statement applies to the statement's own (implicit)
# transaction, whose commit reads the setting: no BEGIN/SET/COMMIT round trips.
RELAXED = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"

_CLAIM = f"""
INSERT INTO idempotency_keys AS i (workspace, key_id, idempotency_key, fingerprint,
                                   request_uuid, state, locked_until, expires_at)
SELECT %(ws)s, %(key)s, %(idem)s, %(fp)s, %(uuid)s, 'in_flight',
       now() + make_interval(secs => %(lease)s), now() + make_interval(secs => %(ttl)s)
FROM {RELAXED}
ON CONFLICT (workspace, key_id, idempotency_key) DO UPDATE SET
    -- an expired row starts afresh; an abandoned claim (lease over, same request) is taken
    -- over with its request_uuid, so the retry derives the same ids as the first attempt
    request_uuid = CASE WHEN i.expires_at <= now() THEN excluded.request_uuid
                        ELSE i.request_uuid END,
    fingerprint = excluded.fingerprint,
    state = 'in_flight',
    locked_until = excluded.locked_until,
    status = NULL, headers = NULL, body = NULL,
    created_at = CASE WHEN i.expires_at <= now() THEN now() ELSE i.created_at END,
    expires_at = CASE WHEN i.expires_at <= now() THEN excluded.expires_at ELSE i.expires_at END
WHERE i.expires_at <= now()
   OR (i.state = 'in_flight' AND i.locked_until <= now() AND i.fingerprint = excluded.fingerprint)
RETURNING request_uuid
"""

_EXISTING = """
SELECT fingerprint, state, status, headers, body, expires_at <= now()
FROM idempotency_keys WHERE workspace = %s AND key_id = %s AND idempotency_key = %s
"""

_COMPLETE = f"""
UPDATE idempotency_keys SET state = 'done', locked_until = NULL,
       status = %s, headers = %s, body = %s
FROM {RELAXED}
WHERE workspace = %s AND key_id = %s AND idempotency_key = %s AND request_uuid = %s
"""

_RELEASE = f"""
DELETE FROM idempotency_keys USING {RELAXED}
WHERE workspace = %s AND key_id = %s AND idempotency_key = %s AND request_uuid = %s
  AND state = 'in_flight'
"""

_LAPSE = f"""
UPDATE idempotency_keys SET locked_until = now()
FROM {RELAXED}
WHERE workspace = %s AND key_id = %s AND idempotency_key = %s AND request_uuid = %s
  AND state = 'in_flight'
"""

_PURGE = """
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT %s)
"""


class IdempotencyStore:
    """All SQL against `idempotency_keys`."""

    def __init__(self, pool: AsyncConnectionPool, *, ttl_s: int, lease_s: int) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self.lease_s = lease_s

    async def claim(
        self, workspace: str, key_id: str, idem: str, fingerprint: bytes
    ) -> Claimed | Reply:
        params = {
            "ws": workspace, "key": key_id, "idem": idem, "fp": fingerprint,
            "uuid": uuid.uuid4(), "lease": self.lease_s, "ttl": self.ttl_s,
        }
        async with self.pool.connection() as conn:
            for _ in range(3):  # a row that expires or is released between the two statements
                cur = await conn.execute(_CLAIM, params)
                row = await cur.fetchone()
                if row is not None:
                    return Claimed(row[0])
                cur = await conn.execute(_EXISTING, (workspace, key_id, idem))
                existing = await cur.fetchone()
                if existing is None or existing[5]:
                    continue
                stored_fp, state, status, headers, body, _ = existing
                if bytes(stored_fp) != fingerprint:
                    raise ProblemError(
                        "idempotency-key-reused",
                        "this Idempotency-Key was used with a different request; use a new key "
                        "for a new request",
                    )
                if state == "in_flight":
                    raise ProblemError(
                        "idempotency-in-flight",
                        "a request with this Idempotency-Key is still in flight",
                        headers={"Retry-After": "1"},
                    )
                return Reply(status, bytes(body), {**headers, "idempotent-replayed": "true"})
        raise ProblemError(
            "idempotency-in-flight", "the Idempotency-Key is contended; retry",
            headers={"Retry-After": "1"},
        )

    async def complete(
        self, workspace: str, key_id: str, idem: str, claimed: Claimed, result: Reply
    ) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                _COMPLETE,
                (result.status, Jsonb(result.headers), result.body,
                 workspace, key_id, idem, claimed.request_uuid),
            )

    async def release(
        self, workspace: str, key_id: str, idem: str, claimed: Claimed, *, wrote: bool
    ) -> None:
        """Gives the key back after a failed request. If it may have written (`wrote`), the
        claim stays, with its lease lapsed, so a retry reuses the request_uuid."""
        async with self.pool.connection() as conn:
            await conn.execute(
                _LAPSE if wrote else _RELEASE, (workspace, key_id, idem, claimed.request_uuid)
            )

    async def purge_expired(self, batch: int = 10_000) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PURGE, (batch,))
            return cur.rowcount


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key (an sf-string; a bare token is accepted too)."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not _KEY.match(value):
        raise ProblemError(
            "bad-request", "Idempotency-Key must be 1-255 visible ASCII characters",
            errors=[FieldError(field="header:Idempotency-Key",
                               message="1-255 visible ASCII characters, no quote or backslash")],
        )
    return value


async def fingerprint(request: Request) -> bytes:
    """SHA-256 of method, path, query and the body (JSON canonicalized: key order and
    whitespace do not make two requests different)."""
    body = await request.body()
    try:
        canonical = msgspec.json.encode(msgspec.json.decode(body), order="sorted")
    except (msgspec.DecodeError, msgspec.EncodeError):
        canonical = body
    head = f"{request.method}\n{request.url.path}\n{request.url.query}\n".encode()
    return hashlib.sha256(head + canonical).digest()


def derived_id(request_uuid: uuid.UUID | None, name: str) -> str:
    """An id derived from the request's claim (stable across retries), else a fresh one."""
    if request_uuid is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(request_uuid, name))


def derived_ids(request_uuid: uuid.UUID | None, name: str, count: int = 16) -> list[str] | None:
    if request_uuid is None:
        return None
    return [str(uuid.uuid5(request_uuid, f"{name}/event/{i}")) for i in range(count)]


async def run_idempotent(
    request: Request,
    store: IdempotencyStore,
    work: Callable[[uuid.UUID | None], Awaitable[Reply]],
) -> Response[bytes]:
    """Runs `work` under the request's Idempotency-Key, if it sent one."""
    idem = idempotency_key(request)
    if idem is None:
        return (await work(None)).response()
    key = request.user.key
    claim = await store.claim(key.workspace, key.key_id, idem, await fingerprint(request))
    if isinstance(claim, Reply):
        return claim.response()
    try:
        result = await work(claim.request_uuid)
    except (DomainError, ConcurrencyError, ProblemError):
        # Refused before anything was appended: the key is free for a corrected request.
        await store.release(key.workspace, key.key_id, idem, claim, wrote=False)
        raise
    except BaseException:
        await asyncio.shield(
            store.release(key.workspace, key.key_id, idem, claim, wrote=True)
        )
        raise
    if 200 <= result.status < 300:
        await store.complete(key.workspace, key.key_id, idem, claim, result)
    else:
        await store.release(key.workspace, key.key_id, idem, claim, wrote=False)
    return result.response()
