"""The optional MX check of lead emails (ledger/email_dns.py), against a DNS stub on 127.0.0.1:
the checker's outcomes, its timeout and cache, and over HTTP the workspace setting that turns it
on for creates, batches, PATCHes and creates merged into an existing lead."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from litestar.testing import TestClient
from structlog.testing import capture_logs

from api.http.settings import HttpSettings
from api.http.standalone import self_opening_app, unopened_runtime
from api.settings import Settings, SettingsError, load_settings
from ledger.email_dns import Deliverability, DnsConfigError, MxChecker, parse_nameservers
from tests.http_support import *
from tests.http_support import Keys, auth, lead_body

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# name -> {rdtype: records}; a name absent here is NXDOMAIN, `slow.example` is never answered.
ZONE: dict[str, dict[str, list[str]]] = {
    "good.example.": {"MX": ["10 mx.good.example."]},
    "implicit.example.": {"A": ["192.0.2.10"]},  # no MX: the address is the implicit MX
    "nomail.example.": {"TXT": ['"no mail here"']},  # exists, neither MX nor address
    "nullmx.example.": {"MX": ["0 ."]},  # RFC 7505: accepts no mail
}
SILENT = {"slow.example."}
SERVFAIL = {"broken.example."}


class DnsStub:
    """A tiny authoritative-ish UDP server in a thread; counts the questions it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.queries: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def asked(self, domain: str) -> int:
        return sum(n for q, n in self.queries.items() if q.startswith(domain + ". "))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            question = query.question[0]
            name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
            self.queries[f"{name} {rdtype}"] += 1
            if name in SILENT:
                continue
            response = dns.message.make_response(query)
            if name in SERVFAIL:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif name not in ZONE:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif records := ZONE[name].get(rdtype):
                response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, *records))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def dns_stub() -> Iterator[DnsStub]:
    stub = DnsStub()
    yield stub
    stub.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checker(stub: DnsStub, **options: Any) -> MxChecker:
    return MxChecker([("127.0.0.1", stub.port)], **{"timeout_s": 0.5, **options})


# -- the checker ----------------------------------------------------------------------------

async def test_deliverable_domains(dns_stub: DnsStub) -> None:
    mx = checker(dns_stub)
    assert await mx.check("good.example") is Deliverability.DELIVERABLE
    assert await mx.check("implicit.example") is Deliverability.DELIVERABLE
    assert await mx.deliverable("Ada@GOOD.example") is True


async def test_domains_that_take_no_mail(dns_stub: DnsStub) -> None:
    mx = checker(dns_stub)
    assert await mx.check("gone.example") is Deliverability.NOT_DELIVERABLE  # NXDOMAIN
    assert await mx.check("nomail.example") is Deliverability.NOT_DELIVERABLE  # no MX, A, AAAA
    assert dns_stub.asked("nomail.example") == 3
    assert await mx.check("nullmx.example") is Deliverability.NOT_DELIVERABLE
    assert await mx.deliverable("x@gone.example") is False


async def test_a_timeout_is_unknown_within_the_budget_and_logged(dns_stub: DnsStub) -> None:
    mx = checker(dns_stub, timeout_s=0.4)
    started = time.monotonic()
    with capture_logs() as logs:
        assert await mx.check("slow.example") is Deliverability.UNKNOWN
    assert time.monotonic() - started < 0.4 + 0.3
    assert dns_stub.asked("slow.example") >= 1
    [line] = [x for x in logs if x["event"] == "email_mx_check_unknown"]
    assert line["domain"] == "slow.example" and line["log_level"] == "warning"
    assert "Timeout" in line["error"]
    assert await mx.deliverable("x@slow.example") is None


async def test_servfail_and_no_nameserver_are_unknown(dns_stub: DnsStub) -> None:
    assert await checker(dns_stub).check("broken.example") is Deliverability.UNKNOWN
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    nowhere = MxChecker([("127.0.0.1", port)], timeout_s=0.3)
    assert await nowhere.check("good.example") is Deliverability.UNKNOWN


async def test_no_email_or_bad_syntax_asks_nothing(dns_stub: DnsStub) -> None:
    mx = checker(dns_stub)
    assert await mx.deliverable(None) is None
    assert await mx.deliverable("not an email") is None
    assert mx.lookups == 0 and not dns_stub.queries


async def test_outcomes_are_cached_per_domain_for_their_ttl(dns_stub: DnsStub) -> None:
    clock = Clock()
    mx = checker(dns_stub, clock=clock, positive_ttl_s=100, negative_ttl_s=10, unknown_ttl_s=1,
                 timeout_s=0.2)
    for _ in range(3):
        assert await mx.check("good.example") is Deliverability.DELIVERABLE
        assert await mx.check("GONE.example.") is Deliverability.NOT_DELIVERABLE
        assert await mx.check("slow.example") is Deliverability.UNKNOWN
    assert mx.lookups == 3
    assert dns_stub.queries["good.example. MX"] == 1
    assert dns_stub.queries["gone.example. MX"] == 1
    clock.now += 5  # past the unknown TTL only
    assert await mx.check("slow.example") is Deliverability.UNKNOWN
    assert await mx.check("gone.example") is Deliverability.NOT_DELIVERABLE
    assert mx.lookups == 4
    clock.now += 10  # past the negative TTL
    assert await mx.check("gone.example") is Deliverability.NOT_DELIVERABLE
    assert await mx.check("good.example") is Deliverability.DELIVERABLE
    assert mx.lookups == 5 and dns_stub.queries["gone.example. MX"] == 2
    clock.now += 100  # past the positive TTL
    assert await mx.check("good.example") is Deliverability.DELIVERABLE
    assert dns_stub.queries["good.example. MX"] == 2


async def test_concurrent_checks_of_one_domain_share_one_lookup(dns_stub: DnsStub) -> None:
    mx = checker(dns_stub)
    results = await asyncio.gather(*(mx.deliverable(f"p{i}@good.example") for i in range(20)))
    assert results == [True] * 20
    assert mx.lookups == 1 and dns_stub.queries["good.example. MX"] == 1


def test_nameserver_setting() -> None:
    assert parse_nameservers(None) == parse_nameservers("") == ()
    assert parse_nameservers("127.0.0.1:5353, 10.0.0.2,[::1]:53,::1") == (
        ("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53), ("::1", 53))
    for bad in ("127.0.0.1:x", "127.0.0.1:0", ":53", "[::1]:99999"):
        with pytest.raises(DnsConfigError):
            parse_nameservers(bad)
    env = {"LEADLEDGER_DNS_NAMESERVERS": "127.0.0.1:5353", "LEADLEDGER_DNS_TIMEOUT_S": "0.5"}
    settings = load_settings(env)
    assert (settings.dns_nameservers, settings.dns_timeout_s) == ("127.0.0.1:5353", 0.5)
    with pytest.raises(SettingsError, match="DNS_NAMESERVERS"):
        load_settings({"LEADLEDGER_DNS_NAMESERVERS": "localhost:fifty"})


# -- over HTTP ------------------------------------------------------------------------------

DNS_TIMEOUT_S = 0.5


@pytest.fixture
def mx_client(infra: Any, dns_stub: DnsStub) -> Iterator[TestClient]:
    """The API (no background workers: a write answers with the ledger's state) with its MX
    checker pointed at the stub."""
    settings = Settings(
        database_url=infra.database_url, nats_url=infra.nats_url, master_key=infra.master_key,
        stream=infra.stream, subject_prefix=infra.subject_prefix,
        dns_nameservers=f"127.0.0.1:{dns_stub.port}", dns_timeout_s=DNS_TIMEOUT_S,
    )
    runtime = unopened_runtime(settings, infra.database_url, infra.nats_url, infra.master_key)
    app = self_opening_app(runtime, HttpSettings(consistency_wait_s=10.0))
    with TestClient(app, raise_server_exceptions=False, timeout=30) as client:
        yield client


def _create(tc: TestClient, token: str, body: dict, query: str = "") -> dict:
    response = tc.post(f"/v1/leads{query}", json=body, headers=auth(token))
    assert response.status_code in (200, 201), response.text
    return response.json()


def _mx_check(tc: TestClient, keys: Keys, on: bool) -> None:
    saved = tc.put("/v1/quality/settings", json={"email_mx_check": on}, headers=auth(keys.admin))
    assert saved.status_code == 200 and saved.json()["email_mx_check"] is on, saved.text


def test_mx_check_per_workspace_setting(mx_client: TestClient, keys: Keys,
                                        dns_stub: DnsStub) -> None:
    tc = mx_client
    # off (the default): no lookup at all
    off = _create(tc, keys.sales, lead_body(1, email="off@gone.example"))
    assert (off["email_status"], off["quarantined"]) == ("valid", False)
    assert not dns_stub.queries

    _mx_check(tc, keys, True)
    assert tc.get("/v1/quality/settings", headers=auth(keys.analyst)).json()["email_mx_check"]
    gone = _create(tc, keys.sales, lead_body(2, email="x@gone.example"))
    assert (gone["email_status"], gone["quarantined"]) == ("invalid", True)
    assert gone["email_reasons"] == ["no-mx"]
    assert "email-invalid" in gone["quality"]["problems"]
    good = _create(tc, keys.sales, lead_body(3, email="x@good.example"))
    assert (good["email_status"], good["email_reasons"], good["quarantined"]) == (
        "valid", [], False)
    started = time.monotonic()
    slow = _create(tc, keys.sales, lead_body(4, email="x@slow.example"))
    assert time.monotonic() - started < DNS_TIMEOUT_S + 1.0  # the timeout, plus the write
    assert (slow["email_status"], slow["quarantined"]) == ("valid", False)
    assert "no-mx" not in slow["email_reasons"] and dns_stub.asked("slow.example") >= 1
    # another workspace keeps the check off
    other = _create(tc, keys.other, lead_body(5, email="y@nomail.example"))
    assert other["quarantined"] is False and dns_stub.asked("nomail.example") == 0
    # an offline-invalid email is not looked up (quarantined already)
    typo = _create(tc, keys.sales, lead_body(6, email="x@gmial.com"))
    assert typo["email_reasons"] == ["typo-domain"] and dns_stub.asked("gmial.com") == 0

    # PATCH: a new email is looked up; fixing it releases the lead
    moved = tc.patch(f"/v1/leads/{good['id']}", json={"email": "x@nullmx.example"},
                     headers=auth(keys.sales))
    assert moved.status_code == 200, moved.text
    assert (moved.json()["email_reasons"], moved.json()["quarantined"]) == (["no-mx"], True)
    fixed = tc.patch(f"/v1/leads/{good['id']}", json={"email": "x@implicit.example"},
                     headers=auth(keys.sales)).json()
    assert (fixed["email_status"], fixed["quarantined"]) == ("valid", False)
    # a PATCH without an email asks nothing
    asked = sum(dns_stub.queries.values())
    titled = tc.patch(f"/v1/leads/{good['id']}", json={"title": "CTO"}, headers=auth(keys.sales))
    assert titled.status_code == 200 and sum(dns_stub.queries.values()) == asked

    # a create merged into an existing lead (same external id) brings its email, checked
    merged = _create(tc, keys.sales, lead_body(3, email="z@nomail.example"),
                     "?on_duplicate=merge&on_fuzzy=flag")
    assert merged["merged_into"] == good["id"] and merged["email"] == "z@nomail.example"
    assert (merged["email_reasons"], merged["quarantined"]) == (["no-mx"], True)

    # batches too
    batch = tc.post("/v1/leads/batch", json={"leads": [
        lead_body(7, email="b@gone.example"), lead_body(8, email="b@good.example")]},
        headers=auth(keys.sales))
    assert batch.status_code in (200, 207), batch.text
    items = [r["lead"] for r in batch.json()["results"]]
    assert [x["quarantined"] for x in items] == [True, False]

    # off again: no more lookups
    _mx_check(tc, keys, False)
    asked = sum(dns_stub.queries.values())
    later = _create(tc, keys.sales, lead_body(9, email="later@broken.example"))
    assert later["quarantined"] is False and sum(dns_stub.queries.values()) == asked
