"""The peer contender: the `eventsourcing` library (pip install '.[bench]') with its PostgreSQL
persistence, recording one event per new aggregate: a Lead created with the same fields.

It is configured as its documentation describes (PERSISTENCE_MODULE=eventsourcing.postgres and
the POSTGRES_* variables) with its defaults otherwise, plus its AES-GCM cipher so that it, like
the ledger, encrypts what it stores. Its API is synchronous, so each writer is an OS thread
calling `Application.save`; its connection pool has one connection per writer.
"""

from __future__ import annotations

import base64
import os
import warnings
from typing import Any

import msgspec
from psycopg.conninfo import conninfo_to_dict

from bench.measure import Sample, measure_threads

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

from bench.append_contenders import FIELDS, WORKSPACE


class Lead(Aggregate):
    @event("Created")
    def __init__(self, workspace: str, fields: dict[str, Any], stage: str,
                 owner: str | None, tags: list[str]) -> None:
        self.workspace = workspace
        self.fields = fields
        self.stage = stage
        self.owner = owner
        self.tags = tags


class Leads(Application[Any]):
    name = "Leads"


PEER_FIELDS = [msgspec.to_builtins(f) for f in FIELDS]


def peer_env(url: str, writers: int, cipher_key: str) -> dict[str, str]:
    params = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params["dbname"]),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(writers),
        "POSTGRES_MAX_OVERFLOW": "0",
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": cipher_key,
    }


class PeerEventsourcing:
    unit = "events/s"

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.cipher_key = base64.b64encode(os.urandom(32)).decode()
        self._counter = 0
        # Creates its tables once, as its first application does.
        Leads(env=peer_env(url, 1, self.cipher_key)).close()

    def measure(self, writers: int, warmup: float, duration: float) -> Sample:
        app = Leads(env=peer_env(self.url, writers, self.cipher_key))

        def op(_: int) -> int:
            self._counter += 1
            fields = PEER_FIELDS[self._counter % len(PEER_FIELDS)]
            app.save(Lead(WORKSPACE, fields, "new", "user_42", ["inbound", "enterprise"]))
            return 1

        try:
            return measure_threads(op, writers, warmup, duration)
        finally:
            app.close()
