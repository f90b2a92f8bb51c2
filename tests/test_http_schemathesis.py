"""Schemathesis against the OpenAPI document the server serves, over a real socket.

Every operation is called with generated requests (valid and invalid), authenticated as a key
that may write. No response may be a 5xx, have a status code, content type or headers the
document does not declare, or a body that violates its schema. Bounded: a fixed number of
examples per operation, no deadline per example.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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

from api.http.settings import HttpSettings
from ledger.crypto import generate_master_key
from tests.conftest import Infra, Servers
from tests.http_support import auth, lead_body, make_app, make_keys, start_server

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
    keys = make_keys(st_infra.database_url)
    app = make_app(st_infra, HttpSettings(consistency_wait_s=0.05, check_nats=False))
    url, server, thread = start_server(app)
    import httpx

    with httpx.Client(base_url=url) as http:  # a few leads so ids and pages exist
        for n in range(3):
            http.post("/v1/leads", json=lead_body(n), headers=auth(keys.admin))
    yield url, keys.admin
    server.should_exit = True
    thread.join(30)


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
