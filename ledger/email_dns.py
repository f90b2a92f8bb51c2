"""Whether an email's domain takes mail, by DNS: the optional MX check (per workspace,
`QualityPolicy.email_mx_check`).

A domain is deliverable when it publishes MX records, or none but has an address (A or AAAA:
RFC 5321's implicit MX); it is not when it does not exist (NXDOMAIN), publishes only the null MX
(RFC 7505, "accepts no mail"), or has neither MX nor address. Anything else (a timeout,
SERVFAIL, no network, no resolver configuration) is unknown: the lookup must never hold up or
fail a create, so unknown is answered like "not checked" and logged.

This is I/O, so it runs in the shell (ledger/ingest.py, the PATCH path) and its outcome goes into
the command (`email_deliverable`); the decider only records it. Outcomes are cached per domain:
deliverable for an hour, not deliverable for ten minutes (a domain being set up should not stay
refused for long), unknown for half a minute (so a resolver that is down costs one timeout per
domain now and then, not one per create). Concurrent lookups of one domain share one query.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import structlog

from ledger.normalize import InvalidEmailSyntax, normalize_email

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 2.0
POSITIVE_TTL_S = 3600.0
NEGATIVE_TTL_S = 600.0
UNKNOWN_TTL_S = 30.0
MAX_CACHED = 10_000


class Deliverability(enum.Enum):
    DELIVERABLE = "deliverable"
    NOT_DELIVERABLE = "not-deliverable"
    UNKNOWN = "unknown"

    @property
    def as_input(self) -> bool | None:
        """The command's `email_deliverable`: None (unknown) records nothing extra."""
        return {Deliverability.DELIVERABLE: True,
                Deliverability.NOT_DELIVERABLE: False}.get(self)


class DnsConfigError(ValueError):
    pass


def parse_nameservers(spec: str | None) -> tuple[tuple[str, int], ...]:
    """`"127.0.0.1:5353, 10.0.0.2, [::1]:53"` → ((address, port), ...); empty: the system's."""
    servers = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            address, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "53"
        elif item.count(":") == 1:
            address, port = item.split(":")
        else:  # IPv4 without a port, or a bare IPv6 address
            address, port = item, "53"
        if not address or not port.isdigit() or not 0 < int(port) < 65536:
            raise DnsConfigError(f"{item!r} is not a nameserver (address or address:port)")
        servers.append((address, int(port)))
    return tuple(servers)


class MxChecker:
    """Answers whether email domains take mail; one per process, shared by every workspace."""

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] = (),
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        positive_ttl_s: float = POSITIVE_TTL_S,
        negative_ttl_s: float = NEGATIVE_TTL_S,
        unknown_ttl_s: float = UNKNOWN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nameservers = tuple(nameservers)
        """Empty: the system's resolver configuration (resolv.conf)."""
        self.timeout_s = timeout_s
        self._ttl = {
            Deliverability.DELIVERABLE: positive_ttl_s,
            Deliverability.NOT_DELIVERABLE: negative_ttl_s,
            Deliverability.UNKNOWN: unknown_ttl_s,
        }
        self._clock = clock
        self._cache: dict[str, tuple[float, Deliverability]] = {}
        self._inflight: dict[str, asyncio.Task[Deliverability]] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None
        self.lookups = 0
        """DNS lookups made (cache misses), for tests and metrics."""

    async def deliverable(self, email: object) -> bool | None:
        """The command input for `email`: True, False, or None (no email, bad syntax, unknown)."""
        if not isinstance(email, str) or not email:
            return None
        try:
            domain = normalize_email(email).domain
        except InvalidEmailSyntax:
            return None  # the offline check records the syntax error
        return (await self.check(domain)).as_input

    async def check(self, domain: str) -> Deliverability:
        domain = domain.strip().rstrip(".").lower()
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached[0] > now:
            return cached[1]
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.ensure_future(self._lookup(domain))
            self._inflight[domain] = task
            task.add_done_callback(lambda _: self._inflight.pop(domain, None))
        # Shielded: one caller giving up (its request cancelled) must not cancel the others'.
        return await asyncio.shield(task)

    async def _lookup(self, domain: str) -> Deliverability:
        self.lookups += 1
        started = time.monotonic()
        try:
            result = await self._resolve(domain)
        # Timeout, SERVFAIL everywhere (NoNameservers), no resolv.conf, a malformed name...
        except (dns.exception.DNSException, OSError) as exc:
            log.warning("email_mx_check_unknown", domain=domain, error=type(exc).__name__,
                        detail=str(exc)[:200], elapsed_ms=round(1000 * (time.monotonic() - started)))
            result = Deliverability.UNKNOWN
        self._remember(domain, result)
        return result

    async def _resolve(self, domain: str) -> Deliverability:
        resolver = self._resolver or self._make_resolver()
        name = dns.name.from_text(domain)  # absolute: no search list
        # One budget for the whole check, however many queries it takes.
        deadline = time.monotonic() + self.timeout_s

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise dns.exception.Timeout(timeout=self.timeout_s)
            return remaining

        try:
            answer = await resolver.resolve(name, "MX", search=False, lifetime=left())
        except dns.resolver.NXDOMAIN:
            return Deliverability.NOT_DELIVERABLE
        except dns.resolver.NoAnswer:
            pass  # no MX: the implicit MX, the domain's own address, may still take mail
        else:
            exchanges = [r.exchange for r in answer]
            if exchanges and all(e == dns.name.root for e in exchanges):
                return Deliverability.NOT_DELIVERABLE  # null MX (RFC 7505)
            return Deliverability.DELIVERABLE
        for rdtype in ("A", "AAAA"):
            try:
                await resolver.resolve(name, rdtype, search=False, lifetime=left())
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            return Deliverability.DELIVERABLE
        return Deliverability.NOT_DELIVERABLE

    def _make_resolver(self) -> dns.asyncresolver.Resolver:
        # Built on first use, not in __init__: reading resolv.conf is I/O, and a process that
        # never checks (every workspace off) never needs it.
        resolver = dns.asyncresolver.Resolver(configure=not self.nameservers)
        if self.nameservers:
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in self.nameservers
            ]
        # A query's budget covers its retries across nameservers (see `left` in _resolve).
        resolver.timeout = resolver.lifetime = self.timeout_s
        resolver.cache = None  # ours, per domain, with our TTLs
        self._resolver = resolver
        return resolver

    def _remember(self, domain: str, result: Deliverability) -> None:
        if len(self._cache) >= MAX_CACHED:
            now = self._clock()
            self._cache = {d: e for d, e in self._cache.items() if e[0] > now}
            while len(self._cache) >= MAX_CACHED:  # all fresh: drop the oldest entries
                del self._cache[next(iter(self._cache))]
        self._cache[domain] = (self._clock() + self._ttl[result], result)
