"""Enrichment providers: the built-in ones (pure: email domain, phone; firmographics against a
real PostgreSQL table loaded from CSV), the HTTP adapter against a real HTTP server on loopback
(pytest-httpserver: mapping, auth header, timeout, retries, circuit breaker, the outbound
guard), its configs with the secret encrypted at rest, and the pieces behind it (breaker,
token bucket, mapping validation)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import msgspec
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ledger.lead import LeadState
from ledger.vocabulary import BUILTIN
from processors.enrichment import enrichment_command, trigger_of, vocabulary_fills
from processors.outbound import OutboundGuard
from processors.providers import LeadSnapshot, ProviderFailed, ProviderSkipped, snapshot_of
from processors.providers.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from processors.providers.email_domain import email_finding, guess_name
from processors.providers.firmographics import Firmographics, FirmographicsProvider
from processors.providers.firmographics_csv import InvalidCsv, RejectedRow, read_csv
from processors.providers.http import HttpProvider
from processors.providers.http_configs import EnrichmentConfigs
from processors.providers.http_mapping import HttpProviderConfig, MappingRule, problems
from processors.providers.phone import phone_finding
from processors.providers.rate_limit import TokenBucket
from schema.events import LeadCreated, LeadFields, LeadFieldsChanged, LeadTagged

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def clock() -> datetime:
    return AT


def values(finding) -> dict:
    return {name: v.value for name, v in finding.values.items()}


# -- email domain ---------------------------------------------------------------------------------


def test_a_company_email_gives_its_domain_and_a_personal_name_guess() -> None:
    found = email_finding(LeadSnapshot(lead_id="L1", email="ada.lovelace@Analytical.example"),
                          clock)
    assert values(found) == {
        "email_domain": "analytical.example", "email_free_mail": False,
        "email_disposable": False, "email_role_account": False,
        "company_domain": "analytical.example",
    }
    assert {k: (v.value, v.confidence, v.provider, v.fetched_at)
            for k, v in found.personal_values.items()} == {
        "first_name_guess": ("Ada", 0.6, "email-domain", AT),
        "last_name_guess": ("Lovelace", 0.6, "email-domain", AT),
    }
    assert found.fills == LeadFields(first_name="Ada", last_name="Lovelace")


def test_free_mail_disposable_and_role_accounts() -> None:
    free = email_finding(LeadSnapshot(lead_id="L", email="grace_hopper@gmail.com"), clock)
    assert values(free)["email_free_mail"] is True and "company_domain" not in values(free)
    throwaway = email_finding(LeadSnapshot(lead_id="L", email="x@mailinator.com"), clock)
    assert values(throwaway)["email_disposable"] is True
    assert "company_domain" not in values(throwaway)
    role = email_finding(LeadSnapshot(lead_id="L", email="sales@acme.example"), clock)
    assert values(role)["email_role_account"] is True and not role.personal_values
    assert email_finding(LeadSnapshot(lead_id="L", email="not an email"), clock).empty
    assert email_finding(LeadSnapshot(lead_id="L"), clock).empty


@pytest.mark.parametrize(("local", "guess"), [
    ("ada.lovelace", ("Ada", "Lovelace")), ("ADA_LOVELACE+news", ("Ada", "Lovelace")),
    ("jean-luc", ("Jean", "Luc")), ("ada", None), ("a.lovelace", None), ("ada.l0velace", None),
    ("one.two.three", None),
])
def test_name_guesses(local: str, guess: tuple[str, str] | None) -> None:
    assert guess_name(local) == guess


# -- phone ------------------------------------------------------------------------------------


def test_phone_metadata_region_line_type_location_carrier() -> None:
    mobile = phone_finding(LeadSnapshot(lead_id="L", phone="+447911123456"), clock)
    assert values(mobile) == {
        "phone_valid": True, "phone_region": "GG", "phone_location": "Guernsey",
        "phone_line_type": "mobile", "phone_carrier": "JT",
    }
    assert mobile.values["phone_carrier"].confidence < 1
    assert mobile.fills == LeadFields(country="GG")
    london = phone_finding(LeadSnapshot(lead_id="L", phone="020 7946 0018", country="GB"), clock)
    assert values(london)["phone_location"] == "London"
    assert values(london)["phone_line_type"] == "fixed_line"
    assert values(phone_finding(LeadSnapshot(lead_id="L", phone="+4420718000001"), clock)) == {
        "phone_valid": False}
    assert phone_finding(LeadSnapshot(lead_id="L", phone="call me"), clock).empty


# -- the reactor's pure parts -------------------------------------------------------------------


def test_triggers_and_vocabulary_fills() -> None:
    assert trigger_of(LeadCreated(lead_id="L", fields=LeadFields(), stage="lead")) == "created"
    assert trigger_of(LeadFieldsChanged(changes=LeadFields(email="a@b.example"))) == (
        "email-changed")
    assert trigger_of(LeadFieldsChanged(changes=LeadFields(website=None))) == "website-changed"
    assert trigger_of(LeadFieldsChanged(changes=LeadFields(title="CTO"))) is None
    assert trigger_of(LeadTagged(tag="x")) is None
    fills = vocabulary_fills(
        LeadFields(company="Acme", industry="SaaS", country="Germany", seniority="wizard"),
        BUILTIN)
    assert fills == LeadFields(company="Acme", industry="software", country="DE")


def test_guesses_never_overwrite_even_when_the_workspace_allows_it() -> None:
    guess = email_finding(LeadSnapshot(lead_id="L", email="ada.lovelace@acme.example"), clock)
    assert not enrichment_command("email-domain", guess, overwrite=True, trigger="created",
                                  vocabularies=BUILTIN).overwrite
    assert enrichment_command("firmographics", guess, overwrite=True, trigger="created",
                              vocabularies=BUILTIN).overwrite


def test_snapshot_of_a_lead() -> None:
    state = LeadState(lead_id="L", fields=LeadFields(
        email="Ada@Mail.Analytical.example", website="https://www.acme.example/about"))
    snap = snapshot_of(state)
    assert (snap.email_domain, snap.website_domain, snap.domain) == (
        "mail.analytical.example", "acme.example", "acme.example")


# -- firmographics --------------------------------------------------------------------------------

CSV = """domain,company_name,industry,employee_range,revenue_range,country,technologies
acme.example,Acme Corp,SaaS,51-200,$10M-$50M,Germany,Salesforce; HubSpot|Snowflake
https://www.globex.example/,Globex,Manufacturing,1001-5000,,US,
,Nameless,,,,,
not a domain,Bad,,,,,
initech.example,Initech,,,,Atlantis,
acme.example,Acme Again,,,,,
"quoted.example","Quoted, Inc.",,,,,
too.example,few
"""


def test_reading_a_csv_rejects_bad_rows_with_their_line_numbers() -> None:
    rows = list(read_csv(CSV.splitlines()))
    rejected = [r for _, r in rows if isinstance(r, RejectedRow)]
    assert [(r.line, r.reason) for r in rejected] == [
        (4, "domain is empty"),
        (5, "domain 'not a domain' is not a domain name"),
        (6, "country 'Atlantis' is not a known country"),
        (7, "domain acme.example is already on line 2"),
        (9, "2 values for 7 columns"),
    ]
    good = [r for _, r in rows if not isinstance(r, RejectedRow)]
    assert [r.domain for r in good] == ["acme.example", "globex.example", "quoted.example"]
    assert good[0].technologies == ("Salesforce", "HubSpot", "Snowflake")
    assert good[0].country == "DE" and good[2].company_name == "Quoted, Inc."
    with pytest.raises(InvalidCsv, match="unknown column"):
        list(read_csv(["domain,colour", "a.example,red"]))
    with pytest.raises(InvalidCsv, match="no 'domain'"):
        list(read_csv(["company_name", "Acme"]))
    with pytest.raises(InvalidCsv, match="empty"):
        list(read_csv([]))


async def test_loading_upserts_by_domain_and_the_provider_finds_rows(pool) -> None:
    table = Firmographics(pool)
    first = await table.load("ws-a", CSV.splitlines(), "test")
    assert (first.inserted, first.updated, len(first.rejected)) == (3, 0, 5)
    again = await table.load("ws-a", [
        "domain,company_name,employee_range", "acme.example,Acme GmbH,201-500",
        "new.example,New,1-10"], "test")
    assert (again.inserted, again.updated, again.rejected) == (1, 1, [])
    assert again.loaded_at > first.loaded_at
    acme = await table.find("ws-a", "acme.example")
    assert acme is not None and acme.company_name == "Acme GmbH" and acme.industry is None
    assert acme.loaded_at == again.loaded_at
    assert await table.find("ws-b", "acme.example") is None  # per workspace

    provider = FirmographicsProvider(table)
    by_email = await provider.enrich("ws-a", LeadSnapshot(
        lead_id="L", email="x@mail.globex.example", email_domain="mail.globex.example"))
    assert values(by_email)["company_name"] == "Globex"
    assert by_email.values["company_name"].confidence == 0.9  # a parent domain's row
    assert by_email.values["company_name"].fetched_at == first.loaded_at
    assert by_email.fills == LeadFields(company="Globex", industry="Manufacturing")
    by_site = await provider.enrich("ws-a", LeadSnapshot(lead_id="L",
                                                         website_domain="acme.example"))
    assert values(by_site) == {"company_name": "Acme GmbH", "employee_range": "201-500",
                               "firmographics_domain": "acme.example"}
    assert (await provider.enrich("ws-a", LeadSnapshot(lead_id="L", email_domain="gmail.com"))
            ).empty


# -- the HTTP adapter ---------------------------------------------------------------------------


def http_config(url: str, **overrides) -> HttpProviderConfig:
    base = {
        "url": url, "auth_header": "X-Api-Key",
        "mapping": [
            MappingRule(path="$.company.name", field="company"),
            MappingRule(path="$.company.name", value="company_name"),
            MappingRule(path="$.company.metrics.employees", value="employees", confidence=0.8),
            MappingRule(path="$.company.tech", value="technologies"),
            MappingRule(path="$.person.title", field="title"),
            MappingRule(path="$.person.linkedin", value="linkedin", personal=True),
            MappingRule(path="$.missing.path", value="never"),
        ],
        "timeout_s": 1.0, "retries": 3, "failure_threshold": 2, "cooldown_s": 0.5,
    }
    return HttpProviderConfig(**(base | overrides))


SNAPSHOT = LeadSnapshot(lead_id="L1", email="ada@acme.example", email_domain="acme.example")
ANSWER = {"company": {"name": "Acme", "metrics": {"employees": 120}, "tech": ["k8s", "pg"]},
          "person": {"title": "CTO", "linkedin": "https://linkedin.example/ada"}}


@pytest.fixture
async def guard(pool) -> OutboundGuard:
    guard = OutboundGuard(pool)
    await guard.set_allowlist("ws-a", LOOPBACK)
    return guard


def failed_requests(httpserver: HTTPServer) -> int:
    # The server outlives tests: a slow answer of an earlier test may land in its log late.
    return sum(1 for _, response in httpserver.log if response.status_code == 500)


def provider_for(httpserver: HTTPServer, guard: OutboundGuard, **overrides) -> HttpProvider:
    url = httpserver.url_for("/v1/person") + "?email={email}&domain={domain}"
    return HttpProvider("clearbit", http_config(url, **overrides), "s3cret", guard, clock=clock,
                        retry_initial_s=0.01)


async def test_http_mapping_with_the_auth_header_sent(httpserver: HTTPServer, guard) -> None:
    httpserver.expect_request(
        "/v1/person", query_string={"email": "ada@acme.example", "domain": "acme.example"},
        headers={"X-Api-Key": "s3cret"},
    ).respond_with_json(ANSWER)
    found = await provider_for(httpserver, guard).enrich("ws-a", SNAPSHOT)
    assert values(found) == {"company_name": "Acme", "employees": 120,
                             "technologies": ["k8s", "pg"]}
    assert found.values["employees"].confidence == 0.8
    assert found.values["company_name"].provider == "clearbit"
    assert {k: v.value for k, v in found.personal_values.items()} == {
        "linkedin": "https://linkedin.example/ada"}
    assert found.fills == LeadFields(company="Acme", title="CTO")
    # A lead without the template's values is not looked up at all.
    assert (await provider_for(httpserver, guard).enrich("ws-a", LeadSnapshot(lead_id="L2"))
            ).empty
    assert len(httpserver.log) == 1


async def test_404_is_nothing_known_and_4xx_fails_without_retries(httpserver, guard) -> None:
    httpserver.expect_oneshot_request("/v1/person").respond_with_data("", status=404)
    provider = provider_for(httpserver, guard)
    assert (await provider.enrich("ws-a", SNAPSHOT)).empty
    httpserver.expect_request("/v1/person").respond_with_data("no", status=401)
    with pytest.raises(ProviderFailed, match="answered 401"):
        await provider.enrich("ws-a", SNAPSHOT)
    assert len(httpserver.log) == 2


async def test_5xx_is_retried_until_it_succeeds(httpserver: HTTPServer, guard) -> None:
    calls = []

    def flaky(request: Request) -> Response:
        calls.append(request)
        if len(calls) < 3:
            return Response("busy", status=503)
        return Response(msgspec.json.encode(ANSWER), content_type="application/json")

    httpserver.expect_request("/v1/person").respond_with_handler(flaky)
    found = await provider_for(httpserver, guard).enrich("ws-a", SNAPSHOT)
    assert values(found)["company_name"] == "Acme" and len(calls) == 3


async def test_a_timeout_is_retried_then_fails(httpserver: HTTPServer, guard) -> None:
    arrived: list[float] = []

    def slow(request: Request) -> Response:
        arrived.append(time.monotonic())
        time.sleep(0.5)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/v1/person").respond_with_handler(slow)
    provider = provider_for(httpserver, guard, timeout_s=0.2, retries=2)
    started = time.monotonic()
    with pytest.raises(ProviderFailed, match="timed out"):
        await provider.enrich("ws-a", SNAPSHOT)
    # Two attempts of 0.2 s each timed out (the single-threaded test server was still busy
    # with the first when the second came, so only the first reached the handler).
    assert 0.4 <= time.monotonic() - started < 3
    assert arrived
    # The server handles the request it queued after the client gave up: let it, so that it
    # does not land in the next test's log (answered by that test's handler).
    deadline = time.monotonic() + 5
    while len(arrived) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)


async def test_the_breaker_opens_after_failures_and_closes_after_the_cooldown(
    httpserver: HTTPServer, guard
) -> None:
    httpserver.expect_request("/v1/person").respond_with_data("down", status=500)
    provider = provider_for(httpserver, guard, retries=1, failure_threshold=2, cooldown_s=30)
    now = [1000.0]
    provider.breaker.clock = lambda: now[0]  # the cool-down passes when the test says so
    for _ in range(2):
        with pytest.raises(ProviderFailed, match="answered 500"):
            await provider.enrich("ws-a", SNAPSHOT)
    assert provider.breaker.state == OPEN
    with pytest.raises(ProviderSkipped, match="circuit breaker open"):
        await provider.enrich("ws-a", SNAPSHOT)
    assert failed_requests(httpserver) == 2  # skipped: nothing sent
    httpserver.clear()
    httpserver.expect_request("/v1/person").respond_with_json(ANSWER)
    now[0] += 29.0
    assert provider.breaker.state == OPEN
    now[0] += 1.0
    assert provider.breaker.state == HALF_OPEN
    assert values(await provider.enrich("ws-a", SNAPSHOT))["company_name"] == "Acme"
    assert provider.breaker.state == CLOSED


async def test_a_private_address_is_blocked_without_an_allowlist(httpserver, pool) -> None:
    httpserver.expect_request("/v1/person").respond_with_json(ANSWER)
    provider = provider_for(httpserver, OutboundGuard(pool))
    with pytest.raises(ProviderFailed, match="not a public address"):
        await provider.enrich("ws-b", SNAPSHOT)
    assert len(httpserver.log) == 0
    assert provider.breaker.state == CLOSED  # a config problem is not the provider's health


async def test_configs_keep_the_secret_encrypted_at_rest(pool, keyring) -> None:
    configs = EnrichmentConfigs(pool, keyring)
    config = http_config("https://api.example/p?email={email}")
    await configs.save("ws-a", "clearbit", config, enabled=True, secret="s3cret-value",
                       keep_secret=False, actor="k1")
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT config::text, secret FROM enrichment_providers")
        text, sealed = await cur.fetchone()
    assert b"s3cret-value" not in bytes(sealed) and "s3cret" not in text
    listed = await configs.list("ws-a")
    assert [(p.name, p.has_secret, p.config) for p in listed] == [("clearbit", True, config)]
    assert "s3cret" not in msgspec.json.encode(listed).decode()
    # A change without the secret keeps it; the processor gets it decrypted.
    await configs.save("ws-a", "clearbit", msgspec.structs.replace(config, timeout_s=2.0),
                       enabled=True, secret=None, keep_secret=True, actor="k1")
    [enabled] = await configs.enabled("ws-a")
    assert enabled.secret == "s3cret-value" and enabled.provider.config.timeout_s == 2.0
    assert await configs.enabled("ws-b") == []
    assert await configs.delete("ws-a", "clearbit") and await configs.list("ws-a") == []
    assert not await configs.overwrite("ws-a")
    await configs.set_overwrite("ws-a", True, "k1")
    assert await configs.overwrite("ws-a") and not await configs.overwrite("ws-b")


# -- breaker, bucket, validation ------------------------------------------------------------


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown_s=10, clock=lambda: now[0])
    for _ in range(2):
        breaker.failed()
    assert breaker.allow() and breaker.state == CLOSED
    breaker.succeeded()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        breaker.failed()
    assert breaker.state == OPEN and not breaker.allow() and breaker.retry_in_s() == 10
    now[0] = 10.0
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failed()
    assert breaker.state == OPEN  # the trial failed: another cool-down
    now[0] = 20.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == CLOSED and breaker.allow()


def test_token_bucket_paces_after_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2, burst=2, clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.try_take() == 0.0


def test_config_problems_name_their_fields() -> None:
    bad = HttpProviderConfig(
        url="ftp://x/{secret}", auth_header="Bad Header", timeout_s=0, retries=0,
        mapping=[MappingRule(path="company..name", value="Company Name"),
                 MappingRule(path="$.a", value="a", field="company"),
                 MappingRule(path="$.e", field="email")],
    )
    fields = [field for field, _ in problems(bad)]
    assert fields == ["url", "url", "auth_header", "timeout_s", "retries", "mapping[0].path",
                      "mapping[0].value", "mapping[1]", "mapping[2].field"]
    assert problems(http_config("https://api.example/?e={email}")) == []


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_loads_a_csv_and_reports_rejected_lines(infra, tmp_path) -> None:
    from tests.test_cli import cli_env, run_cli

    path = tmp_path / "firms.csv"
    rows = [f"firm{n}.example,Firm {n},SaaS,1-10,,GB,Python" for n in range(2_500)]
    path.write_text(CSV.splitlines()[0] + "\n" + "\n".join(rows) + "\nnot a domain,x,,,,,\n")
    env = cli_env(infra)
    done = run_cli("firmographics", "load", str(path), "--workspace", "acme", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "2500 inserted, 0 updated, 1 rejected",
        "  line 2502: domain 'not a domain' is not a domain name",
    ]
    again = run_cli("firmographics", "load", str(path), "-w", "acme", "--json", env=env)
    report = msgspec.json.decode(again.stdout)
    assert (report["inserted"], report["updated"], len(report["rejected"])) == (0, 2500, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("domain,colour\n")
    failed = run_cli("firmographics", "load", str(bad), "-w", "acme", env=env)
    assert failed.returncode == 1 and "unknown column" in failed.stderr
