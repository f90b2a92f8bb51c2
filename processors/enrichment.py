"""The enrichment reactor ("enrich"): runs a workspace's providers on a lead and records what
they found, one `LeadEnriched` per provider, through the lead's command path.

What triggers it: a new lead (`LeadCreated`), a change of its email, website or phone
(`LeadFieldsChanged`), a request (`LeadEnrichmentRequested`, POST /v1/leads/{id}/enrich, maybe
for some providers only) and a merge into it (`LeadMerged`: the survivor may have gained an
email or a website). It reads the lead's current state from its stream; erased and merged-away
leads are skipped. The built-in providers always run (email domain, phone, firmographics), the
workspace's HTTP providers when it has configured some; they run concurrently.

Each provider's finding becomes `RecordEnrichment` with an event id derived from (source event
id, provider), and all of one reaction's findings are appended in one write (one read of the
lead, one version: bench_pipeline's leads took three writes, each racing the scoring and routing
processors' own): a re-run after a crash or a retry appends nothing twice, and a provider whose
result is already in the stream is not asked again. Fills of vocabulary-controlled fields
(country, industry, ...) land only as the workspace's codes; a value no code matches stays an
enrichment value. Whether a fill may replace what a person entered is the workspace's
`overwrite` setting (guesses, like a name from an email, never do); the decider applies it.

A provider that fails (after its own retries) or is skipped by its open circuit breaker makes
the reaction fail after the others' findings are recorded: the runner retries it (bounded) and
then parks it in the dead letters, from where a retry asks only the providers still missing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

import structlog
from msgspec import UNSET
from psycopg_pool import AsyncConnectionPool

from ledger.crypto import Keyring
from ledger.errors import LeadGone, LeadNotFound
from ledger.lead import ERASED, INITIAL, MERGED, fold
from ledger.lead_commands import LeadCommands
from ledger.quality_settings import QualitySettings
from ledger.store import EventStore, RecordedEvent, Stream
from ledger.vocabulary import Vocabulary, resolve
from processors.outbound import OutboundGuard
from processors.providers import Finding, Provider, ProviderFailed, snapshot_of
from processors.providers.email_domain import EmailDomainProvider
from processors.providers.firmographics import Firmographics, FirmographicsProvider
from processors.providers.http import HttpProviders
from processors.providers.http_configs import EnrichmentConfigs, ProviderWithSecret
from processors.providers.phone import PhoneProvider
from processors.reactor import FirstReads
from schema.commands import RecordEnrichment
from schema.events import (
    FIELD_NAMES,
    Event,
    LeadCreated,
    LeadEnrichmentRequested,
    LeadFields,
    LeadFieldsChanged,
    LeadMerged,
)
from schema.metadata import Actor, EventMetadata
from schema.vocabularies import VOCABULARY_FIELDS

log = structlog.get_logger(__name__)

NAME = "enrich"
ACTOR = Actor(key_id="processor:enrich", role="processor")
SOURCE = "processor"
ENRICH_IDS = uuid.UUID("3f0c2a8e-7d41-4b6a-9e15-5a8c0d2f7b93")
"""Namespace of LeadEnriched event ids derived from (source event, provider)."""
GUESSING_PROVIDERS = frozenset({"email-domain"})
"""Providers whose fills are guesses: they fill empty fields only, whatever the workspace says."""


class EnrichmentIncomplete(RuntimeError):
    """Some providers could not answer; the others' findings are recorded."""


def trigger_of(event: Event) -> str | None:
    """Why this event calls for enrichment, or None when it does not."""
    match event:
        case LeadCreated():
            return "created"
        case LeadFieldsChanged():
            for name in ("email", "website", "phone"):
                if getattr(event.changes, name) is not UNSET:
                    return f"{name}-changed"
            return None
        case LeadEnrichmentRequested():
            return "on-demand"
        case LeadMerged():
            return "merged"
        case _:
            return None


def enrichment_event_id(source_event_id: str, provider: str) -> str:
    return str(uuid.uuid5(ENRICH_IDS, f"{source_event_id}/{provider}"))


def vocabulary_fills(fills: LeadFields, vocabularies: Mapping[str, Vocabulary]) -> LeadFields:
    """Pure: the fills with controlled fields as the workspace's codes; unmatched ones dropped."""
    kept: dict[str, str] = {}
    for name in FIELD_NAMES:
        value = getattr(fills, name)
        if not isinstance(value, str):
            continue
        vocabulary = vocabularies.get(VOCABULARY_FIELDS.get(name, ""))
        if vocabulary is None:
            kept[name] = value
        elif (code := resolve(vocabulary, value).code) is not None:
            kept[name] = code
    return LeadFields(**kept)


def enrichment_command(
    provider: str, finding: Finding, *, overwrite: bool, trigger: str,
    vocabularies: Mapping[str, Vocabulary],
) -> RecordEnrichment:
    return RecordEnrichment(
        provider=provider, values=dict(finding.values),
        personal_values=dict(finding.personal_values),
        fills=vocabulary_fills(finding.fills, vocabularies),
        overwrite=overwrite and provider not in GUESSING_PROVIDERS, trigger=trigger,
    )


class EnrichmentBatch:
    """What the reactor reads once for a batch: the leads' streams, and each workspace's
    provider configurations and overwrite setting (a change counts from the next batch)."""

    def __init__(self, reads: FirstReads, configured: dict[str, list[ProviderWithSecret]],
                 overwrite: dict[str, bool]) -> None:
        self.reads = reads
        self.configured = configured
        self.overwrite = overwrite


class EnrichmentReactor:
    name = NAME

    def __init__(
        self, store: EventStore, commands: LeadCommands, builtins: Sequence[Provider],
        configs: EnrichmentConfigs, http: HttpProviders, quality: QualitySettings,
    ) -> None:
        self.store = store
        self.commands = commands
        self.builtins = list(builtins)
        self.configs = configs
        self.http = http
        self.quality = quality
        self.recorded = 0
        """LeadEnriched events appended by this process (for tests and logs)."""

    def wants(self, recorded: RecordedEvent) -> bool:
        return trigger_of(recorded.event) is not None

    async def prepare(self, events: list[RecordedEvent]) -> EnrichmentBatch:
        workspaces = sorted({e.workspace for e in events})
        return EnrichmentBatch(
            await FirstReads.of(self.store, events),
            {w: await self.configs.enabled(w) for w in workspaces},
            {w: await self.configs.overwrite(w) for w in workspaces},
        )

    async def react(self, recorded: RecordedEvent, prepared: EnrichmentBatch) -> None:
        workspace, lead_id, source = recorded.workspace, recorded.stream_id, recorded.event
        trigger = trigger_of(source) or "on-demand"
        stream = await prepared.reads.stream(self.store, workspace, lead_id)
        state = fold([r.event for r in stream.events], INITIAL)
        if state.status in (None, ERASED, MERGED):
            log.info("enrichment skipped: the lead is gone", workspace=workspace,
                     lead_id=lead_id, status=state.status)
            return
        providers = await self._providers(workspace, source, prepared.configured[workspace])
        done = {r.event_id for r in stream.events}
        pending = [p for p in providers
                   if enrichment_event_id(recorded.event_id, p.name) not in done]
        snapshot = snapshot_of(state)
        results = await asyncio.gather(
            *(p.enrich(workspace, snapshot) for p in pending), return_exceptions=True
        )
        overwrite = prepared.overwrite[workspace]
        vocabularies = (await self.quality.load(workspace)).vocabularies
        failures: list[BaseException] = []
        found: list[tuple[str, RecordEnrichment]] = []
        for provider, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(result)
            elif not result.empty:
                found.append((provider.name, enrichment_command(
                    provider.name, result, overwrite=overwrite, trigger=trigger,
                    vocabularies=vocabularies)))
        if found and not await self._record(recorded, found, trigger, stream):
            return  # the lead went away meanwhile
        unexpected = [f for f in failures if not isinstance(f, ProviderFailed)]
        if unexpected:
            raise unexpected[0]
        if failures:
            raise EnrichmentIncomplete("; ".join(str(f) for f in failures))

    async def _providers(self, workspace: str, source: Event,
                         configured: list[ProviderWithSecret]) -> list[Provider]:
        providers: list[Provider] = [*self.builtins, *await self.http.current(workspace,
                                                                              configured)]
        if isinstance(source, LeadEnrichmentRequested) and source.providers:
            wanted = set(source.providers)
            providers = [p for p in providers if p.name in wanted]
        return providers

    async def _record(
        self, cause: RecordedEvent, found: list[tuple[str, RecordEnrichment]], trigger: str,
        known: Stream,
    ) -> bool:
        """Every provider's findings in one write (one read of the lead, one append, one
        version), each still its own LeadEnriched with its own id, so that a provider that
        failed is retried later without the others being recorded twice."""
        meta = cause.metadata
        providers = ", ".join(name for name, _ in found)
        metadata = EventMetadata(
            actor=ACTOR, source=SOURCE, causation_id=cause.event_id,
            correlation_id=meta.correlation_id or meta.request_id,
            reason=f"enrichment by {providers} ({trigger})",
        )
        commands = [command for _, command in found]
        try:
            outcome = await self.commands.execute_plan(
                cause.workspace, cause.stream_id, lambda _state: commands, metadata,
                command_ids=[enrichment_event_id(cause.event_id, name) for name, _ in found],
                known=known,
            )
        except (LeadGone, LeadNotFound):
            return False
        self.recorded += len(outcome.events)
        return True

    async def close(self) -> None:
        await self.http.close()


def builtin_providers(pool: AsyncConnectionPool) -> list[Provider]:
    return [EmailDomainProvider(), PhoneProvider(), FirmographicsProvider(Firmographics(pool))]


def build_enrichment(
    store: EventStore, commands: LeadCommands, pool: AsyncConnectionPool, keyring: Keyring,
    quality: QualitySettings, guard: OutboundGuard,
) -> EnrichmentReactor:
    """The reactor as `leadledger up` and the workers run it (api/reactors.py)."""
    return EnrichmentReactor(
        store, commands, builtin_providers(pool), EnrichmentConfigs(pool, keyring),
        HttpProviders(guard), quality,
    )
