"""How every leadledger benchmark measures throughput, the same way for every contender.

N writers loop as fast as they can (tasks on one event loop, or one OS thread each); after a
warm-up, the work completed inside a fixed window is counted and divided by the window's
measured length, and the client's CPU per unit is recorded beside it. On a shared machine,
`measure_guarded` also records how much CPU other processes took meanwhile and retakes a
sample they disturbed too much.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self

import msgspec


class Sample(msgspec.Struct, frozen=True):
    """One measurement: units per second, and the client's CPU time per unit (all threads of
    this process, or the client program's), which is far less noisy than throughput on a
    shared machine."""

    rate: float
    cpu_us: float | None = None
    foreign_cores: float | None = None
    """CPU (in cores) that processes other than the benchmark's used meanwhile, steal included."""


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_jiffies() -> int:
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return user + nice + system + irq + softirq + steal


def _tree_jiffies(roots: list[int]) -> int:
    """CPU of the roots and all their descendants, including children already reaped."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, seen = 0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        total += table[pid][1]
        stack.extend(children.get(pid, ()))
    return total


class ForeignCpu:
    """How much CPU the rest of the machine took while a measurement ran (other people's
    tests, say), in cores: busy time from /proc/stat, steal included, minus the benchmark's
    own process trees. Linux only; elsewhere it reports nothing."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.enabled = Path("/proc/stat").exists()
        self.cores: float | None = None

    def __enter__(self) -> Self:
        if self.enabled:
            self._start = (time.monotonic(), _busy_jiffies(), _tree_jiffies(self.roots))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            t0, busy0, own0 = self._start
            seconds = time.monotonic() - t0
            foreign = (_busy_jiffies() - busy0) - (_tree_jiffies(self.roots) - own0)
            self.cores = max(0.0, foreign / _HZ / seconds) if seconds > 0 else None


class RetryBudget:
    """Seconds that waiting for a quiet machine and retaking disturbed samples may add to a
    run, shared by all its samples, so that a busy machine cannot stretch a run much."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds

    def spend(self, seconds: float) -> None:
        self.left -= seconds

    @property
    def exhausted(self) -> bool:
        return self.left <= 0


def wait_for_quiet(roots: list[int], max_foreign: float, budget: RetryBudget,
                   probe: float = 1.0) -> bool:
    """Waits, out of `budget`, until other work takes at most `max_foreign` cores over a
    `probe`-second window. False if the budget ran out first."""
    while not budget.exhausted:
        started = time.monotonic()
        with ForeignCpu(roots) as meter:
            time.sleep(probe)
        budget.spend(time.monotonic() - started)
        if meter.cores is None or meter.cores <= max_foreign:
            return True
    return False


def measure_guarded(
    measure: Callable[[], Sample], roots: list[int], *, max_foreign: float, retries: int,
    may_retry: Callable[[], bool] = lambda: True, budget: RetryBudget | None = None,
) -> tuple[Sample, int]:
    """Takes a sample; if other work took more than `max_foreign` cores meanwhile, takes it
    again (at most `retries` more times, and only while `may_retry()`), keeping the least
    disturbed. With a `budget`, it first waits for the machine to quiet down, and both the
    waiting and the retakes come out of that budget. Returns the sample kept, with its
    foreign load, and the number of attempts."""
    best: Sample | None = None
    attempts = 0
    while True:
        attempts += 1
        started = time.monotonic()
        with ForeignCpu(roots) as meter:
            sample = measure()
        if attempts > 1 and budget is not None:
            budget.spend(time.monotonic() - started)
        sample = msgspec.structs.replace(
            sample, foreign_cores=None if meter.cores is None else round(meter.cores, 2))
        if best is None or (sample.foreign_cores or 0) < (best.foreign_cores or 0):
            best = sample
        if (best.foreign_cores or 0) <= max_foreign or attempts > retries or not may_retry():
            return best, attempts
        if budget is not None and (
                budget.exhausted or not wait_for_quiet(roots, max_foreign, budget)):
            return best, attempts


async def measure_async(
    op: Callable[[int], Awaitable[int]], writers: int, warmup: float, duration: float
) -> Sample:
    """Units per second done by `writers` tasks each calling `await op(i)` in a loop, counted
    over `duration` seconds after `warmup` seconds. `op` returns how many units it did."""
    counts = [0] * writers
    stop = False

    async def loop(i: int) -> None:
        while not stop:
            counts[i] += await op(i)

    tasks = [asyncio.create_task(loop(i)) for i in range(writers)]
    try:
        await _sleep_watching(tasks, warmup)
        start_count, start, start_cpu = sum(counts), time.perf_counter(), time.process_time()
        await _sleep_watching(tasks, duration)
        end_count, end, end_cpu = sum(counts), time.perf_counter(), time.process_time()
    finally:
        stop = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return _sample(end_count - start_count, end - start, end_cpu - start_cpu)


def _sample(units: int, seconds: float, cpu_seconds: float) -> Sample:
    return Sample(units / seconds, cpu_seconds * 1e6 / units if units else None)


async def _sleep_watching(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Sleeps, but fails at once if a writer died (a benchmark must not count a dead writer)."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()
    if done:
        raise RuntimeError("a writer stopped early")


def measure_threads(
    op: Callable[[int], int], writers: int, warmup: float, duration: float
) -> Sample:
    """As measure_async, with one OS thread per writer calling the blocking `op(i)`."""
    counts = [0] * writers
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop(i: int) -> None:
        try:
            while not stop.is_set():
                counts[i] += op(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the measuring thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    try:
        _sleep_watching_threads(errors, warmup)
        start_count, start, start_cpu = sum(counts), time.perf_counter(), time.process_time()
        _sleep_watching_threads(errors, duration)
        end_count, end, end_cpu = sum(counts), time.perf_counter(), time.process_time()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return _sample(end_count - start_count, end - start, end_cpu - start_cpu)


def _sleep_watching_threads(errors: list[BaseException], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not errors and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
    if errors:
        raise RuntimeError("a writer stopped early") from errors[0]


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")
