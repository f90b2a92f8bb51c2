"""The `leadledger` command line: start the service, migrate, replay, inspect, and poke a lead.

Commands only translate flags into calls of the code the HTTP API uses too (the runtime's
LeadCommands, the projections' rebuild and status) and print the result. They find their servers
the way `up` does (`LEADLEDGER_*` settings, else the embedded servers under `--data-dir`, joined
when running and started on demand otherwise). Errors an operator can act on print as one line
on stderr with a non-zero exit; `--help` works on every command.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import click
import psycopg
from psycopg_pool import PoolTimeout

from api import event_loop
from api.cli_runtime import cli_settings, data_dir_option
from api.embedded import EmbeddedError
from api.enrichment_cli import firmographics
from api.keys_cli import keys
from api.lead_cli import lead
from api.pipeline_cli import replay, status
from api.scoring_cli import rescore
from api.server import (
    Endpoints,
    ServerError,
    listen,
    open_runtime_when_ready,
    resolve_servers,
    serve,
)
from api.settings import SettingsError
from ledger.crypto import MasterKeyError
from ledger.errors import LedgerError
from ledger.migrations import MigrationError
from ledger.migrations import migrate as apply_migrations


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    invoke_without_command=True,
)
@click.version_option(package_name="leadledger", prog_name="leadledger")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """leadledger: an event-sourced ledger of B2B leads.

    Configuration comes from LEADLEDGER_* environment variables; with no
    LEADLEDGER_DATABASE_URL / LEADLEDGER_NATS_URL, embedded PostgreSQL and NATS run under
    the data folder.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


# -- up ---------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@cli.command()
@data_dir_option
@click.option("--host", default=None, help="Interface to listen on [default: 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None,
    help="Port to listen on; 0 picks a free one [default: 8000].",
)
def up(data_dir: Path | None, host: str | None, port: int | None) -> None:
    """Start the service: HTTP API, relay and projection workers.

    Without LEADLEDGER_DATABASE_URL / LEADLEDGER_NATS_URL it runs embedded PostgreSQL and
    NATS JetStream under the data folder (created on first start, reused after). Ctrl-C or
    SIGTERM stops everything cleanly.
    """
    settings = cli_settings(data_dir, quiet=False, host=host, port=port)
    signal.signal(signal.SIGTERM, _interrupt)  # until serving, SIGTERM stops like Ctrl-C
    sock = listen(settings.host, settings.port)  # a busy port fails before anything starts

    async def run(servers: Endpoints) -> None:
        runtime = await open_runtime_when_ready(settings, servers)

        def ready(url: str) -> None:
            click.echo(f"leadledger is serving {url} ({servers.description}); Ctrl-C stops it")

        try:
            await serve(runtime, sock, on_ready=ready, master_key=servers.master_key)
        finally:
            await runtime.close()

    try:
        with sock, resolve_servers(settings, nats=True) as servers:
            event_loop.run(run(servers), settings.event_loop)
    except KeyboardInterrupt:
        pass  # stopped while starting: whatever had started has been stopped on the way out
    click.echo("leadledger stopped", err=True)


# -- migrate ----------------------------------------------------------------------------------


@cli.command()
@data_dir_option
def migrate(data_dir: Path | None) -> None:
    """Apply pending database migrations (every command also does this on start)."""
    settings = cli_settings(data_dir)
    with resolve_servers(settings, nats=False) as servers:
        applied = asyncio.run(apply_migrations(servers.database_url))
    if applied:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in applied))
    else:
        click.echo("the database is up to date")


for command in (lead, status, replay, keys, rescore, firmographics):
    cli.add_command(command)


# -- errors -----------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """An operator-facing error as a single line (drivers' messages span several)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, psycopg.OperationalError):
        return f"PostgreSQL: {text}"
    if isinstance(exc, PoolTimeout):
        return f"PostgreSQL: no connection available ({text})"
    return text


USER_ERRORS: tuple[type[BaseException], ...] = (
    ServerError, SettingsError, EmbeddedError, MasterKeyError, MigrationError, LedgerError,
    psycopg.OperationalError, PoolTimeout,
)
"""Errors an operator can act on: one line, exit 1. Anything else is a bug (exit 70)."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"leadledger: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> NoReturn:
    """The console script: click's parsing, with every error as one line on stderr."""
    os.environ.setdefault("PGCONNECT_TIMEOUT", "10")  # an unreachable host fails, not hangs
    try:
        code = cli.main(args=argv, prog_name="leadledger", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _fail(" ".join(exc.format_message().split()) + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(" ".join(exc.format_message().split()), exc.exit_code)
    except click.Abort:
        _fail("interrupted", 130)
    except USER_ERRORS as exc:
        _fail(_one_line(exc), 1)
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback when debugging
        if os.environ.get("LEADLEDGER_LOG_LEVEL", "").lower() == "debug":
            traceback.print_exc()
        _fail(f"unexpected {exc.__class__.__name__}: {_one_line(exc)}", 70)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
