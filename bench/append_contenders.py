"""The contenders of the append benchmark, each measured by `measure(writers, warmup, duration)`.

Every contender writes rows of the same shape: the `raw_*` and `pgbench` tables are created
`LIKE events INCLUDING ALL` in a migrated database (the ledger's own columns, defaults, identity,
constraints and indexes, so they follow the schema as it evolves), and carry the exact bytes the
ledger stores for a sample lead. Each writer has its own connection. The async contenders (raw
and ledger) run as tasks on one event loop with psycopg's async driver; the `eventsourcing` peer
is synchronous, so it runs one OS thread per writer, and the raw insert is also measured that
way (`raw_insert_threads`) to show what the threaded driver costs by itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from bench.common import pgbench_path
from bench.measure import Sample, measure_async, measure_threads
from ledger.crypto import Keyring, generate_master_key, parse_master_key
from ledger.database import open_pool
from ledger.mapper import event_aad, to_stored
from ledger.store import EventStore, NewEvent
from schema.events import (
    Event,
    LeadCreated,
    LeadFields,
    LeadFieldsChanged,
    LeadNoteAdded,
    LeadStageChanged,
    LeadTagged,
)
from schema.metadata import Actor, EventMetadata

WORKSPACE = "ws_bench"
META = EventMetadata(
    actor=Actor(key_id="key_7f3a9c2e", role="sales_ops"),
    source="api",
    request_id="req_01hx3k4m5n6p7q8r9s0t",
    correlation_id="corr_01hx3k4m5n6p7q8r9s0t",
    reason="inbound web form",
)
META_JSON = msgspec.json.encode(META).decode()
META_SQL = f"convert_from('\\x{META_JSON.encode().hex()}'::bytea, 'UTF8')::jsonb"
_FIRST = ("Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Perlman")
_COMPANIES = ("Analytical Engines Ltd", "Cobol Systems GmbH", "Bletchley Data SA", "Clu Labs")


def lead_fields(i: int) -> LeadFields:
    """A realistic lead: 13 descriptive fields, 6 of them personal (encrypted in the ledger)."""
    first, last = _FIRST[i % len(_FIRST)], _LAST[(i // 8) % len(_LAST)]
    company = _COMPANIES[i % len(_COMPANIES)]
    return LeadFields(
        first_name=first,
        last_name=last,
        email=f"{first.lower()}.{last.lower()}{i}@{company.split()[0].lower()}.example",
        phone=f"+4420794{i % 100000:05d}",
        company=company,
        title="VP Revenue Operations",
        website=f"https://www.{company.split()[0].lower()}.example",
        country="GB",
        city="London",
        address=f"{i % 200 + 1} Old Street, London EC1V 9HX",
        ip_address=f"203.0.113.{i % 250 + 1}",
        source="web_form",
        external_id=f"crm-{100000 + i}",
    )


FIELDS = [lead_fields(i) for i in range(1000)]


def lead_created(lead_id: str, i: int) -> LeadCreated:
    return LeadCreated(lead_id=lead_id, fields=FIELDS[i % len(FIELDS)], stage="new",
                       owner="user_42", tags=("inbound", "enterprise"))


def _follow_up(k: int) -> Event:
    """The 99 events after LeadCreated in a 100-event batch: a realistic mix."""
    kind = k % 4
    if kind == 0:
        return LeadFieldsChanged(changes=LeadFields(phone=f"+4420794{k:05d}", title="CRO"))
    if kind == 1:
        return LeadTagged(tag=f"campaign-{k}")
    if kind == 2:
        return LeadNoteAdded(note_id=f"note_{k}", text=f"Called back, asked for pricing ({k}).")
    return LeadStageChanged(stage="qualified", previous="new")


FOLLOW_UPS = [_follow_up(k) for k in range(1, 100)]


def ledger_batch(lead_id: str, i: int, size: int) -> list[NewEvent]:
    return [NewEvent(lead_created(lead_id, i))] + [NewEvent(e) for e in FOLLOW_UPS[: size - 1]]


class RowTemplate(msgspec.Struct, frozen=True):
    """The bytes the ledger stores for one append of `size` events (sampled once)."""

    types: list[str]
    schema_versions: list[int]
    data: list[bytes]
    personal: list[bytes | None]

    @property
    def payload_bytes(self) -> int:
        return sum(len(d) + len(p or b"") for d, p in zip(self.data, self.personal, strict=True))


def row_template(size: int) -> RowTemplate:
    keyring = Keyring(parse_master_key(generate_master_key()))
    lead_id = f"lead_{uuid.uuid4().hex}"
    key = keyring.new_key(WORKSPACE, lead_id)
    stored = [to_stored(e.event, key, event_aad(WORKSPACE, lead_id, e.event_id))
              for e in ledger_batch(lead_id, 0, size)]
    return RowTemplate([s.event_type for s in stored], [s.schema_version for s in stored],
                       [s.data for s in stored], [s.personal for s in stored])


# -- raw inserts ---------------------------------------------------------------------------


def create_raw_table(conn: psycopg.Connection[Any], table: str) -> None:
    """A table equivalent to `events` (conn's database must be migrated). The append-only
    trigger is not copied: it fires on UPDATE/DELETE/TRUNCATE only, never on INSERT."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE events INCLUDING ALL)").format(
        sql.Identifier(table)))


def _insert_single(table: str) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {} (event_id, workspace, stream_id, version, event_type, schema_version,"
        " data, personal, metadata) VALUES (%s, %s, %s, 1, %s, %s, %s, %s, %s::jsonb)"
    ).format(sql.Identifier(table))


def _insert_batch(table: str) -> sql.Composed:
    # The same INSERT ... SELECT FROM unnest shape as ledger_append's own insert.
    return sql.SQL(
        "INSERT INTO {} (event_id, workspace, stream_id, version, event_type, schema_version,"
        " data, personal, metadata)"
        " SELECT u.id, %s, %s, u.ord::integer, u.t, u.sv, u.d, u.p, %s::jsonb"
        " FROM unnest(%s::uuid[], %s::text[], %s::smallint[], %s::bytea[], %s::bytea[])"
        " WITH ORDINALITY AS u(id, t, sv, d, p, ord)"
    ).format(sql.Identifier(table))


class RawInsert:
    """Plain INSERTs of the ledger's rows from psycopg, autocommit: one statement per append."""

    def __init__(self, name: str, url: str, table: str, template: RowTemplate,
                 *, threads: bool = False) -> None:
        self.name, self.url, self.table, self.template = name, url, table, template
        self.threads = threads
        self.size = len(template.data)
        self.unit = "rows/s" if self.size > 1 else "inserts/s"
        with psycopg.connect(url, autocommit=True) as conn:
            create_raw_table(conn, table)
        self._query = _insert_single(table) if self.size == 1 else _insert_batch(table)

    def _params(self) -> tuple[Any, ...]:
        t = self.template
        stream_id = f"lead_{uuid.uuid4().hex}"
        if self.size == 1:
            return (str(uuid.uuid4()), WORKSPACE, stream_id, t.types[0], t.schema_versions[0],
                    t.data[0], t.personal[0], META_JSON)
        ids = [str(uuid.uuid4()) for _ in range(self.size)]
        return (WORKSPACE, stream_id, META_JSON, ids, t.types, t.schema_versions, t.data,
                t.personal)

    def measure(self, writers: int, warmup: float, duration: float) -> Sample:
        if self.threads:
            return self._measure_threads(writers, warmup, duration)
        return asyncio.run(self._measure_async(writers, warmup, duration))

    async def _measure_async(self, writers: int, warmup: float, duration: float) -> Sample:
        conns = [await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                 for _ in range(writers)]

        async def op(i: int) -> int:
            await conns[i].execute(self._query, self._params())
            return self.size

        try:
            return await measure_async(op, writers, warmup, duration)
        finally:
            for conn in conns:
                await conn.close()

    def _measure_threads(self, writers: int, warmup: float, duration: float) -> Sample:
        conns = [psycopg.connect(self.url, autocommit=True) for _ in range(writers)]

        def op(i: int) -> int:
            conns[i].execute(self._query, self._params())
            return self.size

        try:
            return measure_threads(op, writers, warmup, duration)
        finally:
            for conn in conns:
                conn.close()


# -- pgbench -------------------------------------------------------------------------------


class PgbenchScript:
    """pgbench running a custom script (-n -M prepared, -j min(N, 2)), one transaction per
    script run: what the server does with no Python in the loop."""

    def __init__(self, name: str, url: str, script: str, unit: str = "tx/s") -> None:
        self.name, self.url, self.unit = name, url, unit
        handle, path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".sql")
        with os.fdopen(handle, "w") as out:
            out.write(script)
        self.script = Path(path)

    def measure(self, writers: int, warmup: float, duration: float) -> Sample:
        seconds = max(1, round(warmup + duration))
        cmd = [str(pgbench_path()), "-n", "-c", str(writers), "-j", str(min(writers, 2)),
               "-T", str(seconds), "-P", "1", "-M", "prepared", "-f", str(self.script),
               self.url]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stderr[-2000:]}")
        # One progress line a second; the first `warmup` seconds are the warm-up.
        per_second = [
            (float(t), float(tps)) for t, tps in
            re.findall(r"progress: ([\d.]+) s, ([\d.]+) tps", proc.stderr)
        ]
        window = [tps for t, tps in per_second if t > warmup + 1e-6]
        done = re.search(r"number of transactions actually processed: (\d+)", proc.stdout)
        if not window or done is None:
            raise RuntimeError(f"cannot read pgbench output: {proc.stdout[-2000:]}")
        # pgbench's own CPU per transaction, over the whole run (warm-up included).
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return Sample(sum(window) / len(window), cpu * 1e6 / max(int(done.group(1)), 1))

    def close(self) -> None:
        self.script.unlink(missing_ok=True)


def pgbench_insert_sql(table: str, template: RowTemplate) -> str:
    """One INSERT of the sample row, literals only: pgbench would read `:name` inside the JSON
    as a variable, so the metadata goes in as hex and is decoded server-side."""
    return (
        f"INSERT INTO {table} (event_id, workspace, stream_id, version, event_type,"
        f" schema_version, data, personal, metadata) VALUES (gen_random_uuid(),"
        f" '{WORKSPACE}', 'lead_' || md5(random()::text), 1, '{template.types[0]}',"
        f" {template.schema_versions[0]}, {_bytea_literal(template.data[0])},"
        f" {_bytea_literal(template.personal[0])}, {META_SQL});\n"
    )


def pgbench_insert(name: str, url: str, table: str, template: RowTemplate) -> PgbenchScript:
    """The physical limit of single-row inserts of the ledger's row on this server."""
    with psycopg.connect(url, autocommit=True) as conn:
        create_raw_table(conn, table)
    return PgbenchScript(name, url, pgbench_insert_sql(table, template), unit="inserts/s")


def _bytea_literal(value: bytes | None) -> str:
    return "NULL" if value is None else f"'\\x{value.hex()}'::bytea"


# -- leadledger ----------------------------------------------------------------------------


class LedgerAppend:
    """`EventStore.append` of a new stream (expected version 0) with `size` events, the first
    a LeadCreated with personal fields, so every append creates and stores a lead data key."""

    def __init__(self, name: str, url: str, size: int) -> None:
        self.name, self.url, self.size = name, url, size
        self.unit = "events/s" if size > 1 else "appends/s"
        self.keyring = Keyring(parse_master_key(generate_master_key()))
        self._counter = 0

    def measure(self, writers: int, warmup: float, duration: float) -> Sample:
        return asyncio.run(self._measure(writers, warmup, duration))

    async def _measure(self, writers: int, warmup: float, duration: float) -> Sample:
        pool = await open_pool(self.url, min_size=writers, max_size=writers, name="bench")
        store = EventStore(pool, self.keyring)

        async def op(_: int) -> int:
            self._counter += 1
            lead_id = f"lead_{uuid.uuid4().hex}"
            if self.size == 1:
                events = [NewEvent(lead_created(lead_id, self._counter))]
            else:
                events = ledger_batch(lead_id, self._counter, self.size)
            await store.append(WORKSPACE, lead_id, 0, events, META)
            return self.size

        try:
            return await measure_async(op, writers, warmup, duration)
        finally:
            await pool.close()
