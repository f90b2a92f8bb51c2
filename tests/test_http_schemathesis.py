"""Schemathesis against the OpenAPI document the server serves, over a real socket.

Every operation is called with generated requests (valid and invalid), authenticated as a key
that may write. No response may be a 5xx, have a status code, content type or headers the
document does not declare, or a body that violates its schema. Bounded: a fixed number of
examples per operation, no deadline per example.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from psycopg import sql
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.crypto import generate_master_key
from tests.conftest import Infra, Servers
from tests.http_support import auth, lead_body, make_keys

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def st_infra(servers: Servers, template_db: str) -> Iterator[Infra]:
    """One database for the whole run (the suite's per-test `infra` is function-scoped)."""
    suffix = uuid.uuid4().hex[:10]
    name = f"ll_schemathesis_{suffix}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    yield Infra(
        database_url=servers.database_url(name), nats_url=servers.nats_url,
        stream=f"LLTEST_{suffix}", subject_prefix=f"lltest{suffix}",
        master_key=generate_master_key(),
    )
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture(scope="module")
def st_server(st_infra: Infra) -> Iterator[tuple[str, str]]:
    """uvicorn in a process of its own, as deployed (api.http.standalone): whatever the
    generated requests do to it, they cannot take the test process down with them."""
    keys = make_keys(st_infra.database_url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "LEADLEDGER_DATABASE_URL": st_infra.database_url,
        "LEADLEDGER_NATS_URL": st_infra.nats_url,
        "LEADLEDGER_MASTER_KEY": st_infra.master_key,
        "LEADLEDGER_LOG_LEVEL": "warning",
        "LEADLEDGER_HTTP_CONSISTENCY_WAIT_S": "0.05",
        "LEADLEDGER_HTTP_CHECK_NATS": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.http.standalone:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=url) as http:
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"uvicorn did not start: {server.stderr.read().decode()}")
            time.sleep(0.1)
        for n in range(3):  # a few leads, so that ids and pages exist
            http.post("/v1/leads", json=lead_body(n), headers=auth(keys.admin))
    yield url, keys.admin
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    assert server.returncode in (0, -15), server.stderr.read().decode()[-2000:]


@pytest.fixture(scope="module")
def api_schema(st_server: tuple[str, str]) -> schemathesis.BaseSchema:
    url, _ = st_server
    return schemathesis.openapi.from_url(f"{url}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, st_server: tuple[str, str]
) -> None:
    url, token = st_server
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers
    case.call_and_validate(base_url=url, headers=auth(token), checks=CHECKS)
