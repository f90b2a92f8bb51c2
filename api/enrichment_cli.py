"""`leadledger firmographics load FILE.csv --workspace W`: load a workspace's firmographics table
from a CSV of any size (the HTTP upload takes up to 16 MB), with a progress bar, and print
what was inserted, updated and rejected (with line numbers). Re-loading an updated file keeps
the table current: rows upsert by domain and are stamped with the load's time.
"""

from __future__ import annotations

from pathlib import Path

import click

from api.cli_runtime import cli_settings, data_dir_option, print_json, with_runtime
from api.runtime import Runtime
from processors.providers.firmographics import Firmographics, LoadReport
from processors.providers.firmographics_csv import InvalidCsv

SHOWN_REJECTIONS = 20


@click.group()
def firmographics() -> None:
    """The workspace's firmographics table (domain → company facts) for enrichment."""


@firmographics.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--workspace", "-w", required=True, help="The workspace.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@data_dir_option
def load(file: Path, workspace: str, as_json: bool, data_dir: Path | None) -> None:
    """Upsert FILE by domain: a CSV with a header naming its columns (domain, company_name,
    industry, employee_range, revenue_range, country, technologies; only domain is required)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with file.open(encoding="utf-8-sig", newline="") as counting:
        total = max(sum(1 for _ in counting) - 1, 1)

    async def run(runtime: Runtime) -> LoadReport:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,}/{task.total:,} lines"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=as_json) as bar, file.open(
            encoding="utf-8-sig", newline=""
        ) as lines:
            task = bar.add_task(f"loading {file.name}", total=total)
            report = await Firmographics(runtime.pool).load(
                workspace, lines, "cli", progress=lambda done: bar.update(task, completed=done))
            bar.update(task, completed=total)
            return report

    try:
        report = with_runtime(cli_settings(data_dir), run)
    except InvalidCsv as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    if as_json:
        print_json(report)
        return
    click.echo(f"{report.inserted} inserted, {report.updated} updated, "
               f"{len(report.rejected)} rejected")
    for rejected in report.rejected[:SHOWN_REJECTIONS]:
        click.echo(f"  line {rejected.line}: {rejected.reason}")
    if len(report.rejected) > SHOWN_REJECTIONS:
        click.echo(f"  ... and {len(report.rejected) - SHOWN_REJECTIONS} more (--json lists all)")
