"""Outbound HTTP from the processing plane (webhooks, enrichment providers), guarded.

A workspace's webhook URL or provider URL is user input: without a guard it could make the
server call its own admin ports, the cloud metadata service or the office network (SSRF). Every
request goes to a destination whose every resolved address is public, unless the workspace has
allow-listed the network (`PUT /v1/outbound/allowlist`; tests allow-list loopback). Redirects are
never followed: a public URL could redirect to a private one.

The check resolves the host and the client then resolves it again; a DNS answer that changes in
between (rebinding) is a residual risk we accept and note here rather than hide.

The client is aiohttp's: measured against httpx on this project's machines, a POST cost about
0.25 ms of the sender's CPU instead of 1.8–2.4 ms, and the webhook sender and the enrichment
providers are the processing plane's only HTTP clients.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence
from typing import Self
from urllib.parse import urlsplit

import aiohttp
import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CACHE_S = 5.0
MAX_NETWORKS = 100


class BlockedDestination(ValueError):
    """The URL is not one the processing plane may call (scheme, or a non-public address)."""


_LOAD = "SELECT networks FROM outbound_allowlists WHERE workspace = %s"
_SAVE = """
INSERT INTO outbound_allowlists (workspace, networks) VALUES (%s, %s)
ON CONFLICT (workspace) DO UPDATE SET networks = excluded.networks, updated_at = now()
"""


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses; raises ValueError naming the first bad one."""
    if len(values) > MAX_NETWORKS:
        raise ValueError(f"at most {MAX_NETWORKS} networks")
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8 or ::1)") from None
    return tuple(networks)


def blocked_reason(address: str, allowed: Sequence[Network]) -> str | None:
    """Why calling `address` is refused, or None when it is fine."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    return f"{ip} is not a public address (allow-list its network to call it)"


class OutboundGuard:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._cache: dict[str, tuple[float, tuple[Network, ...]]] = {}

    async def allowlist(self, workspace: str) -> tuple[Network, ...]:
        cached = self._cache.get(workspace)
        if cached and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LOAD, (workspace,))
            row = await cur.fetchone()
        networks = parse_networks(row[0]) if row else ()
        self._cache[workspace] = (time.monotonic(), networks)
        return networks

    async def set_allowlist(
        self, workspace: str, networks: Sequence[str], *, conn: psycopg.AsyncConnection | None = None
    ) -> tuple[Network, ...]:
        parsed = parse_networks(networks)
        texts = [str(n) for n in parsed]
        if conn is not None:
            await conn.execute(_SAVE, (workspace, texts))
        else:
            async with self.pool.connection() as own:
                await own.execute(_SAVE, (workspace, texts))
        self._cache[workspace] = (time.monotonic(), parsed)
        return parsed

    async def check(self, workspace: str, url: str) -> None:
        """Raises BlockedDestination unless every address of the URL's host may be called."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BlockedDestination(f"{url!r} is not an http(s) URL with a host")
        if parts.username or parts.password:
            raise BlockedDestination("credentials in the URL are not allowed; use a header")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as exc:
            raise BlockedDestination(f"cannot resolve {parts.hostname!r}: {exc}") from None
        allowed = await self.allowlist(workspace)
        for *_, sockaddr in infos:
            reason = blocked_reason(str(sockaddr[0]), allowed)
            if reason:
                raise BlockedDestination(f"{parts.hostname}: {reason}")


class OutboundResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    retry_after: str | None = None


class OutboundFailed(Exception):
    """No answer: the connection failed or the request timed out. The message names the kind
    of failure only (a library's message may quote the URL, which can carry personal data)."""


class OutboundClient:
    """HTTP for the processing plane: never follows redirects (a public URL could redirect to a
    private one), sends no ambient credentials (no proxies or netrc from the environment) and
    keeps no cookies (one receiver's cookie must never reach another), and keeps connections
    alive between requests. Open it with `async with`, or let the first request open it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> OutboundResponse:
        return await self._request("POST", url, body, headers)

    async def get(self, url: str, headers: dict[str, str]) -> OutboundResponse:
        return await self._request("GET", url, None, headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, url: str, body: bytes | None,
                       headers: dict[str, str]) -> OutboundResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(), headers={"user-agent": "leadledger"},
            )
        try:
            async with self._session.request(method, url, data=body, headers=headers,
                                             allow_redirects=False) as response:
                return OutboundResponse(response.status, await response.read(),
                                        response.headers.get("retry-after"))
        except TimeoutError:
            raise OutboundFailed("timed out") from None
        except aiohttp.ClientError as exc:
            raise OutboundFailed(type(exc).__name__) from None
