"""`leadledger rescore --model <candidate> --dry-run`: what a candidate scoring model would do to
a workspace's leads, by replaying its ledger through it (processors/what_if.py), with a
progress bar. It only reads: activating a model (which rescores for real) is the API's job.
"""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from api.cli_runtime import cli_settings, data_dir_option, print_json, with_runtime
from api.runtime import Runtime
from ledger.attribute_definitions import AttributeDefinitions
from ledger.scoring_models import ScoringModels
from processors.rules import CompiledModel, InvalidModel, compile_model
from processors.what_if import ModelReport, ModelUnderTest, WhatIfReport, run_what_if
from schema.scoring import ScoringModelSpec


@click.command()
@click.option("--model", "model_source", required=True, metavar="FILE|ID[@VERSION]",
              help="The candidate: a JSON file of a scoring model spec, or a saved model's id "
              "(latest version unless @VERSION).")
@click.option("--against", metavar="FILE|ID[@VERSION]", default=None,
              help="The model to compare with [default: the workspace's active model, if any].")
@click.option("--dry-run", is_flag=True, help="Replay without writing (the only mode here).")
@click.option("--workspace", "-w", required=True, help="The workspace.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@data_dir_option
def rescore(model_source: str, against: str | None, dry_run: bool, workspace: str,
            as_json: bool, data_dir: Path | None) -> None:
    """Replay the workspace's ledger through a candidate model: score distribution before and
    after, leads that change band, and how well each model ranks the leads that converted."""
    if not dry_run:
        raise click.ClickException(
            "rescore only runs with --dry-run; to rescore for real, activate the model "
            "through the API (POST /v1/scoring/models/{id}/versions/{version}/activate)"
        )
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)

    async def run(runtime: Runtime) -> WhatIfReport:
        candidate = await _load(runtime, workspace, model_source)
        current = await _load(runtime, workspace, against) if against else await _active(
            runtime, workspace)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=as_json) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"{phase} {workspace}", total=total or 1)
                bar.update(tasks[phase], completed=done, total=total or 1)

            return await run_what_if(runtime.store, workspace, candidate, current,
                                     progress=progress)

    report = with_runtime(cli_settings(data_dir), run)
    if as_json:
        print_json(report)
    else:
        _print_report(report)


async def _load(runtime: Runtime, workspace: str, source: str) -> ModelUnderTest:
    path = Path(source)
    if path.suffix == ".json" or path.is_file():
        try:
            spec = msgspec.json.decode(path.read_bytes(), type=ScoringModelSpec)
        except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise click.ClickException(f"{source}: {exc}") from None
        definitions = await AttributeDefinitions(runtime.pool).current(workspace)
        return ModelUnderTest(path.name, _compiled(source, spec, tuple(definitions.values())))
    model_id, _, version = source.partition("@")
    if version and not version.isdigit():
        raise click.ClickException(f"{source}: the version after @ must be a number")
    found = await ScoringModels(runtime.pool).get(
        workspace, model_id, int(version) if version else None
    )
    if found is None:
        raise click.ClickException(f"no scoring model {source} in workspace {workspace} "
                                   "(nor a file of that name)")
    return ModelUnderTest(found.label, _compiled(source, found.spec, found.attributes))


async def _active(runtime: Runtime, workspace: str) -> ModelUnderTest | None:
    found = await ScoringModels(runtime.pool).active(workspace)
    if found is None:
        return None
    return ModelUnderTest(found.label, _compiled(found.label, found.spec, found.attributes))


def _compiled(source: str, spec: ScoringModelSpec, attributes: tuple) -> CompiledModel:
    try:
        return compile_model(spec, attributes)
    except InvalidModel as exc:
        lines = [f"{source} is not a valid scoring model:"]
        for p in exc.problems:
            where = f" (line {p.line}, column {p.column})" if p.line is not None else ""
            lines.append(f"  {p.rule}{where}: {p.message}")
        raise click.ClickException("\n".join(lines)) from None


def _print_report(report: WhatIfReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"workspace {report.workspace}: {report.leads:,} leads from "
                  f"{report.events:,} events in {report.seconds:.1f}s (nothing written)")
    models = [m for m in (report.current, report.candidate) if m is not None]
    table = Table(title="scores", title_justify="left")
    table.add_column("")
    for m in models:
        table.add_column(("current: " if m is report.current else "candidate: ") + m.label,
                         justify="right")
    for stat in ("count", "min", "p25", "median", "p75", "max"):
        table.add_row(stat, *(_number(getattr(m.distribution, stat)) for m in models))
    for band in sorted({b for m in models for b in m.distribution.bands}):
        table.add_row(f"band {band}", *(str(m.distribution.bands.get(band, 0)) for m in models))
    table.add_row("converted / not (ranked)",
                  *(f"{m.ranking.converted} / {m.ranking.not_converted}" for m in models))
    table.add_row("AUC (converted ranked higher)",
                  *("-" if m.ranking.auc is None else f"{m.ranking.auc:.3f}" for m in models))
    console.print(table)
    for m in models:
        _print_failing(console, m)
    if report.current is None:
        console.print("no current model to compare with (no --against, no active model)")
        return
    console.print(f"{report.band_changes:,} leads change band, "
                  f"{report.score_changes:,} change score")
    if report.band_change_examples:
        changes = Table(title="band changes (first examples)", title_justify="left")
        for column in ("lead", "before", "after", "score before", "score after"):
            changes.add_column(column)
        for c in report.band_change_examples:
            changes.add_row(c.lead_id, c.before_band or "-", c.after_band or "-",
                            _number(c.before_score), _number(c.after_score))
        console.print(changes)


def _print_failing(console: object, model: ModelReport) -> None:
    for rule, count in sorted(model.failing_rules.items()):
        console.print(f"{model.label}: rule {rule!r} failed for {count:,} leads "  # type: ignore
                      "(it contributed 0 for them)")


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
