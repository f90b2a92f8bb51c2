"""End to end: the `leadledger` CLI as a subprocess, against the test's own database and stream.

Each command runs as the operator would run it; the LEADLEDGER_* variables point it at the
servers from tests/conftest.py. `cli_env` and `run_cli` are shared with tests/test_up.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from api.cli import cli
from ledger.crypto import generate_master_key
from projections.status import PROJECTIONS

ROOT = Path(__file__).resolve().parent.parent


def cli_env(infra: object | None = None, **extra: str) -> dict[str, str]:
    """The environment without any LEADLEDGER_* of the caller's; with `infra`, pointing at it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADLEDGER_")}
    env["LEADLEDGER_LOG_FORMAT"] = "json"
    if infra is not None:
        env.update(
            LEADLEDGER_DATABASE_URL=infra.database_url,
            LEADLEDGER_NATS_URL=infra.nats_url,
            LEADLEDGER_MASTER_KEY=infra.master_key,
            LEADLEDGER_STREAM=infra.stream,
            LEADLEDGER_SUBJECT_PREFIX=infra.subject_prefix,
        )
    env.update(extra)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=dict(env), cwd=cwd or ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("leadledger: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def create_lead(env: Mapping[str, str], *args: str, workspace: str = "acme") -> dict:
    result = run_cli("lead", "create", "--workspace", workspace, *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- help and usage ---------------------------------------------------------------------------


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_command_has_help() -> None:
    paths = _command_paths(cli)
    expected = {("up",), ("migrate",), ("status",), ("replay", "lead"), ("lead", "create"),
                ("lead", "show"), ("keys", "create")}
    assert expected <= set(paths)
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output and "--help" in result.output


def test_console_script_is_installed_and_prints_help() -> None:
    script = Path(sys.executable).parent / "leadledger"
    assert script.exists(), "the leadledger script is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in ("up", "status", "replay", "lead", "migrate"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["lead", "create", "--workspace", "w", "--bogus"], "--bogus"),
        (["lead", "create", "--email", "a@b.co"], "--workspace"),
        (["lead", "create", "--workspace", " "], "--workspace"),
        (["up", "--port", "99999"], "--port"),
        (["nonsense"], "nonsense"),
        (["replay", "opinions"], "opinions"),
    ],
)
def test_bad_usage_is_one_line_with_exit_2(args: list[str], needle: str) -> None:
    line = assert_one_line_error(run_cli(*args, env=cli_env()), code=2)
    assert needle in line


# -- lead create / show -----------------------------------------------------------------------


async def test_lead_create_and_show_print_json(infra, store) -> None:
    env = cli_env(infra)
    created = create_lead(
        env, "--email", "ada@example.com", "--first-name", "Ada", "--company", "Engines Ltd",
        "--tag", "vip", "--tag", "beta", "--stage", "Marketing Qualified",
        "--reason", "met at a conference",
    )
    assert created["workspace"] == "acme"
    assert created["status"] == "active" and created["stage"] == "mql"
    assert created["fields"]["email"] == "ada@example.com"
    assert created["fields"]["first_name"] == "Ada"
    assert set(created["tags"]) == {"vip", "beta"}
    assert created["version"] >= 1
    assert created["position"]

    shown = run_cli("lead", "show", "--workspace", "acme", created["lead_id"], env=env)
    assert shown.returncode == 0, shown.stderr
    lead = json.loads(shown.stdout)
    assert lead["lead_id"] == created["lead_id"]
    assert lead["version"] == created["version"]
    assert lead["fields"] == created["fields"]
    assert lead["position"] is None  # a read has no write position

    # Who, through what and why (invariant 7) are recorded on every event.
    stream = await store.read_stream("acme", created["lead_id"])
    assert len(stream.events) == created["version"]
    for recorded in stream.events:
        assert recorded.metadata.actor.key_id == "cli"
        assert recorded.metadata.actor.role == "admin"
        assert recorded.metadata.source == "cli"
        assert recorded.metadata.reason == "met at a conference"


def test_lead_errors_are_one_line(infra) -> None:
    env = cli_env(infra)
    created = create_lead(env, "--email", "grace@example.com", "--lead-id", "lead-dup")

    line = assert_one_line_error(
        run_cli("lead", "create", "-w", "acme", "--lead-id", "lead-dup", env=env)
    )
    assert "lead-dup" in line and "exists" in line

    line = assert_one_line_error(run_cli("lead", "create", "-w", "acme", "--tag", "Not A Tag",
                                         env=env))
    assert "tag" in line

    line = assert_one_line_error(run_cli("lead", "create", "-w", "acme", "--stage", "nope",
                                         env=env))
    assert "stage" in line

    line = assert_one_line_error(run_cli("lead", "show", "-w", "acme", "missing", env=env))
    assert "not found" in line

    # Another workspace never sees the lead (invariant 6).
    line = assert_one_line_error(
        run_cli("lead", "show", "-w", "other", created["lead_id"], env=env)
    )
    assert "not found" in line

    wrong_key = cli_env(infra, LEADLEDGER_MASTER_KEY=generate_master_key())
    line = assert_one_line_error(
        run_cli("lead", "show", "-w", "acme", created["lead_id"], env=wrong_key)
    )
    assert "LEADLEDGER_MASTER_KEY" in line


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"LEADLEDGER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "PostgreSQL"),
        ({"LEADLEDGER_MASTER_KEY": ""}, "LEADLEDGER_MASTER_KEY is required"),
        ({"LEADLEDGER_MASTER_KEY": "bm90IGEga2V5"}, "32 bytes"),
        ({"LEADLEDGER_POOL_MAX_SIZE": "many"}, "invalid setting"),
    ],
)
def test_configuration_errors_are_one_line(infra, overrides: dict[str, str], needle: str) -> None:
    env = cli_env(infra, **overrides)
    line = assert_one_line_error(run_cli("lead", "show", "-w", "acme", "x", env=env))
    assert needle in line


# -- migrate ----------------------------------------------------------------------------------


def test_migrate_applies_once(infra, servers) -> None:
    env = cli_env(infra)
    assert run_cli("migrate", env=env).returncode == 0
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "the database is up to date\n"

    name = f"ll_cli_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        empty = cli_env(infra, LEADLEDGER_DATABASE_URL=servers.database_url(name))
        result = run_cli("migrate", env=empty)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("applied migrations 0001")
        assert "up to date" in run_cli("migrate", env=empty).stdout
    finally:
        with psycopg.connect(servers.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- status and replay ------------------------------------------------------------------------


def test_status_reports_head_horizon_and_lags(infra) -> None:
    env = cli_env(infra)
    for email in ("a@example.com", "b@example.com"):
        create_lead(env, "--email", email)

    result = run_cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["head"] >= 2
    assert status["horizon_lag_events"] == 0  # nothing is in flight
    # No relay or projection ran against this database: both lag by every event.
    assert status["relay"] == {"name": "relay", "position": "0-0",
                               "lag_events": status["head"], "updated_at": None}
    projections = {p["name"]: p for p in status["projections"]}
    assert set(projections) == set(PROJECTIONS)  # every projection, even before it ever ran
    for projection in projections.values():
        assert projection["position"] == "0-0" and projection["updated_at"] is None
        assert projection["lag_events"] == status["head"]

    table = run_cli("status", env=env)
    assert table.returncode == 0, table.stderr
    for label in ("ledger head", "readable horizon", "relay",
                  *(f"projection {name}" for name in PROJECTIONS)):
        assert label in table.stdout


def test_replay_lead_rebuilds_and_check_reports_every_difference(infra) -> None:
    env = cli_env(infra)
    leads = [create_lead(env, "--email", f"p{i}@example.com", "--company", f"C{i}")
             for i in range(3)]

    replayed = run_cli("replay", "lead", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "rebuilt and swapped in" in replayed.stdout
    assert "events/s" in replayed.stderr  # the progress bar
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT lead_id, company FROM leads ORDER BY company").fetchall()
    assert rows == [(lead["lead_id"], f"C{i}") for i, lead in enumerate(leads)]

    checked = run_cli("replay", "lead", "--check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("no differences")

    # Damage the live model behind the projection's back: --check names every lead affected.
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        conn.execute("UPDATE leads SET company = 'Tampered' WHERE lead_id = %s",
                     (leads[0]["lead_id"],))
        conn.execute("DELETE FROM leads WHERE lead_id = %s", (leads[1]["lead_id"],))
    checked = run_cli("replay", "lead", "--check", env=env)
    assert checked.returncode == 1, (checked.stdout, checked.stderr)
    lines = checked.stdout.strip().splitlines()
    assert len(lines) == 2, checked.stdout
    different = next(line for line in lines if leads[0]["lead_id"] in line)
    assert "different" in different and "Tampered" in different and "C0" in different
    missing = next(line for line in lines if leads[1]["lead_id"] in line)
    assert "missing" in missing
    assert "2 lead(s) differ" in checked.stderr

    # A rebuild repairs it.
    assert run_cli("replay", "lead", env=env).returncode == 0
    assert run_cli("replay", "lead", "--check", env=env).returncode == 0
