"""The HTTP application: `create_app(runtime)` builds the Litestar app and its routes."""

from __future__ import annotations

from litestar import Litestar, get

from api.runtime import Runtime


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness: the process is up and serving."""
    return {"status": "ok"}


def create_app(runtime: Runtime) -> Litestar:
    app = Litestar(route_handlers=[health])
    app.state.runtime = runtime
    return app
