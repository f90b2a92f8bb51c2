"""The NATS contract documentation cannot drift: docs/nats.md is what schema/catalogue.py
generates; what it says of retention is what the stream is configured with; and the example
consumer in the README runs against a real stream, sees the events, and resumes from its durable
position after a restart."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType

from api.settings import Settings
from ledger.jetstream import stream_config
from ledger.store import NewEvent
from schema import catalogue
from schema.envelope import CloudEvent
from schema.events import LEAD_EVENT_TYPES, LeadCreated, LeadFields, LeadTagged
from tests.pipeline_support import META, eventually, make_relay, running

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "nats.md"


def test_the_committed_document_is_what_the_schema_generates():
    assert DOC.read_text() == catalogue.render(), (
        "docs/nats.md is stale: run `python -m schema.catalogue > docs/nats.md`"
    )


def test_every_envelope_field_and_event_type_is_documented():
    text = DOC.read_text()
    assert set(catalogue.ENVELOPE_FIELDS) == set(CloudEvent.__struct_fields__)
    for cls in LEAD_EVENT_TYPES:
        assert f"### {cls.event_type}\n" in text
        assert f"`leadledger.lead.{cls.event_type}.v{cls.schema_version}`" in text
        for path in cls.personal:
            assert f"`{path}`" in text


def test_documented_retention_is_the_stream_configuration():
    settings = Settings()
    assert settings.stream == catalogue.DEFAULT_STREAM
    assert settings.subject_prefix == catalogue.DEFAULT_PREFIX
    assert settings.stream_max_age_days == catalogue.DEFAULT_MAX_AGE_DAYS
    assert settings.duplicate_window_s == catalogue.DEFAULT_DUPLICATE_WINDOW_S
    config = stream_config("S", "p", max_age_s=86_400.0, duplicate_window_s=600.0)
    assert (config.retention, config.discard, config.storage) == (
        RetentionPolicy.LIMITS, DiscardPolicy.OLD, StorageType.FILE)
    assert config.subjects == ["p.>"]


def test_the_readme_shows_the_example_consumer():
    readme = (ROOT / "README.md").read_text()
    assert "### Consuming events from NATS" in readme
    assert "examples/nats_consumer.py" in readme and "docs/nats.md" in readme


async def _consumer(infra, *extra: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "nats_consumer.py"), "--url", infra.nats_url,
        "--stream", infra.stream, "--prefix", infra.subject_prefix, "--durable", "docs-test",
        *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_the_example_consumer_sees_events_and_resumes_from_its_position(
    infra, store, pool
):
    first = [LeadCreated(lead_id="L1", fields=LeadFields(company="Acme"), stage="lead"),
             LeadTagged(tag="vip")]
    async with running(make_relay(infra, store, pool)):
        await store.append("ws-a", "L1", 0, [NewEvent(e) for e in first], META)
        created = LeadCreated(lead_id="L2", fields=LeadFields(), stage="lead")
        await store.append("ws-b", "L2", 0, [NewEvent(created)], META)
        head = (await store.read_stream("ws-b", "L2")).events[-1].log_position.token()
        lines = await _consumer(infra, "--max", "3", "--idle-exit", "20")
        assert lines == [
            line for line in lines if not line.startswith("GAP")
        ] and [line.split(" position=")[0] for line in lines] == [
            "leadledger.lead.LeadCreated.v1 lead=L1 workspace=ws-a",
            "leadledger.lead.LeadTagged.v1 lead=L1 workspace=ws-a",
            "leadledger.lead.LeadCreated.v1 lead=L2 workspace=ws-b",
        ]
        assert lines[-1].endswith(f"position={head}")

        # Down for a while: more events arrive; the same durable name resumes after L2.
        await store.append("ws-a", "L1", 2, [NewEvent(LeadTagged(tag="later"))], META)
        await store.append("ws-a", "L3", 0, [NewEvent(LeadCreated(
            lead_id="L3", fields=LeadFields(), stage="lead"))], META)

        async def published() -> bool:
            info = await _stream_info(infra)
            return info >= 5

        await eventually(published, 30, "the relay to publish")
        again = await _consumer(infra, "--idle-exit", "3")
    assert [line.split(" position=")[0] for line in again] == [
        "leadledger.lead.LeadTagged.v1 lead=L1 workspace=ws-a",
        "leadledger.lead.LeadCreated.v1 lead=L3 workspace=ws-a",
    ]


async def _stream_info(infra) -> int:
    import nats

    nc = await nats.connect(infra.nats_url)
    try:
        return (await nc.jetstream().stream_info(infra.stream)).state.messages
    finally:
        await nc.close()
