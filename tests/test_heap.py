"""Freezing the startup heap: the large, permanent object graphs leave the collector's walks."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, json
from api.heap import freeze_startup_heap
import phonenumbers
freeze_startup_heap()
frozen = gc.get_freeze_count()
# a full collection now walks only what was allocated after startup
tracked_after = len(gc.get_objects())
# the lazily loaded metadata was loaded before freezing: a lead from any country loads nothing
for region in sorted(phonenumbers.SUPPORTED_REGIONS):
    phonenumbers.example_number(region)
gc.collect()
print(json.dumps({"frozen": frozen, "tracked": tracked_after,
                  "grown": len(gc.get_objects()) - tracked_after}))
"""


def test_startup_heap_is_frozen_with_the_lazy_metadata_loaded() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    figures = __import__("json").loads(out.strip().splitlines()[-1])
    assert figures["frozen"] > 20_000
    assert figures["tracked"] < figures["frozen"] / 10
    assert figures["grown"] < 100
