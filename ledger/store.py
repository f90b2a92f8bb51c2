"""The event store: idempotent, optimistic appends and gap-safe reads of the global log.

All SQL against `events` and `subject_keys` lives here. Appends are one call of the
`ledger_append` function (one round trip; optimistic concurrency rests on the events' unique
stream version, see migration 0030); the database refuses any UPDATE or DELETE of events.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.crypto import DataKey, Keyring
from ledger.errors import ConcurrencyError, IdentityClaimed
from ledger.identity import IdentityClaim, IdentityKey
from ledger.mapper import event_aad, from_stored, to_stored
from schema.events import Event
from schema.metadata import EventMetadata
from schema.positions import LogPosition
from schema.registry import DEFAULT_REGISTRY, EventRegistry

_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(EventMetadata).decode


class NewEvent(msgspec.Struct, frozen=True):
    event: Event
    event_id: str = msgspec.field(default_factory=lambda: str(uuid.uuid4()))


class IdentityChange(msgspec.Struct, frozen=True):
    """Identity keys the stream gives up and takes on with this append (see ledger/identity)."""

    release: Sequence[IdentityKey] = ()
    claim: Sequence[IdentityKey] = ()


class StreamAppend(msgspec.Struct, frozen=True):
    stream_id: str
    expected_version: int | None
    events: Sequence[NewEvent]
    key: DataKey | None = None
    identity: IdentityChange | None = None


class AppendResult(msgspec.Struct, frozen=True):
    stream_id: str
    version: int
    """The stream's version after the append."""
    positions: list[LogPosition]
    recorded_at: datetime | None = None
    """When the append was recorded, where the statement reported it (one event at a version)."""

    @property
    def last(self) -> LogPosition:
        return self.positions[-1]


class RecordedEvent(msgspec.Struct, frozen=True):
    position: int
    transaction_id: int
    event_id: str
    workspace: str
    stream_id: str
    version: int
    event: Event
    metadata: EventMetadata
    recorded_at: datetime
    redacted: bool = False

    @property
    def log_position(self) -> LogPosition:
        return LogPosition(self.transaction_id, self.position)


class Stream(msgspec.Struct, frozen=True):
    stream_id: str
    version: int
    events: list[RecordedEvent]
    key: DataKey | None


_APPEND = """
SELECT event_position, event_transaction_id, event_version
FROM ledger_append(%s, %s, %s, %s::uuid[], %s::text[], %s::smallint[], %s::bytea[],
                   %s::bytea[], %s::jsonb, %s::bytea)
"""
# Binary parameters (%b): the ciphertext and the data go as bytes, not hex-escaped text.
_APPEND_ONE = """
SELECT event_position, event_transaction_id, event_version
FROM ledger_append_one(%b, %b, %b::integer, %b::uuid, %b, %b::smallint, %b::bytea, %b::bytea,
                       %b::text::jsonb, %b::bytea, %b::text[], %b::bytea[], %b::text[],
                       %b::bytea[])
"""
# The common appends as plain statements: a write at a known version, with identity keys to
# claim but none to release (every create, nearly every processor's write). Calling the PL/pgSQL
# functions for them costs the server about a fifth of its append throughput (pgbench, 16
# writers: ledger_append_one at 0.66 of a raw insert's rate, the same work as one statement at
# 0.86). They do what the functions do on that path (migrations 0030, 0032): version N must
# exist and N + 1 must not (the unique key); the claims (a key another lead owns makes
# ledger_refuse_claims raise LL410, which aborts the whole statement, events included); the new
# subject key; the relay's wake-up (one NOTIFY per burst, by whoever wins the try-lock).
_AFTER_APPEND = """
), claimed AS (
    INSERT INTO identity_keys (workspace, kind, key_hash, lead_id)
    SELECT %(workspace)b::text, c.kind, c.key_hash, %(stream_id)b::text
    FROM (SELECT 1 FROM appended LIMIT 1) AS written,
         unnest(%(claim_kinds)b::text[], %(claim_hashes)b::bytea[]) AS c(kind, key_hash)
    ON CONFLICT (workspace, kind, key_hash) DO NOTHING
    RETURNING 1
), subject_key AS (
    INSERT INTO subject_keys (workspace, subject_id, wrapped_key)
    SELECT %(workspace)b::text, %(stream_id)b::text, %(new_key)b::bytea
    FROM (SELECT 1 FROM appended LIMIT 1) AS written WHERE %(new_key)b::bytea IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT position, transaction_id, version, recorded_at,
       CASE WHEN (SELECT count(*) FROM claimed) < cardinality(%(claim_kinds)b::text[])
            THEN ledger_refuse_claims(%(workspace)b::text, %(stream_id)b::text,
                                      %(claim_kinds)b::text[], %(claim_hashes)b::bytea[])
       END AS refused,
       (CASE WHEN pg_try_advisory_xact_lock(7853, 1)
             THEN pg_notify('leadledger_events', '') END)::text IS NOT NULL AS woke
FROM appended
ORDER BY version
"""
_AT_EXPECTED = """
    WHERE %(expected)b::integer = 0 OR EXISTS (
        SELECT 1 FROM events
        WHERE workspace = %(workspace)b::text AND stream_id = %(stream_id)b::text
          AND version = %(expected)b::integer
    )
"""
# One event, scalar parameters (one-element arrays cost the client more than the rest). A
# conflict or a repeat inserts nothing (ON CONFLICT), so it is safe inside any transaction.
_APPEND_AT_VERSION = """
WITH appended AS (
    INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                        data, personal, metadata)
    SELECT %(event_id)b::uuid, %(workspace)b::text, %(stream_id)b::text,
           %(expected)b::integer + 1, %(type)b::text, %(schema_version)b::smallint,
           %(data)b::bytea, %(personal)b::bytea, %(metadata)b::text::jsonb
""" + _AT_EXPECTED + """
    ON CONFLICT DO NOTHING
    RETURNING position, transaction_id, version, recorded_at
""" + _AFTER_APPEND
# Several events. Without ON CONFLICT, so that a batch never lands in part: a conflict or a
# repeat fails the whole statement (unique_violation). Only on a connection of its own, whose
# transaction that failure can end (EventStore.append without `conn`).
_APPEND_BATCH_AT_VERSION = """
WITH appended AS (
    INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                        data, personal, metadata)
    SELECT u.id, %(workspace)b::text, %(stream_id)b::text, %(expected)b::integer + u.ord::integer,
           u.t, u.sv, u.d, u.p, %(metadata)b::text::jsonb
    FROM unnest(%(event_ids)b::uuid[], %(types)b::text[], %(schema_versions)b::smallint[],
                %(data)b::bytea[], %(personal)b::bytea[])
         WITH ORDINALITY AS u(id, t, sv, d, p, ord)
""" + _AT_EXPECTED + """
    ORDER BY u.ord
    RETURNING position, transaction_id, version, recorded_at
""" + _AFTER_APPEND


# One event for each of several streams, each at its known version (a processor's batch: the
# scoring processor's LeadScored for every lead it scored). Only events that need no new subject
# key and change no identity keys. A conflict or a repeat inserts nothing for that stream (ON
# CONFLICT) and the rest still land: the caller retries those on the usual path, which tells a
# conflict from a repeat.
_APPEND_EACH_AT_VERSION = """
WITH appended AS (
    INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                        data, personal, metadata)
    SELECT u.id, %(workspace)b::text, u.sid, u.expected + 1, u.t, u.sv, u.d, u.p, u.m::jsonb
    FROM unnest(%(event_ids)b::uuid[], %(stream_ids)b::text[], %(expected)b::integer[],
                %(types)b::text[], %(schema_versions)b::smallint[], %(data)b::bytea[],
                %(personal)b::bytea[], %(metadata)b::text[])
         AS u(id, sid, expected, t, sv, d, p, m)
    WHERE u.expected = 0 OR EXISTS (
        SELECT 1 FROM events e
        WHERE e.workspace = %(workspace)b::text AND e.stream_id = u.sid
          AND e.version = u.expected
    )
    ON CONFLICT DO NOTHING
    RETURNING event_id::text, position, transaction_id, version, recorded_at
)
SELECT event_id, position, transaction_id, version, recorded_at
FROM appended, LATERAL (
    SELECT CASE WHEN pg_try_advisory_xact_lock(7853, 1)
                THEN pg_notify('leadledger_events', '') END
) AS woke
"""


class _EachAtVersion(msgspec.Struct, frozen=True):
    """_APPEND_EACH_AT_VERSION's parameters."""

    workspace: str
    event_ids: list[str]
    stream_ids: list[str]
    expected: list[int]
    types: list[str]
    schema_versions: list[int]
    data: list[bytes]
    personal: list[bytes | None]
    metadata: list[str]


class OneEvent(msgspec.Struct, frozen=True):
    """One event for one stream at a known version, for EventStore.append_each."""

    stream_id: str
    expected_version: int
    event: NewEvent
    metadata: EventMetadata
    key: DataKey | None = None
    """The stream's key, as read with the stream (needed when the event is personal)."""


class _AtVersion(msgspec.Struct, frozen=True):
    """_APPEND_AT_VERSION's parameters."""

    event_id: str
    workspace: str
    stream_id: str
    expected: int
    type: str
    schema_version: int
    data: bytes
    personal: bytes | None
    metadata: str
    new_key: bytes | None
    claim_kinds: list[str] | None
    claim_hashes: list[bytes] | None


class _BatchAtVersion(msgspec.Struct, frozen=True):
    """_APPEND_BATCH_AT_VERSION's parameters."""

    event_ids: list[str]
    workspace: str
    stream_id: str
    expected: int
    types: list[str]
    schema_versions: list[int]
    data: list[bytes]
    personal: list[bytes | None]
    metadata: str
    new_key: bytes | None
    claim_kinds: list[str] | None
    claim_hashes: list[bytes] | None


# What ends an append that wrote nothing: LL409 when the stream is elsewhere, else (a repeat)
# the rows stored the first time.
_REFUSE_CONFLICT = "SELECT ledger_refuse_conflict(%s, %s, %s, %s::uuid)"
_APPENDED = """
SELECT position, transaction_id, version, recorded_at FROM events
WHERE event_id = ANY (%s::uuid[]) ORDER BY version
"""
_APPEND_WITH_IDENTITY = """
SELECT event_position, event_transaction_id, event_version
FROM ledger_append(%s, %s, %s, %s::uuid[], %s::text[], %s::smallint[], %s::bytea[],
                   %s::bytea[], %s::jsonb, %s::bytea, %s::text[], %s::bytea[], %s::text[],
                   %s::bytea[])
"""

_EVENT_COLUMNS = """
e.position, e.transaction_id, e.event_id::text, e.workspace, e.stream_id, e.version,
e.event_type, e.schema_version, e.data, e.personal, e.metadata::text, e.recorded_at
"""
_COLUMNS = _EVENT_COLUMNS + ", k.wrapped_key"

_READ_STREAM = f"""
SELECT {_COLUMNS}
FROM events e
LEFT JOIN subject_keys k ON k.workspace = e.workspace AND k.subject_id = e.stream_id
WHERE e.workspace = %s AND e.stream_id = %s AND e.version > %s
ORDER BY e.version
"""

# Several whole streams in one round trip (a reactor's batch reads each lead it acts on once).
_READ_STREAMS = f"""
SELECT {_COLUMNS}
FROM unnest(%s::text[], %s::text[]) AS s (workspace, stream_id)
JOIN events e ON e.workspace = s.workspace AND e.stream_id = s.stream_id
LEFT JOIN subject_keys k ON k.workspace = e.workspace AND k.subject_id = e.stream_id
ORDER BY e.workspace, e.stream_id, e.version
"""

_READ_EVENTS = f"""
SELECT {_COLUMNS}
FROM events e
LEFT JOIN subject_keys k ON k.workspace = e.workspace AND k.subject_id = e.stream_id
WHERE e.event_id = ANY(%s::uuid[])
"""

# Gap-safe read of the global log. Positions are assigned when a row is inserted but become
# visible only at commit, so a reader ordering by position alone could pass a slow transaction's
# rows before they commit and never see them. Reading only rows whose transaction is older than
# the oldest transaction still running (the snapshot's xmin), ordered by (transaction id,
# position), means nothing can ever commit behind the reader.
_READ_ALL = f"""
SELECT {_COLUMNS}
FROM events e
LEFT JOIN subject_keys k ON k.workspace = e.workspace AND k.subject_id = e.stream_id
WHERE (e.transaction_id, e.position) > (%s, %s)
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY e.transaction_id, e.position
LIMIT %s
"""

_READ_ALL_WORKSPACE = f"""
SELECT {_COLUMNS}
FROM events e
LEFT JOIN subject_keys k ON k.workspace = e.workspace AND k.subject_id = e.stream_id
WHERE e.workspace = %s
  AND (e.transaction_id, e.position) > (%s, %s)
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY e.transaction_id, e.position
LIMIT %s
"""

# A rebuild's read of one partition of the log: the events of the streams whose id hashes to
# `index` (of `count` partitions), after one position and up to another, in global order. The
# upper bound is a position the gap-safe horizon has passed (every transaction up to it has
# ended), so no snapshot check is needed: nothing can still commit at or below it. The subject
# keys are read apart (_BATCH_KEYS), for the events with personal data only: joining them to
# every row costs the server more than the rest of the read.
_READ_RANGE = f"""
SELECT {_EVENT_COLUMNS}
FROM events e
WHERE (e.transaction_id, e.position) > (%s, %s)
  AND (e.transaction_id, e.position) <= (%s, %s)
  AND (hashtext(e.stream_id) & 2147483647) %% %s = %s
ORDER BY e.transaction_id, e.position
LIMIT %s
"""
# The planner cannot know that the partition filter keeps 1/count of the rows (it guesses far
# fewer) and would sort the whole log instead of walking the (transaction_id, position) index.
_RANGE_PLAN = """
SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
       set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)
"""

_BATCH_KEYS = """
SELECT subject_id, wrapped_key FROM subject_keys WHERE workspace = %s AND subject_id = ANY(%s)
"""

_HEAD = "SELECT coalesce(max(position), 0) FROM events"

_HORIZON = """
SELECT e.transaction_id, e.position FROM events e
WHERE e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
ORDER BY e.transaction_id DESC, e.position DESC
LIMIT 1
"""

_KEY = "SELECT wrapped_key FROM subject_keys WHERE workspace = %s AND subject_id = %s"
_DESTROY_KEY = "DELETE FROM subject_keys WHERE workspace = %s AND subject_id = %s"


def _key_arrays(keys: Sequence[IdentityKey]) -> tuple[list[str] | None, list[bytes] | None]:
    if not keys:
        return None, None
    return [k.kind for k in keys], [k.key_hash for k in keys]


_decode_claims = msgspec.json.Decoder(list[IdentityClaim]).decode


class EventStore:
    def __init__(
        self, pool: AsyncConnectionPool, keyring: Keyring, registry: EventRegistry = DEFAULT_REGISTRY
    ) -> None:
        self.pool = pool
        self.keyring = keyring
        self.registry = registry

    # -- writing ---------------------------------------------------------------------------

    async def append(
        self,
        workspace: str,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        metadata: EventMetadata,
        *,
        key: DataKey | None = None,
        identity: IdentityChange | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> AppendResult:
        """Appends to one stream. With `conn`, runs inside the caller's transaction.

        `identity` moves identity keys with the append, atomically; a key another stream owns
        raises IdentityClaimed and appends nothing."""
        spec = StreamAppend(stream_id, expected_version, events, key, identity)
        if conn is not None:
            return await self._append(conn, workspace, spec, metadata)
        async with self.pool.connection() as own:
            return await self._append(own, workspace, spec, metadata, own=True)

    async def append_many(
        self, workspace: str, appends: Sequence[StreamAppend], metadata: EventMetadata
    ) -> list[AppendResult]:
        """Appends to several streams atomically: all of them or none."""
        async with self.pool.connection() as conn, conn.transaction():
            return [await self._append(conn, workspace, spec, metadata) for spec in appends]

    async def append_each(
        self, workspace: str, appends: Sequence[OneEvent], *, conn: psycopg.AsyncConnection
    ) -> dict[str, AppendResult]:
        """One event for each of several streams in one statement, inside the caller's
        transaction; never raises for a conflict or a repeat. Returns what landed, by stream;
        an append missing from it wrote nothing (its stream moved on, or it is a repeat): use
        `append` for it. A personal event needs its stream's key (`OneEvent.key`)."""
        if not appends:
            return {}
        columns = _EachAtVersion(workspace, [], [], [], [], [], [], [], [])
        for one in appends:
            if one.event.event.personal and one.key is None:
                raise ValueError(f"{one.stream_id}: a personal event needs the stream's key")
            stored = to_stored(one.event.event, one.key,
                               event_aad(workspace, one.stream_id, one.event.event_id))
            columns.event_ids.append(one.event.event_id)
            columns.stream_ids.append(one.stream_id)
            columns.expected.append(one.expected_version)
            columns.types.append(stored.event_type)
            columns.schema_versions.append(stored.schema_version)
            columns.data.append(stored.data)
            columns.personal.append(stored.personal)
            columns.metadata.append(_encode(one.metadata).decode())
        cur = await conn.execute(_APPEND_EACH_AT_VERSION, msgspec.structs.asdict(columns))
        landed = {event_id: row for event_id, *row in await cur.fetchall()}
        results = {}
        for one in appends:
            row = landed.get(one.event.event_id)
            if row is not None:
                position, tx, version, recorded_at = row
                results[one.stream_id] = AppendResult(
                    stream_id=one.stream_id, version=version,
                    positions=[LogPosition(tx, position)], recorded_at=recorded_at)
        return results

    async def _append(
        self,
        conn: psycopg.AsyncConnection,
        workspace: str,
        spec: StreamAppend,
        metadata: EventMetadata,
        *,
        own: bool = False,
    ) -> AppendResult:
        """`own`: `conn` is the append's alone (autocommit), so a failed statement ends nothing
        of the caller's, and a batch may take the plain statement that fails on a conflict."""
        if not spec.events:
            raise ValueError("an append needs at least one event")
        key = spec.key
        if key is None and any(e.event.personal for e in spec.events):
            key = await self._key_for_write(conn, workspace, spec.stream_id, spec.expected_version)
        ids, types, versions, data, personal = [], [], [], [], []
        for new in spec.events:
            stored = to_stored(new.event, key, event_aad(workspace, spec.stream_id, new.event_id))
            ids.append(new.event_id)
            types.append(stored.event_type)
            versions.append(stored.schema_version)
            data.append(stored.data)
            personal.append(stored.personal)
        new_key = key.wrapped if key is not None and key.is_new else None
        encoded = _encode(metadata).decode()
        identity = spec.identity or IdentityChange()
        expected = spec.expected_version
        plain = expected is not None and not identity.release and (len(ids) == 1 or own)
        try:
            if plain and expected is not None:
                kinds, hashes = _key_arrays(identity.claim)
                append: _AtVersion | _BatchAtVersion = (
                    _AtVersion(ids[0], workspace, spec.stream_id, expected, types[0],
                               versions[0], data[0], personal[0], encoded, new_key, kinds,
                               hashes)
                    if len(ids) == 1 else
                    _BatchAtVersion(ids, workspace, spec.stream_id, expected, types, versions,
                                    data, personal, encoded, new_key, kinds, hashes)
                )
                return await self._append_at_version(conn, append, ids)
            return await self._append_through_function(
                conn, (workspace, spec.stream_id, expected, ids, types, versions, data,
                       personal, encoded, new_key), identity,
            )
        except psycopg.Error as exc:
            raise _append_error(exc, spec) from None

    @staticmethod
    async def _append_at_version(
        conn: psycopg.AsyncConnection, append: _AtVersion | _BatchAtVersion, ids: list[str]
    ) -> AppendResult:
        query = _APPEND_AT_VERSION if isinstance(append, _AtVersion) else _APPEND_BATCH_AT_VERSION
        try:
            cur = await conn.execute(query, msgspec.structs.asdict(append))
            rows = await cur.fetchall()
        except psycopg.errors.UniqueViolation:
            rows = []  # a batch that conflicts or repeats (its statement has no ON CONFLICT)
        if not rows:
            # Not written: the stream is elsewhere (this raises LL409), or this is a repeat.
            await conn.execute(_REFUSE_CONFLICT, (append.workspace, append.stream_id,
                                                  append.expected, ids[0]))
            cur = await conn.execute(_APPENDED, (ids,))
            rows = await cur.fetchall()
        return AppendResult(
            stream_id=append.stream_id,
            version=rows[-1][2],
            positions=[LogPosition(tx, pos) for pos, tx, *_ in rows],
            recorded_at=rows[-1][3],
        )

    @staticmethod
    async def _append_through_function(
        conn: psycopg.AsyncConnection, params: tuple, identity: IdentityChange
    ) -> AppendResult:
        """Any version, identity keys released, or a batch inside the caller's transaction:
        the PL/pgSQL functions (migrations 0030, 0032)."""
        moves = bool(identity.release or identity.claim)
        moved = ((*_key_arrays(identity.release), *_key_arrays(identity.claim)) if moves
                 else (None, None, None, None))
        ids = params[3]
        if len(ids) == 1:
            query = _APPEND_ONE
            params = (*params[:3], ids[0], params[4][0], params[5][0], params[6][0],
                      params[7][0], *params[8:], *moved)
        elif moves:
            query = _APPEND_WITH_IDENTITY
            params += moved
        else:
            query = _APPEND
        cur = await conn.execute(query, params)
        return _appended(params[1], await cur.fetchall())

    async def _key_for_write(
        self, conn: psycopg.AsyncConnection, workspace: str, stream_id: str, expected: int | None
    ) -> DataKey:
        if expected != 0:
            cur = await conn.execute(_KEY, (workspace, stream_id))
            row = await cur.fetchone()
            if row is not None:
                return self.keyring.unwrap(workspace, stream_id, row[0])
        return self.keyring.new_key(workspace, stream_id)

    async def destroy_key(
        self, workspace: str, subject_id: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> bool:
        """Crypto-shreds a subject: every personal field of its events becomes unreadable."""
        if conn is not None:
            cur = await conn.execute(_DESTROY_KEY, (workspace, subject_id))
            return cur.rowcount > 0
        async with self.pool.connection() as own:
            cur = await own.execute(_DESTROY_KEY, (workspace, subject_id))
            return cur.rowcount > 0

    # -- reading ---------------------------------------------------------------------------

    async def read_stream(
        self,
        workspace: str,
        stream_id: str,
        after_version: int = 0,
        *,
        conn: psycopg.AsyncConnection | None = None,
    ) -> Stream:
        """With `conn`, reads inside the caller's transaction (seeing its own appends)."""
        if conn is not None:
            return await self._read_stream(conn, workspace, stream_id, after_version)
        async with self.pool.connection() as own:
            return await self._read_stream(own, workspace, stream_id, after_version)

    async def _read_stream(
        self, conn: psycopg.AsyncConnection, workspace: str, stream_id: str, after_version: int
    ) -> Stream:
        cur = await conn.execute(_READ_STREAM, (workspace, stream_id, after_version), binary=True)
        rows = await cur.fetchall()
        key = None
        if rows and rows[0][12] is not None:
            key = self.keyring.unwrap(workspace, stream_id, rows[0][12])
        elif not rows:
            cur = await conn.execute(_KEY, (workspace, stream_id))
            row = await cur.fetchone()
            key = self.keyring.unwrap(workspace, stream_id, row[0]) if row else None
        events = [self._record(row) for row in rows]
        return Stream(stream_id, events[-1].version if events else after_version, events, key)

    async def read_streams(
        self, subjects: Sequence[tuple[str, str]], *, conn: psycopg.AsyncConnection | None = None
    ) -> dict[tuple[str, str], Stream]:
        """Whole streams of (workspace, stream id) pairs in one query; a stream with no events
        is left out (read it with read_stream, which also finds its key). With `conn`, reads
        inside the caller's transaction."""
        if not subjects:
            return {}
        params = ([w for w, _ in subjects], [s for _, s in subjects])
        rows = await self._rows(_READ_STREAMS, params, conn)
        grouped: dict[tuple[str, str], list[tuple]] = {}
        for row in rows:
            grouped.setdefault((row[3], row[4]), []).append(row)
        streams = {}
        for (workspace, stream_id), stream_rows in grouped.items():
            wrapped = stream_rows[0][12]
            key = None if wrapped is None else self.keyring.unwrap(workspace, stream_id, wrapped)
            events = [self._record(row) for row in stream_rows]
            streams[(workspace, stream_id)] = Stream(stream_id, events[-1].version, events, key)
        return streams

    async def read_events(self, event_ids: Sequence[str]) -> dict[str, RecordedEvent]:
        """Events by id, in one query (an id not in the ledger is left out)."""
        if not event_ids:
            return {}
        rows = await self._rows(_READ_EVENTS, (list(event_ids),), None)
        return {row[2]: self._record(row) for row in rows}

    async def read_all(
        self,
        after: LogPosition,
        limit: int = 1000,
        *,
        workspace: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[RecordedEvent]:
        """The next events of the global log after `after`, gap-safe (see _READ_ALL)."""
        if workspace is None:
            query, params = _READ_ALL, (after.transaction_id, after.position, limit)
        else:
            query = _READ_ALL_WORKSPACE
            params = (workspace, after.transaction_id, after.position, limit)
        return [self._record(row) for row in await self._rows(query, params, conn)]

    async def _rows(
        self, query: str, params: tuple, conn: psycopg.AsyncConnection | None
    ) -> list[tuple]:
        """A read's rows (binary), on `conn` (inside the caller's transaction) or a pooled one."""
        if conn is not None:
            cur = await conn.execute(query, params, binary=True)
            return await cur.fetchall()
        async with self.pool.connection() as own:
            cur = await own.execute(query, params, binary=True)
            return await cur.fetchall()

    async def read_range(
        self,
        after: LogPosition,
        until: LogPosition,
        limit: int,
        *,
        partition: tuple[int, int] = (0, 1),
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[RecordedEvent]:
        """The next events after `after` and up to `until` (inclusive) of the streams in
        `partition` (index, count: a hash of the stream id splits the streams in `count`), in
        global order. `until` must be at or below a horizon() already read: this read does not
        check what is still running. For rebuilds, which split the log by stream."""
        index, count = partition
        params = (after.transaction_id, after.position, until.transaction_id, until.position,
                  count, index, limit)
        if conn is not None:
            return await self._read_range(conn, params)
        async with self.pool.connection() as own:
            return await self._read_range(own, params)

    async def _read_range(self, conn: psycopg.AsyncConnection, params: tuple) -> list[RecordedEvent]:
        async with conn.transaction():
            await conn.execute(_RANGE_PLAN)
            cur = await conn.execute(_READ_RANGE, params, binary=True)
            rows = await cur.fetchall()
            subjects: dict[str, set[str]] = {}
            for row in rows:
                if row[9] is not None:
                    subjects.setdefault(row[3], set()).add(row[4])
            keys: dict[tuple[str, str], bytes] = {}
            for workspace, ids in subjects.items():
                cur = await conn.execute(_BATCH_KEYS, (workspace, list(ids)), binary=True)
                keys.update(((workspace, sid), wrapped) for sid, wrapped in await cur.fetchall())
        recorded = self._recorded
        return [
            recorded(row, None if row[9] is None else keys.get((row[3], row[4]))) for row in rows
        ]

    async def head(self) -> int:
        """The highest position written (committed or not yet visible to gap-safe readers)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_HEAD)
            row = await cur.fetchone()
        return row[0] if row else 0

    async def horizon(self) -> LogPosition:
        """The last event a gap-safe reader can see now."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_HORIZON)
            row = await cur.fetchone()
        return LogPosition(row[0], row[1]) if row else LogPosition()

    def _record(self, row: tuple) -> RecordedEvent:
        return self._recorded(row, row[12])

    def _recorded(self, row: tuple, wrapped: bytes | None) -> RecordedEvent:
        """A row of _EVENT_COLUMNS (and maybe more) as an event, with the subject's wrapped key
        (a replay's hot path)."""
        (position, tx, event_id, workspace, stream_id, version, event_type, schema_version,
         data, personal, metadata, recorded_at, *_) = row
        if personal is None:  # no key needed: most events carry no personal data
            event, redacted = self.registry.decode(event_type, schema_version, data), False
        else:
            key = None if wrapped is None else self.keyring.unwrap(workspace, stream_id, wrapped)
            event, redacted = from_stored(
                event_type, schema_version, data, personal, key,
                event_aad(workspace, stream_id, event_id), self.registry,
            )
        # Fields in RecordedEvent's order: position, transaction_id, event_id, workspace,
        # stream_id, version, event, metadata, recorded_at, redacted.
        return RecordedEvent(position, tx, event_id, workspace, stream_id, version, event,
                             _decode_metadata(metadata), recorded_at, redacted)


def _appended(stream_id: str, rows: Sequence[tuple[int, int, int]]) -> AppendResult:
    return AppendResult(
        stream_id=stream_id,
        version=rows[-1][2],
        positions=[LogPosition(tx, pos) for pos, tx, _ in rows],
    )


def _append_error(exc: psycopg.Error, spec: StreamAppend) -> Exception:
    """The typed error of a refused append (SQLSTATE LL409, LL410), or the error itself."""
    if exc.sqlstate == "LL409":
        current = int(exc.diag.message_detail or 0)
        return ConcurrencyError(spec.stream_id, spec.expected_version, current)
    if exc.sqlstate == "LL410":
        return IdentityClaimed(spec.stream_id, _decode_claims(exc.diag.message_detail or "[]"))
    return exc
