"""API keys: the store (hashes only, constant-time verify, revocation), the `keys` CLI group,
and the rate limiter's windows."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from api.http.access import RateLimiter
from api.keys import KeyStore, KeyStoreError, parse_token
from api.keys_cli import keys as keys_group


async def test_keys_are_stored_as_hashes_and_verified(pool: Any) -> None:
    store = KeyStore(pool)
    issued = await store.create("acme", "sales", "web form")
    parsed = parse_token(issued.token)
    assert parsed is not None
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM api_keys")
        rows = await cur.fetchall()
    # The whole secret: it may itself hold "_" (base64url), so no rsplit of the token (a
    # suffix of a few characters could appear anywhere in the rows by chance).
    secret = parsed[1]
    assert secret not in repr(rows)  # only its digest is stored
    verified = await store.verify(issued.token)
    assert verified is not None and verified.key.workspace == "acme"
    assert verified.key.can_write and not verified.require_if_match
    assert await store.verify(issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")) is None
    assert await store.verify("llk_nothex_" + "A" * 43) is None
    assert await store.verify("Bearer something") is None
    assert (await store.revoke(issued.key.key_id, workspace="globex")) is None
    revoked = await store.revoke(issued.key.key_id)
    assert revoked is not None and revoked.revoked
    assert await store.verify(issued.token) is None
    analyst = await store.create("acme", "analyst", "bi")
    assert not analyst.key.can_write
    with pytest.raises(KeyStoreError):
        await store.create("Acme Corp", "sales", "x")
    with pytest.raises(KeyStoreError):
        await store.create("acme", "system", "x")
    with pytest.raises(KeyStoreError):
        await store.create("acme", "sales", "  ")


def test_keys_cli(infra: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADLEDGER_DATABASE_URL", infra.database_url)
    monkeypatch.setenv("LEADLEDGER_NATS_URL", infra.nats_url)
    monkeypatch.setenv("LEADLEDGER_MASTER_KEY", infra.master_key)
    runner = CliRunner()
    created = runner.invoke(keys_group, ["create", "--workspace", "acme", "--role", "ops",
                                         "--name", "importer", "--rate-limit", "600"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    key_id = parse_token(token)[0]  # type: ignore[index]
    listed = runner.invoke(keys_group, ["list", "--workspace", "acme"])
    assert key_id in listed.stdout and "importer" in listed.stdout and token not in listed.stdout
    refused = runner.invoke(keys_group, ["create", "--workspace", "acme", "--role", "boss",
                                         "--name", "x"])
    assert refused.exit_code != 0
    revoked = runner.invoke(keys_group, ["revoke", key_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    missing = runner.invoke(keys_group, ["revoke", "0000000000000000"])
    assert missing.exit_code != 0
    with psycopg.connect(infra.database_url) as conn:
        row = conn.execute("SELECT revoked_at IS NOT NULL, rate_limit FROM api_keys "
                           "WHERE key_id = %s", (key_id,)).fetchone()
    assert row == (True, 600)


def test_rate_limiter_windows() -> None:
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    quotas = [limiter.hit("k", 3) for _ in range(4)]
    assert [q.allowed for q in quotas] == [True, True, True, False]
    assert [q.remaining for q in quotas] == [2, 1, 0, 0]
    assert quotas[-1].reset_s == 60
    assert limiter.hit("other", 3).allowed  # per key
    now[0] += 59.5
    assert not limiter.hit("k", 3).allowed and limiter.hit("k", 3).reset_s == 1
    now[0] += 1
    fresh = limiter.hit("k", 3)
    assert fresh.allowed and fresh.remaining == 2
    assert fresh.headers()[0] == (b"ratelimit-policy", b'"default";q=3;w=60')
