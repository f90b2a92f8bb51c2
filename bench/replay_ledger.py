"""The ledger the replay benchmark replays: realistic lead histories, interleaved across leads as
real traffic is, written through the ledger's own append path (EventStore.append_many, so PII is
really encrypted under each lead's own key and every row is what production writes).

Each lead gets a LeadCreated with 15 fields (six of them personal), the email check a processor
appends right after, then changes drawn from what sales and marketing do to a lead: fields
changed (sometimes personal ones), tags, stage changes, notes (personal free text), owner
assignments. Events get random times (a lead's own in order), and the ledger is written in that
order, `tx_events` events per transaction, by `writers` concurrent connections (each owning a
share of the leads, so their transactions interleave in the ledger as concurrent traffic does).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import uuid
from collections.abc import Iterator

from ledger.crypto import DataKey, Keyring
from ledger.store import EventStore, NewEvent, StreamAppend
from schema.events import (
    Event,
    LeadCreated,
    LeadEmailChecked,
    LeadFields,
    LeadFieldsChanged,
    LeadNoteAdded,
    LeadOwnerAssigned,
    LeadStageChanged,
    LeadTagged,
)
from schema.metadata import Actor, EventMetadata
from schema.vocabularies import DEPARTMENTS, INDUSTRIES, LEAD_SOURCES, SENIORITIES

FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances",
         "Edsger", "Radia", "Tim", "Hedy", "Claude", "Katherine", "Donald", "Sophie", "Yukihiro")
LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
        "Allen", "Dijkstra", "Perlman", "Berners-Lee", "Lamarr", "Shannon", "Johnson", "Knuth",
        "Wilson", "Matsumoto")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne",
             "Tyrell", "Cyberdyne", "Soylent", "Aperture", "Massive Dynamic", "Wonka")
TITLES = ("CTO", "VP Engineering", "Head of Sales", "Marketing Manager", "CFO", "Data Engineer",
          "Procurement Lead", "COO", "Product Manager", "Founder")
# (country, city, phone prefix, digits after it): mobile ranges phonenumbers accepts.
PLACES = (("FR", "Paris", "+336", 8), ("DE", "Berlin", "+49151", 8), ("GB", "London", "+447700", 6),
          ("US", "Austin", "+1512", 7), ("ES", "Madrid", "+346", 8), ("NL", "Utrecht", "+316", 8))
STAGES = ("mql", "sql", "opportunity", "customer", "disqualified")
TAGS = ("webinar", "pricing-page", "enterprise", "trial", "newsletter", "event-2026", "churn-risk",
        "upsell", "partner", "inbound")
NOTES = ("Called, left a voicemail; try again Thursday.",
         "Asked for a demo of the routing rules, prefers mornings.",
         "Budget approved for Q3, waiting on legal review of the DPA.",
         "Met at the booth, interested in the CSV import and webhooks.")
OWNERS = tuple(f"rep-{i:02d}" for i in range(24))
ROLES = ("sales", "marketing", "ops", "agent")


def _created(lead_id: str, n: int, rng: random.Random) -> LeadCreated:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    company = rng.choice(COMPANIES)
    domain = company.lower().replace(" ", "") + ".example"
    country, city, prefix, digits = rng.choice(PLACES)
    return LeadCreated(
        lead_id=lead_id, stage="lead", owner=None, tags=(rng.choice(TAGS),),
        fields=LeadFields(
            first_name=first, last_name=last,
            email=f"{first.lower()}.{last.lower()}{n}@{domain}",
            phone=prefix + "".join(rng.choice("0123456789") for _ in range(digits)),
            company=company, title=rng.choice(TITLES), website=f"https://www.{domain}",
            country=country, city=city,
            address=f"{rng.randint(1, 200)} {rng.choice(LAST)} Street",
            ip_address=f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            source=rng.choice(LEAD_SOURCES), external_id=f"crm-{n:08d}",
            industry=rng.choice(INDUSTRIES), seniority=rng.choice(SENIORITIES),
        ),
    )


def _change(step: int, stage: str, rng: random.Random) -> tuple[Event, str]:
    """One later event in a lead's life (and the lead's stage after it)."""
    roll = rng.random()
    if roll < 0.25:
        if rng.random() < 0.4:  # a personal field: encrypted
            _, _, prefix, digits = rng.choice(PLACES)
            changes = LeadFields(phone=prefix + "".join(rng.choice("0123456789")
                                                        for _ in range(digits)))
        else:
            changes = LeadFields(title=rng.choice(TITLES), department=rng.choice(DEPARTMENTS))
        return LeadFieldsChanged(changes=changes), stage
    if roll < 0.45:
        return LeadTagged(tag=rng.choice(TAGS)), stage
    if roll < 0.65:
        new = rng.choice([s for s in STAGES if s != stage])
        return LeadStageChanged(stage=new, previous=stage), new
    if roll < 0.85:
        return LeadNoteAdded(note_id=f"n{step}", text=rng.choice(NOTES)), stage
    return LeadOwnerAssigned(owner=rng.choice(OWNERS)), stage


def lead_history(lead_id: str, n: int, events: int, rng: random.Random) -> list[Event]:
    history: list[Event] = [_created(lead_id, n, rng)]
    if events > 1:
        history.append(LeadEmailChecked(status=rng.choice(("valid", "valid", "valid", "risky"))))
    stage = "lead"
    for step in range(2, events):
        event, stage = _change(step, stage, rng)
        history.append(event)
    return history


class Lead:
    __slots__ = ("events", "key", "lead_id", "version", "workspace")

    def __init__(self, workspace: str, lead_id: str, events: list[Event]) -> None:
        self.workspace, self.lead_id, self.events = workspace, lead_id, events
        self.version = 0
        self.key: DataKey | None = None


def _timeline(leads: list[Lead], rng: random.Random) -> Iterator[tuple[Lead, Event]]:
    """Every lead's events in one random order that keeps each lead's own order: a lead
    arrives at a random moment and its later events follow at random intervals."""
    timed = []
    for lead in leads:
        t = rng.random()
        for index, event in enumerate(lead.events):
            timed.append((t, id(lead), index, lead, event))
            t += rng.expovariate(8.0)
    heapq.heapify(timed)
    while timed:
        _, _, _, lead, event = heapq.heappop(timed)
        yield lead, event


async def _write(store: EventStore, keyring: Keyring, leads: list[Lead], tx_events: int,
                 seed: int) -> int:
    rng = random.Random(seed)
    written = 0
    chunk: list[tuple[Lead, Event]] = []

    async def flush() -> None:
        nonlocal written
        # One transaction: per workspace, one append per run of a lead's consecutive events.
        specs: dict[str, list[StreamAppend]] = {}
        for lead, event in chunk:
            key = lead.key
            if key is None:  # the lead's first append stores its new key; later ones reuse it
                key = keyring.new_key(lead.workspace, lead.lead_id)
                lead.key = DataKey(key.aead, key.wrapped, is_new=False)
            specs.setdefault(lead.workspace, []).append(
                StreamAppend(lead.lead_id, lead.version, [NewEvent(event)], key=key))
            lead.version += 1
        for workspace, appends in specs.items():
            meta = EventMetadata(
                actor=Actor(key_id=f"key-{rng.randint(1, 40):03d}", role=rng.choice(ROLES)),
                source=rng.choice(("api", "api", "import", "processor")),
                request_id=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()),
                reason="benchmark traffic",
            )
            await store.append_many(workspace, appends, meta)
        written += len(chunk)
        chunk.clear()

    for item in _timeline(leads, rng):
        chunk.append(item)
        if len(chunk) == tx_events:
            await flush()
    if chunk:
        await flush()
    return written


async def write_ledger(store: EventStore, keyring: Keyring, *, leads: int, events_per_lead: int,
                       workspaces: int = 4, writers: int = 2, tx_events: int = 200,
                       seed: int = 1) -> int:
    """Writes the ledger; returns the number of events written."""
    rng = random.Random(seed)
    everyone = [
        Lead(f"ws-{i % workspaces}", f"lead-{i:07d}",
             lead_history(f"lead-{i:07d}", i, events_per_lead, rng))
        for i in range(leads)
    ]
    shares = [everyone[w::writers] for w in range(writers)]
    counts = await asyncio.gather(*(
        _write(store, keyring, share, tx_events, seed + 1 + w) for w, share in enumerate(shares)))
    return sum(counts)
