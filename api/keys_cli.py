"""`leadledger keys`: create, list and revoke API keys from the command line.

Registered on the CLI by api/cli.py (`cli.add_command(keys)`). Finds its database the way every
command does (`LEADLEDGER_*` settings, else the embedded servers under `--data-dir`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click
import msgspec
import psycopg

from api.keys import KEY_ROLES, ApiKey, KeyStore, KeyStoreError
from api.server import resolve_servers
from api.settings import load_settings
from ledger.migrations import migrate

T = TypeVar("T")


def _run(data_dir: Path | None, work: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = load_settings(data_dir=data_dir)

    async def run(database_url: str) -> T:
        await migrate(database_url)
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            return await work(KeyStore(conn))

    with resolve_servers(settings, nats=False) as servers:
        try:
            return asyncio.run(run(servers.database_url))
        except KeyStoreError as exc:
            raise click.ClickException(str(exc)) from None


def _data_dir(command: Callable[..., T]) -> Callable[..., T]:
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Folder of the embedded servers [default: $LEADLEDGER_DATA_DIR or ./.leadledger].",
    )(command)


def _describe(key: ApiKey) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    limit = f"{key.rate_limit}/min" if key.rate_limit else "default rate"
    return (f"{key.key_id}  {key.workspace:<16} {key.role:<9} {state:<24} {limit:<14} "
            f"{key.name}")


@click.group("keys")
def keys() -> None:
    """Create, list and revoke API keys (bearer keys of the HTTP API)."""


@keys.command("create")
@click.option("--workspace", required=True, help="The workspace the key may see and change.")
@click.option("--role", required=True, type=click.Choice(KEY_ROLES),
              help="analyst is read-only; admin may also manage keys and the workspace.")
@click.option("--name", required=True, help="Who or what uses the key (shown in lists).")
@click.option("--rate-limit", type=click.IntRange(min=1), default=None,
              help="Requests per minute [default: the server's].")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
@_data_dir
def create(workspace: str, role: str, name: str, rate_limit: int | None, as_json: bool,
           data_dir: Path | None) -> None:
    """Create a key and print it. The key is shown once: it is stored only as a hash."""
    issued = _run(data_dir, lambda store: store.create(workspace, role, name,
                                                         rate_limit=rate_limit))
    if as_json:
        out = {**msgspec.to_builtins(issued.key), "token": issued.token}
        click.echo(msgspec.json.format(msgspec.json.encode(out), indent=2).decode())
        return
    click.echo(issued.token)
    click.echo(f"key id {issued.key.key_id}, workspace {workspace}, role {role}. "
               "Store the key now: it cannot be shown again.", err=True)


@keys.command("list")
@click.option("--workspace", default=None, help="Only this workspace's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@_data_dir
def list_keys(workspace: str | None, as_json: bool, data_dir: Path | None) -> None:
    """List keys (never their secrets)."""
    found = _run(data_dir, lambda store: store.list(workspace))
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(found), indent=2).decode())
        return
    for key in found:
        click.echo(_describe(key))
    if not found:
        click.echo("no keys", err=True)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--workspace", default=None, help="Refuse unless the key is in this workspace.")
@_data_dir
def revoke(key_id: str, workspace: str | None, data_dir: Path | None) -> None:
    """Revoke a key: it fails on its next request."""
    key = _run(data_dir, lambda store: store.revoke(key_id, workspace=workspace))
    if key is None:
        raise click.ClickException(f"no key {key_id}" + (f" in {workspace}" if workspace else ""))
    click.echo(f"revoked {key.key_id} ({key.workspace}, {key.role}, {key.name})")
