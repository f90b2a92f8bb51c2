"""The garbage collector's view of a long-running leadledger process.

CPython's full (oldest-generation) collections walk every object the collector tracks, and a
service holds large object graphs that live as long as the process: phonenumbers' metadata,
nameparser's lexicon, pycountry's tables, the app with its routes and OpenAPI schema. Walked by
every full collection, they made pauses of tens of milliseconds, which were most of the HTTP
API's p99 (bench/RESULTS.md, HTTP reading). `freeze_startup_heap`, called once startup is done,
moves everything alive then into the permanent generation, which collections no longer walk;
what the process allocates afterwards is collected as before. The libraries' lazily loaded
parts are loaded first, so they are frozen too.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)


def _load_lazy_libraries() -> None:
    """Loads what the normalizers would otherwise load on their first lead."""
    import phonenumbers
    from nameparser import HumanName

    phonenumbers.PhoneMetadata.load_all()
    HumanName("dr. ada de la lovelace jr.").capitalize(force=True)


def freeze_startup_heap() -> None:
    _load_lazy_libraries()
    gc.collect()
    gc.freeze()
    log.info("startup heap frozen", objects=gc.get_freeze_count())
