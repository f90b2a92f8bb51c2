"""Fixtures of the HTTP tests, imported by tests/test_http_*.py (`from tests.http_support
import *`).

Litestar's test client runs the app in an event loop of its own (a blocking portal in another
thread), and a real server runs it in its thread's loop too; so the app under test owns its
runtime: its pool opens in the app's startup, in whatever loop serves it, and the relay and
projection workers run beside it there. Tests talk to it only through HTTP: Litestar's
TestClient, or httpx over a real socket to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Collection, Iterator
from typing import Any

import psycopg
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import TestClient

from api.http.settings import HttpSettings
from api.http.standalone import self_opening_app, unopened_runtime
from api.keys import KeyStore
from api.runtime import Runtime
from api.settings import Settings

__all__ = [
    "Keys",
    "api_app",
    "auth",
    "http_settings",
    "keys",
    "lead_body",
    "make_app",
    "make_keys",
    "server",
    "start_server",
    "tc",
]


def lead_body(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A realistic lead of about 15 fields, unique by `n`."""
    body: dict[str, Any] = {
        "first_name": "Ada",
        "last_name": f"Lovelace{n}",
        "email": f"ada{n}@analytical{n}.example",
        "phone": f"+4420718{n % 100000:05d}",
        "company": f"Analytical Engines {n}",
        "title": "Head of Engineering",
        "website": f"https://analytical{n}.example",
        "country": "GB",
        "city": "London",
        "address": "12 St James's Square",
        "ip_address": "203.0.113.7",
        "source": "web_form",
        "external_id": f"crm-{n}",
        "stage": "lead",
        "owner": "owner@seller.example",
        "tags": ["webinar-2025", "enterprise"],
    }
    body.update(overrides)
    return body


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **headers}


class Keys:
    """Tokens (attributes) and key ids (`ids`) of a few keys in two workspaces."""

    def __init__(self, tokens: dict[str, str], ids: dict[str, str]) -> None:
        self.tokens = tokens
        self.ids = ids

    def __getattr__(self, name: str) -> str:
        try:
            return self.tokens[name]
        except KeyError:
            raise AttributeError(name) from None


KEY_SPECS = (
    ("admin", "acme", "admin", 1_000_000), ("sales", "acme", "sales", 1_000_000),
    ("analyst", "acme", "analyst", 1_000_000), ("other", "globex", "sales", 1_000_000),
    ("limited", "acme", "ops", 3),
)


def make_keys(database_url: str) -> Keys:
    async def create() -> Keys:
        tokens, ids = {}, {}
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            store = KeyStore(conn)
            for name, workspace, role, limit in KEY_SPECS:
                issued = await store.create(workspace, role, name, rate_limit=limit)
                tokens[name], ids[name] = issued.token, issued.key.key_id
        return Keys(tokens, ids)

    result: list[Keys] = []
    # Its own thread: the test may be running an event loop in this one.
    thread = threading.Thread(target=lambda: result.append(asyncio.run(create())))
    thread.start()
    thread.join()
    return result[0]


def make_app(
    infra: Any, http_settings: HttpSettings, *, workers: bool = True,
    reactors: Collection[str] | None = None,
) -> Litestar:
    """The app on the test's database, opening its pool (and starting the relay, the
    projections and the `reactors`, all by default) when the loop that serves it starts it."""
    settings = Settings(
        database_url=infra.database_url, nats_url=infra.nats_url, master_key=infra.master_key,
        stream=infra.stream, subject_prefix=infra.subject_prefix, pool_max_size=24,
    )
    runtime = unopened_runtime(settings, infra.database_url, infra.nats_url, infra.master_key)
    if not workers:
        return self_opening_app(runtime, http_settings)
    background: dict[str, Any] = {}

    async def start(runtime: Runtime) -> None:
        from api.workers import run_workers

        background["stop"] = asyncio.Event()
        background["task"] = asyncio.create_task(
            run_workers(runtime, background["stop"], reactors=reactors)
        )

    async def stop(runtime: Runtime) -> None:
        background["stop"].set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(background["task"], 20)

    return self_opening_app(runtime, http_settings, after_open=start, before_close=stop)


def without_enrichment() -> list[str]:
    """Every reactor but built-in enrichment, which appends to every new lead: for tests that
    pin a lead's exact versions, history or change feed."""
    from api.reactors import REACTORS

    return [name for name in REACTORS if name != "enrich"]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test process owns its signals
        yield


def start_server(app: Any) -> tuple[str, _Server, threading.Thread]:
    """uvicorn on a free port in a thread of its own (and so its own event loop)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = _Server(config)
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def http_settings() -> HttpSettings:
    return HttpSettings(consistency_wait_s=10.0, check_nats=True)


@pytest.fixture
def api_app(infra: Any, http_settings: HttpSettings) -> Litestar:
    return make_app(infra, http_settings)


@pytest.fixture
def keys(infra: Any) -> Keys:
    return make_keys(infra.database_url)


@pytest.fixture
def tc(api_app: Litestar) -> Iterator[TestClient]:
    """Litestar's test client on the app (its lifespan runs: pool, relay, projections)."""
    with TestClient(api_app, raise_server_exceptions=False, timeout=30) as client:
        yield client


@pytest.fixture
def server(api_app: Litestar) -> Iterator[str]:
    """The app served by uvicorn over a real socket; yields its base URL."""
    url, uv, thread = start_server(api_app)
    yield url
    uv.should_exit = True
    thread.join(30)
