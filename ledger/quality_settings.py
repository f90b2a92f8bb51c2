"""A workspace's data-quality configuration: its vocabularies and its ingestion policy.

Owns the `vocabulary_terms` and `quality_settings` tables. Reads are cached for a few seconds
per workspace, since every create consults them and they change rarely.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.quality import DEFAULT_REQUIRED
from ledger.vocabulary import BUILTIN, Term, Vocabulary

CACHE_SECONDS = 2.0


class QualityPolicy(msgspec.Struct, frozen=True, kw_only=True):
    exact_policy: str = "reject"
    """What a create does when an exact identity key exists: reject, merge or flag."""
    fuzzy_policy: str = "flag"
    """What a create does with a likely (fuzzy) duplicate: reject, merge or flag."""
    fuzzy_threshold: float = 88.0
    on_unknown: str = "reject"
    """A value outside a vocabulary: reject it, or keep it as entered and flag it."""
    required_fields: tuple[str, ...] = DEFAULT_REQUIRED
    email_mx_check: bool = False
    """Look up the email domain's MX (ledger/email_dns.py) on creates and email changes; a
    domain that takes no mail makes the email invalid (`no-mx`)."""


class WorkspaceQuality(msgspec.Struct, frozen=True):
    policy: QualityPolicy
    vocabularies: dict[str, Vocabulary]


_POLICY = """
SELECT exact_policy, fuzzy_policy, fuzzy_threshold, on_unknown, required_fields, email_mx_check
FROM quality_settings WHERE workspace = %s
"""
_TERMS = """
SELECT vocabulary, code, label, synonyms FROM vocabulary_terms
WHERE workspace = %s ORDER BY vocabulary, code
"""
_SAVE_POLICY = """
INSERT INTO quality_settings (workspace, exact_policy, fuzzy_policy, fuzzy_threshold, on_unknown,
                              required_fields, email_mx_check, updated_by, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workspace) DO UPDATE SET
    exact_policy = excluded.exact_policy, fuzzy_policy = excluded.fuzzy_policy,
    fuzzy_threshold = excluded.fuzzy_threshold, on_unknown = excluded.on_unknown,
    required_fields = excluded.required_fields, email_mx_check = excluded.email_mx_check,
    updated_at = now(),
    updated_by = excluded.updated_by, reason = excluded.reason
"""
_DELETE_TERMS = "DELETE FROM vocabulary_terms WHERE workspace = %s AND vocabulary = %s"
_INSERT_TERM = """
INSERT INTO vocabulary_terms (workspace, vocabulary, code, label, synonyms, updated_by, reason)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""


class QualitySettings:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._cache: dict[str, tuple[float, WorkspaceQuality]] = {}

    async def load(self, workspace: str) -> WorkspaceQuality:
        cached = self._cache.get(workspace)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        async with self.pool.connection() as conn:
            found = await _load(conn, workspace)
        self._cache[workspace] = (time.monotonic(), found)
        return found

    async def save_policy(self, workspace: str, policy: QualityPolicy, actor: str,
                          reason: str | None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_SAVE_POLICY, (
                workspace, policy.exact_policy, policy.fuzzy_policy, policy.fuzzy_threshold,
                policy.on_unknown, list(policy.required_fields), policy.email_mx_check, actor,
                reason,
            ))
        self._cache.pop(workspace, None)

    async def save_vocabulary(self, workspace: str, name: str, terms: Sequence[Term], actor: str,
                              reason: str | None) -> None:
        """Replaces the workspace's list `name` (which then overrides the built-in one)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_DELETE_TERMS, (workspace, name))
            async with conn.cursor() as cur:
                await cur.executemany(_INSERT_TERM, [
                    (workspace, name, t.code, t.label, list(t.synonyms), actor, reason)
                    for t in terms
                ])
        self._cache.pop(workspace, None)

    async def reset_vocabulary(self, workspace: str, name: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_DELETE_TERMS, (workspace, name))
        self._cache.pop(workspace, None)


async def _load(conn: psycopg.AsyncConnection, workspace: str) -> WorkspaceQuality:
    cur = await conn.execute(_POLICY, (workspace,))
    row = await cur.fetchone()
    policy = QualityPolicy() if row is None else QualityPolicy(
        exact_policy=row[0], fuzzy_policy=row[1], fuzzy_threshold=row[2], on_unknown=row[3],
        required_fields=tuple(row[4]), email_mx_check=row[5],
    )
    cur = await conn.execute(_TERMS, (workspace,))
    custom: dict[str, list[Term]] = {}
    for vocabulary, code, label, synonyms in await cur.fetchall():
        custom.setdefault(vocabulary, []).append(
            Term(code=code, label=label, synonyms=tuple(synonyms))
        )
    vocabularies = dict(BUILTIN)
    vocabularies.update({n: Vocabulary(name=n, terms=tuple(t)) for n, t in custom.items()})
    return WorkspaceQuality(policy, vocabularies)
