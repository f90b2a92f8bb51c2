"""What-if by replay: a candidate scoring model (and the current one) over a workspace's ledger,
without writing anything.

`WhatIfReplay` folds RecordedEvents, in ledger order, into each lead's facts (pure, no I/O);
`what_if_report(replay, candidate, current)` scores them and reports, per model, the score
distribution (count, min, quartiles, max, leads per band), the leads that change band between
the two models (a count and the first examples), and how well each model ranks the leads that
later converted. `run_what_if(store, workspace, ...)` is the I/O: it pages through the
workspace's events up to the readable horizon as it was when it started, and reads only.

Choices:
  * every lead is scored at the time of its own last event (`now` = its `recorded_at`), as the
    scoring processor would have last scored it; erased and merged-away leads are left out;
  * a lead "converted" when its stage first reached opportunity or customer. For the ranking it
    is scored on its facts as of the event just before that one, at that event's time (what a
    model could have known before the conversion); a lead created already converted has no
    such moment and is not ranked. The others are scored at their last event;
  * the ranking is the AUC: the probability that a converted lead outranks one that did not
    convert (ties count half), None when either group is empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import get_args

import msgspec

from ledger.lead import ERASED, MERGED
from ledger.store import EventStore, RecordedEvent
from processors.lead_facts import EMPTY, LeadFacts, activation, next_facts
from processors.rules import CompiledModel, evaluate
from schema.events import LeadCreated, LeadEvent, LeadStageChanged
from schema.positions import LogPosition

CONVERTED_STAGES = frozenset(("opportunity", "customer"))
MAX_EXAMPLES = 20
NO_BAND = "(none)"
_LEAD_EVENTS = get_args(LeadEvent)


class ModelUnderTest(msgspec.Struct, frozen=True):
    label: str
    """`<model id>@<version>` or the file it came from."""
    model: CompiledModel


class Distribution(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    min: float | None
    p25: float | None
    median: float | None
    p75: float | None
    max: float | None
    bands: dict[str, int]
    """Leads per band (`(none)` for no band)."""


class Ranking(msgspec.Struct, frozen=True, kw_only=True):
    converted: int
    not_converted: int
    auc: float | None


class ModelReport(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    distribution: Distribution
    ranking: Ranking
    failing_rules: dict[str, int]
    """Rules that failed at run time, with how many leads they failed for."""


class BandChange(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    before_band: str | None
    after_band: str | None
    before_score: float
    after_score: float


class WhatIfReport(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    events: int
    leads: int
    candidate: ModelReport
    current: ModelReport | None
    band_changes: int
    band_change_examples: list[BandChange]
    score_changes: int
    seconds: float = 0.0


class _Lead(msgspec.Struct):
    facts: LeadFacts = EMPTY
    before_conversion: LeadFacts | None = None
    converted: bool = False


class WhatIfReplay:
    """The leads of a workspace folded from its events (pure; feed it in ledger order)."""

    def __init__(self) -> None:
        self.leads: dict[str, _Lead] = {}
        self.events = 0

    def add(self, recorded: RecordedEvent) -> None:
        event = recorded.event
        if not isinstance(event, _LEAD_EVENTS):
            return
        self.events += 1
        lead = self.leads.get(recorded.stream_id)
        if lead is None:
            lead = self.leads[recorded.stream_id] = _Lead()
        if not lead.converted and _converts(event):
            lead.converted = True
            lead.before_conversion = None if lead.facts is EMPTY else lead.facts
        lead.facts = next_facts(lead.facts, recorded)


def _converts(event: object) -> bool:
    return isinstance(event, LeadStageChanged | LeadCreated) and event.stage in CONVERTED_STAGES


def what_if_report(
    workspace: str, replay: WhatIfReplay, candidate: ModelUnderTest,
    current: ModelUnderTest | None = None, progress: Callable[[int], None] | None = None,
) -> WhatIfReport:
    models = [candidate] if current is None else [candidate, current]
    finals: list[list[tuple[float, str | None]]] = [[] for _ in models]
    ranked: list[tuple[list[float], list[float]]] = [([], []) for _ in models]
    failing: list[dict[str, int]] = [{} for _ in models]
    ids: list[str] = []
    for n, (lead_id, lead) in enumerate(replay.leads.items(), 1):
        facts = lead.facts
        if facts.state.status in (None, ERASED, MERGED) or facts.last_recorded_at is None:
            continue
        ids.append(lead_id)
        # One activation per lead and moment, for every model.
        final = activation(facts, facts.last_recorded_at)
        before = lead.before_conversion
        early = activation(before, before.last_recorded_at) if (
            before and before.last_recorded_at) else None
        for i, tested in enumerate(models):
            result = evaluate(tested.model, final, observe=False)
            finals[i].append((result.total, result.band))
            for c in result.contributions:
                if c.error is not None:
                    failing[i][c.rule] = failing[i].get(c.rule, 0) + 1
            converted, not_converted = ranked[i]
            if not lead.converted:
                not_converted.append(result.total)
            elif early is not None:
                converted.append(evaluate(tested.model, early, observe=False).total)
        if progress and n % 1000 == 0:
            progress(n)
    reports = [
        ModelReport(label=m.label, distribution=distribution(finals[i]),
                    ranking=ranking(*ranked[i]), failing_rules=failing[i])
        for i, m in enumerate(models)
    ]
    changes: list[BandChange] = []
    band_changes = score_changes = 0
    if current is not None:
        for lead_id, after, before in zip(ids, finals[0], finals[1], strict=True):
            score_changes += after[0] != before[0]
            if after[1] != before[1]:
                band_changes += 1
                if len(changes) < MAX_EXAMPLES:
                    changes.append(BandChange(
                        lead_id=lead_id, before_band=before[1], after_band=after[1],
                        before_score=before[0], after_score=after[0],
                    ))
    return WhatIfReport(
        workspace=workspace, events=replay.events, leads=len(ids), candidate=reports[0],
        current=reports[1] if current is not None else None, band_changes=band_changes,
        band_change_examples=changes, score_changes=score_changes,
    )


def distribution(scored: list[tuple[float, str | None]]) -> Distribution:
    totals = sorted(total for total, _ in scored)
    bands: dict[str, int] = {}
    for _, band in scored:
        key = band if band is not None else NO_BAND
        bands[key] = bands.get(key, 0) + 1
    return Distribution(
        count=len(totals), min=totals[0] if totals else None, p25=quantile(totals, 0.25),
        median=quantile(totals, 0.5), p75=quantile(totals, 0.75),
        max=totals[-1] if totals else None, bands=dict(sorted(bands.items())),
    )


def quantile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not ordered:
        return None
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def ranking(converted: list[float], not_converted: list[float]) -> Ranking:
    """AUC through the Mann-Whitney U statistic: average ranks, so ties count half."""
    n_pos, n_neg = len(converted), len(not_converted)
    if not n_pos or not n_neg:
        return Ranking(converted=n_pos, not_converted=n_neg, auc=None)
    scored = sorted([(s, True) for s in converted] + [(s, False) for s in not_converted])
    rank_sum = 0.0
    i = 0
    while i < len(scored):
        j = i
        while j + 1 < len(scored) and scored[j + 1][0] == scored[i][0]:
            j += 1
        average_rank = (i + j) / 2 + 1
        rank_sum += average_rank * sum(1 for k in range(i, j + 1) if scored[k][1])
        i = j + 1
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return Ranking(converted=n_pos, not_converted=n_neg, auc=u / (n_pos * n_neg))


async def run_what_if(
    store: EventStore, workspace: str, candidate: ModelUnderTest,
    current: ModelUnderTest | None = None, *, page: int = 10_000,
    progress: Callable[[str, int, int], None] | None = None,
) -> WhatIfReport:
    """Reads the workspace's events (only reads) up to the horizon as of the start, then
    scores. `progress(phase, done, total)`: phase "reading" counts ledger positions (the total
    is the horizon's), "scoring" counts leads."""
    started = time.perf_counter()
    until = await store.horizon()
    replay = WhatIfReplay()
    # The next page is read while this one is folded: PostgreSQL and the fold overlap.
    pending = asyncio.create_task(store.read_all(LogPosition(), page, workspace=workspace))
    while pending is not None:
        events = await pending
        pending = None
        if len(events) == page and events[-1].log_position < until:
            pending = asyncio.create_task(
                store.read_all(events[-1].log_position, page, workspace=workspace)
            )
        for n, recorded in enumerate(events, 1):
            if recorded.log_position > until:
                break
            replay.add(recorded)
            if n % 500 == 0:
                await asyncio.sleep(0)  # lets the next page's query go out and come in
        if events and progress:
            progress("reading", min(events[-1].log_position.position, until.position),
                     until.position)
    if progress:
        progress("reading", until.position, until.position)
    total = len(replay.leads)
    if progress:
        progress("scoring", 0, total)
    report = what_if_report(
        workspace, replay, candidate, current,
        progress=(lambda n: progress("scoring", n, total)) if progress else None,
    )
    if progress:
        progress("scoring", total, total)
    return msgspec.structs.replace(report, seconds=round(time.perf_counter() - started, 3))
