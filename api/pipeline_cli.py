"""`leadledger status` and `leadledger replay`: where the pipeline stands (with the background
rescore jobs), and rebuilding read models from the ledger (with a progress bar), through the
projections' own status and rebuild: `replay lead`, `replay score-history`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import click
import msgspec

from api.cli_runtime import cli_settings, data_dir_option, print_json, with_runtime
from api.runtime import Runtime
from processors.rescore import RescoreJob, recent_jobs
from projections.leads import LeadDifference
from projections.rebuild import RebuildBusy, RebuildReport, rebuild_leads
from projections.score_history import rebuild_score_history
from projections.status import ReaderStatus, pipeline_status

# Events written but not yet readable by gap-safe readers: everything after the horizon (which
# is exactly the rows of transactions at or above the oldest one still running). TODO: move
# into projections.status with the other lags when it reports the horizon's.
_AFTER_HORIZON = "SELECT count(*) FROM events WHERE (transaction_id, position) > (%s, %s)"


class ReaderView(msgspec.Struct, kw_only=True):
    name: str
    position: str
    lag_events: int
    updated_at: datetime | None


class RescoreJobView(msgspec.Struct, kw_only=True):
    workspace: str
    job_id: str
    model: str
    status: str
    done: int
    total: int
    changed: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class StatusView(msgspec.Struct, kw_only=True):
    """`status --json`: the pipeline's report plus how far the readable horizon lags, and the
    latest rescore jobs (running ones and the last finished)."""

    head: int
    horizon: str
    horizon_lag_events: int
    relay: ReaderView
    projections: list[ReaderView]
    rescore_jobs: list[RescoreJobView] = []


def _job_view(job: RescoreJob) -> RescoreJobView:
    return RescoreJobView(
        workspace=job.workspace, job_id=job.job_id, model=f"{job.model_id}@{job.model_version}",
        status=job.status, done=job.done, total=job.total, changed=job.changed,
        started_at=job.started_at, finished_at=job.finished_at, error=job.error,
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@data_dir_option
def status(as_json: bool, data_dir: Path | None) -> None:
    """Show the ledger head, the readable horizon, and the relay's and each projection's
    position and lag (in events)."""

    def reader(r: ReaderStatus) -> ReaderView:
        return ReaderView(name=r.name, position=r.checkpoint.token(), lag_events=r.lag_events,
                          updated_at=r.updated_at)

    async def collect(runtime: Runtime) -> StatusView:
        report = await pipeline_status(runtime.store, runtime.pool)
        async with runtime.pool.connection() as conn:
            horizon = report.horizon
            cur = await conn.execute(_AFTER_HORIZON, (horizon.transaction_id, horizon.position))
            row = await cur.fetchone()
            jobs = await recent_jobs(conn)
        return StatusView(
            head=report.head, horizon=report.horizon.token(),
            horizon_lag_events=row[0] if row else 0, relay=reader(report.relay),
            projections=[reader(p) for p in report.projections],
            rescore_jobs=[_job_view(j) for j in jobs],
        )

    view = with_runtime(cli_settings(data_dir), collect)
    if as_json:
        print_json(view)
    else:
        _print_status(view)


def _print_status(view: StatusView) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="leadledger status", title_justify="left")
    table.add_column("reader")
    table.add_column("position", justify="right")
    table.add_column("lag (events)", justify="right")
    table.add_column("updated", justify="right")
    table.add_row("ledger head", str(view.head), "", "")
    table.add_row("readable horizon", view.horizon, f"{view.horizon_lag_events:,}", "")
    for r in [view.relay, *view.projections]:
        label = r.name if r is view.relay else f"projection {r.name}"
        updated = f"{r.updated_at:%Y-%m-%d %H:%M:%S %Z}" if r.updated_at else "never"
        table.add_row(label, r.position, f"{r.lag_events:,}", updated)
    console = Console(soft_wrap=True)
    console.print(table)
    if view.rescore_jobs:
        jobs = Table(title="rescore jobs", title_justify="left")
        for column in ("workspace", "job", "model", "status", "progress", "changed", "started"):
            jobs.add_column(column, justify="right" if column in ("progress", "changed") else
                            "left")
        for j in view.rescore_jobs:
            percent = 100.0 if j.total == 0 else min(100.0, 100.0 * j.done / j.total)
            jobs.add_row(j.workspace, j.job_id, j.model, j.status + (f" ({j.error})" if j.error
                         else ""), f"{j.done:,}/{j.total:,} ({percent:.0f}%)", f"{j.changed:,}",
                         f"{j.started_at:%Y-%m-%d %H:%M:%S %Z}")
        console.print(jobs)


# -- replay -----------------------------------------------------------------------------------


@click.group()
def replay() -> None:
    """Rebuild read models from the ledger."""


Rebuild = Callable[..., Awaitable[RebuildReport]]
"""A projection's rebuild: (store, pool, *, check, progress) -> report."""

_CHECK_HELP = (
    "Rebuild without swapping; print every difference from the live model (exit 1 if any)."
)


@replay.command("lead")
@click.option("--check", is_flag=True, help=_CHECK_HELP)
@data_dir_option
def replay_lead(check: bool, data_dir: Path | None) -> None:
    """Rebuild the lead read model into a shadow table and swap it in atomically, while the
    live table keeps serving."""
    _replay("lead", rebuild_leads, check, data_dir)


@replay.command("score-history")
@click.option("--check", is_flag=True, help=_CHECK_HELP)
@data_dir_option
def replay_score_history(check: bool, data_dir: Path | None) -> None:
    """Rebuild the score-history read model (every LeadScored of every lead) into a shadow
    table and swap it in atomically, while the live table keeps serving."""
    _replay("score-history", rebuild_score_history, check, data_dir)


def _replay(name: str, rebuild: Rebuild, check: bool, data_dir: Path | None) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"), TextColumn("ETA"), TimeRemainingColumn(),
        TimeElapsedColumn(),
    )

    async def run(runtime: Runtime) -> RebuildReport:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(f"checking {name}" if check else f"replaying {name}",
                                total=None, rate="-")

            def progress(done: int, total: int) -> None:
                speed = bar.tasks[task].speed
                bar.update(task, completed=done, total=total,
                           rate=f"{speed:,.0f}" if speed else "-")

            try:
                return await rebuild(runtime.store, runtime.pool, check=check,
                                     progress=progress)
            except RebuildBusy as exc:
                raise click.ClickException(str(exc)) from None

    report = with_runtime(cli_settings(data_dir), run)
    summary = (f"{report.events:,} events in {report.seconds:.1f}s "
               f"({report.events_per_second:,.0f} events/s)")
    if not check:
        click.echo(f"{name} read model rebuilt and swapped in at {report.position.token()}: "
                   f"{summary}")
        return
    for difference in report.differences:
        click.echo(_describe_difference(difference))
    if report.differences:
        click.echo(f"{len(report.differences)} lead(s) differ from a fresh fold of the ledger "
                   f"(checked {summary})", err=True)
        sys.exit(1)
    click.echo(f"no differences at {report.position.token()}: {summary}")


def _describe_difference(difference: LeadDifference) -> str:
    """One line per lead: `workspace/lead_id kind: field live=... rebuilt=...; ...`."""
    head = f"{difference.workspace}/{difference.lead_id} {difference.kind}"
    fields = "; ".join(
        f"{f.field}: live={f.live} rebuilt={f.rebuilt}" for f in difference.fields
    )
    return f"{head}: {fields}" if fields else head
