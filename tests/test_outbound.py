"""The outbound guard: the processing plane calls public addresses only, unless the workspace
allow-lists a network; and /v1/outbound/allowlist sets that list (admin only)."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from litestar.testing import TestClient

from processors.outbound import (
    BlockedDestination,
    OutboundClient,
    OutboundFailed,
    OutboundGuard,
    blocked_reason,
    parse_networks,
)
from tests.http_support import *
from tests.http_support import Keys, auth

LOOPBACK = parse_networks(["127.0.0.0/8"])


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "0.0.0.0",
    "::1", "fe80::1", "fc00::5", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert blocked_reason(address, ()) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address, ()) is None


def test_an_allow_listed_network_passes_and_only_it() -> None:
    assert blocked_reason("127.0.0.1", LOOPBACK) is None
    assert blocked_reason("::ffff:127.0.0.2", LOOPBACK) is None
    assert blocked_reason("10.0.0.1", LOOPBACK) is not None


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks(["10.0.0.0/8", "nope"])


async def test_the_guard_reads_the_workspace_allowlist(pool) -> None:
    guard = OutboundGuard(pool)
    with pytest.raises(BlockedDestination, match="not a public address"):
        await guard.check("ws-a", "http://127.0.0.1:9/hook")
    with pytest.raises(BlockedDestination, match="not an http"):
        await guard.check("ws-a", "file:///etc/passwd")
    with pytest.raises(BlockedDestination, match="credentials"):
        await guard.check("ws-a", "https://user:pw@example.com/")
    await guard.set_allowlist("ws-a", ["127.0.0.0/8"])
    await OutboundGuard(pool).check("ws-a", "http://127.0.0.1:9/hook")  # read from the table
    with pytest.raises(BlockedDestination):
        await OutboundGuard(pool).check("ws-b", "http://localhost:9/hook")  # per workspace


def test_allowlist_over_http(tc: TestClient, keys: Keys) -> None:
    assert tc.get("/v1/outbound/allowlist", headers=auth(keys.admin)).json() == {"networks": []}
    saved = tc.put("/v1/outbound/allowlist", json={"networks": ["127.0.0.1", "10.20.0.0/16"]},
                   headers=auth(keys.admin))
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"networks": ["127.0.0.1/32", "10.20.0.0/16"]}
    bad = tc.put("/v1/outbound/allowlist", json={"networks": ["10.0.0.0/33"]},
                 headers=auth(keys.admin))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "networks"
    assert tc.put("/v1/outbound/allowlist", json={"networks": []},
                  headers=auth(keys.sales)).status_code == 403
    assert tc.get("/v1/outbound/allowlist", headers=auth(keys.other)).status_code == 403


async def test_the_client_never_follows_redirects_nor_keeps_cookies(httpserver: HTTPServer):
    httpserver.expect_request("/hook").respond_with_response(Response(
        "moved", status=302, headers={"location": httpserver.url_for("/private"),
                                      "set-cookie": "session=secret; Path=/"}))
    seen: list[str | None] = []

    def record_cookie(request: Request) -> Response:
        seen.append(request.headers.get("cookie"))
        return Response("ok", status=503, headers={"retry-after": "7"})

    httpserver.expect_request("/other").respond_with_handler(record_cookie)
    async with OutboundClient(timeout_s=5) as client:
        moved = await client.post(httpserver.url_for("/hook"), b"{}", {})
        other = await client.get(httpserver.url_for("/other"), {})
    assert moved.status == 302 and moved.body == b"moved"  # answered as is, not followed
    assert [r.path for r, _ in httpserver.log] == ["/hook", "/other"]
    assert seen == [None]  # the first answer's cookie was not sent on
    assert other.status == 503 and other.retry_after == "7"


async def test_no_answer_is_a_failure_that_names_no_url():
    async with OutboundClient(timeout_s=2) as client:
        with pytest.raises(OutboundFailed) as failed:
            await client.get("http://127.0.0.1:9/lead?email=ada@example.com", {})
    assert "ada@example.com" not in str(failed.value)
