"""The HTTP provider adapter: one workspace's external enrichment API, called safely.

Each call: the lead's values go into the URL template (processors/providers/http_mapping.py);
a lead without them is not looked up. The circuit breaker must allow the call (while it is
open the provider is skipped, and that is logged); the destination must pass the outbound guard
(processors/outbound.py: no private or loopback address unless the workspace allow-lists it;
redirects are never followed); the token bucket paces requests. Timeouts, connection errors,
429 and 5xx are retried (tenacity: bounded attempts, exponential backoff with jitter); any other
4xx fails at once, except 404, which means "nothing known about this lead" (an empty finding).
A call that still fails counts against the breaker and raises ProviderFailed.

The auth header's secret is sent and never logged; neither are URLs (they carry personal data).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from processors.outbound import BlockedDestination, OutboundClient, OutboundFailed, OutboundGuard
from processors.providers import (
    Clock,
    Finding,
    LeadSnapshot,
    ProviderFailed,
    ProviderSkipped,
    utc_now,
)
from processors.providers.circuit import CircuitBreaker
from processors.providers.http_configs import ProviderWithSecret
from processors.providers.http_mapping import HttpProviderConfig, expand_url, map_response
from processors.providers.rate_limit import TokenBucket

log = structlog.get_logger(__name__)
RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 2.0
MAX_BODY_BYTES = 1_000_000


class Retryable(Exception):
    """A failure worth another attempt (timeout, connection, 429, 5xx)."""


class Unusable(Exception):
    """An answer another attempt will not change (4xx, not JSON, too large)."""


class HttpProvider:
    def __init__(
        self, name: str, config: HttpProviderConfig, secret: str | None, guard: OutboundGuard,
        *, clock: Clock = utc_now, retry_initial_s: float = RETRY_INITIAL_S,
    ) -> None:
        self.name = name
        self.config = config
        self.guard = guard
        self.clock = clock
        self.breaker = CircuitBreaker(config.failure_threshold, config.cooldown_s)
        self.bucket = TokenBucket(config.rate_per_s, config.burst)
        self.retry_initial_s = retry_initial_s
        self._headers = (
            {config.auth_header: secret} if config.auth_header and secret is not None else {}
        )
        self._client = OutboundClient(config.timeout_s)

    async def enrich(self, workspace: str, snapshot: LeadSnapshot) -> Finding:
        url = expand_url(self.config.url, snapshot)
        if url is None:
            return Finding()
        try:
            await self.guard.check(workspace, url)
        except BlockedDestination as exc:
            # A configuration problem, not the provider's health: the breaker stays out of it.
            raise ProviderFailed(self.name, f"blocked destination: {exc}") from None
        if not self.breaker.allow():
            log.warning("enrichment provider skipped: circuit open", provider=self.name,
                        workspace=workspace, retry_in_s=round(self.breaker.retry_in_s(), 1))
            raise ProviderSkipped(self.name, "circuit breaker open after "
                                  f"{self.breaker.failures} consecutive failures")
        try:
            document = await self._fetch(url)
        except (Retryable, Unusable) as exc:
            self.breaker.failed()
            error = str(exc)  # never a library's message: it may quote the URL (personal data)
            log.warning("enrichment provider failed", provider=self.name, workspace=workspace,
                        error=error, breaker=self.breaker.state)
            raise ProviderFailed(self.name, error) from None
        self.breaker.succeeded()
        if document is None:
            return Finding()
        return map_response(self.name, self.config, document, self.clock())

    async def _fetch(self, url: str) -> Any:
        """The decoded JSON answer, or None for a 404."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.retries),
            wait=wait_exponential_jitter(multiplier=self.retry_initial_s, max=RETRY_MAX_S,
                                         jitter=self.retry_initial_s),
            retry=retry_if_exception_type(Retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(url)
        raise AssertionError("unreachable")

    async def _once(self, url: str) -> Any:
        await self.bucket.take()
        try:
            response = await self._client.get(url, self._headers)
        except OutboundFailed as exc:
            raise Retryable(f"no answer from the provider ({exc})") from None
        status = response.status
        if status == 429 or status >= 500:
            raise Retryable(f"the provider answered {status}")
        if status == 404:
            return None
        if status >= 300:
            raise Unusable(f"the provider answered {status}")
        if len(response.body) > MAX_BODY_BYTES:
            raise Unusable("the answer is larger than 1 MB")
        try:
            return msgspec.json.decode(response.body)
        except msgspec.DecodeError:
            raise Unusable("the answer is not JSON") from None

    async def close(self) -> None:
        await self._client.close()


class HttpProviders:
    """The HTTP providers of every workspace this process enriches for, kept across leads (so
    their breakers, buckets and connections live on) and rebuilt when a config changes."""

    def __init__(self, guard: OutboundGuard, clock: Clock = utc_now) -> None:
        self.guard = guard
        self.clock = clock
        self._providers: dict[tuple[str, str], tuple[datetime, HttpProvider]] = {}

    async def current(
        self, workspace: str, configured: list[ProviderWithSecret]
    ) -> list[HttpProvider]:
        found = []
        names = set()
        for item in configured:
            stored = item.provider
            key = (workspace, stored.name)
            names.add(stored.name)
            known = self._providers.get(key)
            if known is None or known[0] != stored.updated_at:
                if known is not None:
                    await known[1].close()
                provider = HttpProvider(stored.name, stored.config, item.secret, self.guard,
                                        clock=self.clock)
                self._providers[key] = known = (stored.updated_at, provider)
            found.append(known[1])
        for key in [k for k in self._providers if k[0] == workspace and k[1] not in names]:
            await self._providers.pop(key)[1].close()  # deleted or disabled
        return found

    async def close(self) -> None:
        for _, provider in self._providers.values():
            await provider.close()
        self._providers.clear()
