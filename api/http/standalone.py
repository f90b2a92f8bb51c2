"""The HTTP API under an external ASGI server with several worker processes.

    uvicorn --factory api.http.standalone:app_from_env --workers 2
    granian --interface asgi --factory api.http.standalone:app_from_env --workers 2

Each worker process builds its own app; its runtime's pool opens in the app's startup, in the
loop that serves it, and closes at shutdown. Needs external servers (`LEADLEDGER_DATABASE_URL`,
`LEADLEDGER_MASTER_KEY`; `LEADLEDGER_NATS_URL` for /ready). Migrations are `leadledger
migrate`'s job, and the relay and projections run elsewhere (`leadledger up`, or a workers
process): a web worker only serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar import Litestar

from api.app import create_app
from api.heap import freeze_startup_heap
from api.http.settings import HttpSettings, load_http_settings
from api.logs import configure_logging
from api.runtime import Runtime, build_runtime
from api.settings import Settings, load_settings
from ledger.database import new_pool

Hook = Callable[[Runtime], Awaitable[None]]


def unopened_runtime(settings: Settings, database_url: str, nats_url: str,
                     master_key: str) -> Runtime:
    """The runtime `open_runtime` builds, with its pool not yet opened (no loop needed)."""
    pool = new_pool(database_url, max_size=settings.pool_max_size, name="leadledger-http")
    return build_runtime(settings, database_url, nats_url, master_key, pool)


def self_opening_app(
    runtime: Runtime,
    http: HttpSettings,
    *,
    after_open: Hook | None = None,
    before_close: Hook | None = None,
) -> Litestar:
    """The app over `runtime`, opening its pool at startup and closing it at shutdown."""
    app = create_app(runtime, http)

    async def start() -> None:
        await runtime.pool.open(wait=True, timeout=30)
        if after_open is not None:
            await after_open(runtime)

    async def stop() -> None:
        if before_close is not None:
            await before_close(runtime)
        await runtime.pool.close()

    app.on_startup.insert(0, start)
    app.on_shutdown.append(stop)
    return app


def app_from_env() -> Litestar:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.database_url or not settings.master_key:
        raise SystemExit(
            "the standalone HTTP app needs LEADLEDGER_DATABASE_URL and LEADLEDGER_MASTER_KEY"
        )
    http = load_http_settings()
    runtime = unopened_runtime(
        settings, settings.database_url, settings.nats_url or "", settings.master_key
    )
    if not settings.nats_url:
        http = msgspec.structs.replace(http, check_nats=False)
    app = self_opening_app(runtime, http)
    freeze_startup_heap()
    return app
