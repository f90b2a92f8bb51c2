"""`leadledger lead create|show`: single leads through the one command path, printed as JSON.

Enough to exercise the ledger end to end without the HTTP API: `create` goes through the same
normalization and `LeadCommands.execute` as every other way in (actor `cli`, role `admin`,
source `cli`); `show` folds the lead's events from the ledger, so it needs no projection.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import msgspec

from api.cli_runtime import cli_settings, data_dir_option, print_json, with_runtime
from api.runtime import Runtime
from ledger.errors import LeadNotFound
from ledger.ingest import NewLead
from ledger.lead import LeadState
from schema.events import FIELD_NAMES, LeadFields
from schema.metadata import Actor, EventMetadata
from schema.vocabularies import DEFAULT_STAGE, LIFECYCLE_STAGES

T = TypeVar("T")

CLI_ACTOR = Actor(key_id="cli", role="admin")
CLI_SOURCE = "cli"


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


@click.group()
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
@data_dir_option
def lead_create(
    workspace: str, tags: tuple[str, ...], stage: str, owner: str | None, lead_id: str | None,
    reason: str | None, data_dir: Path | None, **fields: str | None,
) -> None:
    """Create a lead and print it as JSON (with its version and ledger position).

    Fields are normalized like every other way in (email, phone, vocabularies); a value
    outside a vocabulary is refused with the closest allowed one.
    """
    settings = cli_settings(data_dir)
    lead_id = lead_id or str(uuid.uuid4())
    given = LeadFields(**{k: v for k, v in fields.items() if v is not None})
    new = NewLead(lead_id=lead_id, fields=given, stage=stage, owner=owner, tags=tags)
    request_id = str(uuid.uuid4())
    metadata = EventMetadata(
        actor=CLI_ACTOR, source=CLI_SOURCE,
        request_id=request_id, correlation_id=request_id, reason=reason,
    )

    async def create(runtime: Runtime) -> LeadView:
        quality = await runtime.quality.load(workspace)
        outcome = await runtime.ingestor.create(workspace, new, metadata, quality)
        result = outcome.result
        position = result.position.token() if result.position else None
        return _view(workspace, result.lead_id, result.state, position)

    print_json(with_runtime(settings, create))


@lead.command("show")
@click.option("--workspace", "-w", required=True, callback=_nonempty, help="The workspace.")
@click.argument("lead_id")
@data_dir_option
def lead_show(workspace: str, lead_id: str, data_dir: Path | None) -> None:
    """Print a lead as JSON, folded from its events in the ledger."""

    async def show(runtime: Runtime) -> LeadView:
        state = await runtime.commands.load(workspace, lead_id)
        if state.status is None:
            raise LeadNotFound(f"lead {lead_id} not found in workspace {workspace}")
        return _view(workspace, lead_id, state, None)

    print_json(with_runtime(cli_settings(data_dir), show))


def _view(workspace: str, lead_id: str, state: LeadState, position: str | None) -> LeadView:
    assert state.status is not None
    return LeadView(
        workspace=workspace, lead_id=lead_id, version=state.version, status=state.status,
        stage=state.stage, owner=state.owner, tags=state.tags, notes_count=state.notes_count,
        merged_into=state.merged_into, fields=state.fields, position=position,
    )
