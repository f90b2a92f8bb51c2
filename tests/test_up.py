"""End to end: `leadledger up` on a fresh data folder, as an operator runs it.

No LEADLEDGER_DATABASE_URL / LEADLEDGER_NATS_URL: `up` starts embedded PostgreSQL and NATS under
the data folder. A lead is created beside it with `leadledger lead create` (which joins the
running servers instead of starting its own), Ctrl-C stops everything with exit 0, and a second
`up` on the same folder still has the lead.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_cli import ROOT, cli_env, run_cli

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


class Up:
    """A `leadledger up` subprocess (in its own session, so that signals reach only it)."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"up-{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in finish()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "up", "--data-dir", str(data_dir), "--port", "0"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if "is serving http://" in line:
                return line.split("is serving ", 1)[1].split()[0]
        self.process.kill()
        self.process.wait()
        raise AssertionError(f"up did not start: {self.stderr()}")

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text()

    def stop(self, signum: signal.Signals) -> int:
        self.process.send_signal(signum)
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"up did not stop within {STOP_TIMEOUT_S}s: {self.stderr()}")
        finally:
            self._stderr.close()
        return code


def _health(url: str) -> dict:
    response = httpx.get(f"{url}/health", timeout=10)
    assert response.status_code == 200
    return response.json()


def _get_lead(url: str, auth: dict[str, str], lead_id: str, token: str | None) -> dict:
    headers = {**auth, **({"x-consistency-token": token} if token else {})}
    response = httpx.get(f"{url}/v1/leads/{lead_id}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _create_and_read_back(url: str, env: dict[str, str], workspace: str, email: str) -> None:
    """A key from the CLI, a lead over HTTP, read back once the read model has it: the whole
    pipeline (ledger, relay, NATS, projection) ran."""
    issued = run_cli("keys", "create", "--workspace", workspace, "--role", "admin",
                     "--name", "end to end", env=env)
    assert issued.returncode == 0, issued.stderr
    auth = {"authorization": f"Bearer {issued.stdout.strip()}"}
    posted = httpx.post(f"{url}/v1/leads", headers=auth, timeout=30, json={"email": email})
    assert posted.status_code == 201, posted.text
    read = _get_lead(url, auth, posted.json()["id"], posted.headers["x-consistency-token"])
    assert read["email"] == email


def _postgres_running(data_dir: Path) -> bool:
    return (data_dir / "postgres" / "postmaster.pid").exists()


def _nats_pids(data_dir: Path) -> list[int]:
    pids = []
    for path in (data_dir / "nats-ports").glob("*.ports"):
        pid = int(path.stem.rpartition("_")[2])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        pids.append(pid)
    return pids


def _wait_gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: pytest prunes old base temp folders of the same user, and another pytest
    # session on the machine could delete this one under a running server.
    base = Path(tempfile.mkdtemp(prefix="leadledger-up-"))
    path = base / "data"
    yield path
    # Whatever happened, leave no server running behind the test.
    for pid in _nats_pids(path):
        os.kill(pid, signal.SIGKILL)
    if _postgres_running(path):
        from api.embedded import EmbeddedPostgres

        EmbeddedPostgres(path).stop()
    shutil.rmtree(base, ignore_errors=True)


def test_up_serves_stops_cleanly_and_keeps_its_data(data_dir: Path) -> None:
    env = cli_env()  # no LEADLEDGER_* at all: embedded servers under the data folder

    first = Up(data_dir, env)
    assert _health(first.url)["status"] == "ok"
    assert (data_dir / "master.key").exists()
    assert _postgres_running(data_dir)
    nats_pids = _nats_pids(data_dir)
    assert len(nats_pids) == 1

    # CLI commands beside `up` join its PostgreSQL and leave it running when they exit.
    issued = run_cli("keys", "create", "--data-dir", str(data_dir), "--workspace", "acme",
                     "--role", "admin", "--name", "end to end", env=env)
    assert issued.returncode == 0, issued.stderr
    auth = {"authorization": f"Bearer {issued.stdout.strip()}"}
    created = run_cli(
        "lead", "create", "--data-dir", str(data_dir), "--workspace", "acme",
        "--email", "ada@example.com", "--first-name", "Ada", "--reason", "end to end", env=env,
    )
    assert created.returncode == 0, created.stderr
    lead = json.loads(created.stdout)
    assert _postgres_running(data_dir)
    assert _nats_pids(data_dir) == nats_pids  # not a second NATS

    # The whole pipeline: ledger -> relay -> NATS -> projection -> read model -> HTTP. The
    # consistency token makes the read wait until the read model has the write.
    read = _get_lead(first.url, auth, lead["lead_id"], lead["position"])
    # Processors (built-in enrichment) may have added to the lead since.
    assert read["email"] == "ada@example.com" and read["version"] >= lead["version"]
    posted = httpx.post(f"{first.url}/v1/leads", headers=auth, timeout=30,
                        json={"email": "grace@example.com", "first_name": "Grace"})
    assert posted.status_code == 201, posted.text
    http_lead = posted.json()
    read = _get_lead(first.url, auth, http_lead["id"], posted.headers["x-consistency-token"])
    assert read["email"] == "grace@example.com"
    status = run_cli("status", "--json", "--data-dir", str(data_dir), env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["head"] >= 2

    assert first.stop(signal.SIGINT) == 0, first.stderr()
    assert "Traceback" not in first.stderr()
    assert not _postgres_running(data_dir), "PostgreSQL still running after up stopped"
    assert _wait_gone(nats_pids), "NATS still running after up stopped"

    second = Up(data_dir, env)
    try:
        assert _health(second.url)["status"] == "ok"
        shown = run_cli(
            "lead", "show", "--data-dir", str(data_dir), "--workspace", "acme", lead["lead_id"],
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        again = json.loads(shown.stdout)
        assert again["fields"]["email"] == "ada@example.com"
        assert again["version"] >= lead["version"]  # enrichment may have added to it
        read = _get_lead(second.url, auth, http_lead["id"], None)
        assert read["email"] == "grace@example.com"
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0, second.stderr()
    assert not _postgres_running(data_dir)


def test_up_refuses_a_busy_port_in_one_line(data_dir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "api.cli", "up", "--data-dir", str(data_dir), "--port",
             str(port)],
            env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=START_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (
        f"leadledger: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not data_dir.exists()  # refused before any server started


def test_up_on_external_servers_starts_nothing_embedded(infra, data_dir: Path) -> None:
    """With LEADLEDGER_DATABASE_URL / LEADLEDGER_NATS_URL (here: the test's servers) `up` uses
    them: the data folder is never created, and the pipeline runs end to end."""
    env = cli_env(infra)
    up = Up(data_dir, env)
    try:
        _create_and_read_back(up.url, env, "acme", "linus@example.com")
    finally:
        code = up.stop(signal.SIGTERM)
    assert code == 0, up.stderr()
    assert "Traceback" not in up.stderr()
    assert not data_dir.exists()


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _worker_processes(parent: int) -> list[int]:
    """`python -m api.workers all` processes whose parent is `parent` (or, once it died, none
    should be left: the caller asks by the pids it saw)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"api.workers" in cmdline and b"all" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_up_runs_its_workers_apart_and_they_end_with_it(infra, data_dir: Path) -> None:
    """LEADLEDGER_WORKER_PROCESSES=2: two worker processes share the workers (the pipeline
    runs end to end through them); SIGTERM stops them with `up`, and a kill -9 of `up` takes
    them down too (no orphan keeps consuming)."""
    env = {**cli_env(infra), "LEADLEDGER_WORKER_PROCESSES": "2"}
    up = Up(data_dir, env)
    try:
        deadline = time.monotonic() + 30
        while len(children := _worker_processes(up.process.pid)) < 2:
            assert time.monotonic() < deadline, f"no worker processes: {up.stderr()}"
            time.sleep(0.2)
        # Ingestion first: the workers run at a lower CPU priority than the HTTP server.
        assert {_niceness(pid) for pid in children} == {_niceness(up.process.pid) + 10}
        _create_and_read_back(up.url, env, "apart", "barbara@example.com")
    finally:
        code = up.stop(signal.SIGTERM)
    assert code == 0, up.stderr()
    assert "Traceback" not in up.stderr()
    assert _wait_gone(children), "worker processes outlived up"

    again = Up(data_dir, env)
    deadline = time.monotonic() + 30
    while len(children := _worker_processes(again.process.pid)) < 2:
        assert time.monotonic() < deadline, f"no worker processes: {again.stderr()}"
        time.sleep(0.2)
    os.kill(again.process.pid, signal.SIGKILL)
    again.process.wait()
    again.stop(signal.SIGKILL)  # closes its log; the process is gone already
    assert _wait_gone(children), "worker processes outlived a kill -9 of up"


def test_up_answers_keep_alive_clients_without_nagle_stalls() -> None:
    """The HTTP socket `up` binds hands TCP_NODELAY to every connection it accepts: without it,
    a keep-alive client waited about 40 ms (Nagle and the delayed ACK) on every response."""
    import socket

    from api.server import listen

    server = listen("127.0.0.1", 0)
    with server, socket.create_connection(server.getsockname()[:2]):
        accepted, _ = server.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_up_parses_http_with_httptools() -> None:
    """uvicorn falls back to h11, its pure-Python parser, when httptools is missing: a create
    then costs the HTTP process about a fifth more CPU (api/server.py, http_config)."""
    from api.server import http_config

    config = http_config(None)
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
