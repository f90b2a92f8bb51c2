"""HTTP create throughput and latency, against a minimal Litestar JSON endpoint, per server.

For each ASGI server (uvicorn, and granian when installed), with the same settings (worker
processes, asyncio loop, no access log), wrk drives:

  * `minimal`: a Litestar app with one POST endpoint that decodes the JSON body and answers a
    small JSON object: the ceiling of the server plus the framework;
  * `create`: POST /v1/leads of the real API with a realistic lead of about 15 fields and every
    check on: bearer-key authentication (a database read), rate limit, body validation,
    Idempotency-Key (claim and stored response), normalization, exact and fuzzy dedup, the
    ledger append with PII encryption, and the request log line;

at 16 and 64 connections, recording requests/s and p50/p99 latency. Every create is a new
person (unique email, phone, external id and Idempotency-Key); any non-2xx answer is counted
and reported. The relay and projections do not run (they are separate workers); the read
model stays empty, so the fuzzy-dedup candidate query finds nothing to score.

    python -m bench.bench_http [--duration 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
from litestar import Litestar, post

from bench.common import (
    BenchServer,
    Comparison,
    Figure,
    Results,
    compare,
    describe_machine,
    fmt_rate,
    load_average,
    machine_markdown,
    now_iso,
    quiet_logs,
    update_results_md,
    write_results,
)
from bench.measure import _HZ, ForeignCpu, _tree_jiffies

CONNECTIONS = (16, 64)
TARGET_RATIO = 0.25
TARGET_P99_MS = 50.0

# wrk: every request a new person, with its own Idempotency-Key.
LUA = r"""
local counter = 0
local thread_count = 0
function setup(thread)
  thread:set("tid", thread_count)  -- a global of that thread's Lua state
  thread_count = thread_count + 1
end
function init(args)
  tid = tid or 0
  run = args[1]
  token = args[2]
  path = args[3]
  phone_base = tonumber(args[4])
  math.randomseed(os.time() + tid * 7919)
end
local letters = "abcdefghijklmnopqrstuvwxyz"
local function word(n)
  local t = {}
  for i = 1, n do
    local k = math.random(1, 26)
    t[i] = letters:sub(k, k)
  end
  return table.concat(t)
end
local function phone(counter)
  return string.format("%07d", (phone_base + tid * 100000 + counter) % 10000000)
end
function request()
  counter = counter + 1
  local n = string.format("%s%d%07d", run, tid, counter)
  local last = word(9)
  local body = '{"first_name":"Ada","last_name":"' .. last .. '",' ..
    '"email":"' .. last .. '.' .. n .. '@' .. word(6) .. '.example",' ..
    '"phone":"+1202' .. phone(counter) .. '",' ..
    '"company":"' .. word(7) .. ' Analytics","title":"Head of Data",' ..
    '"website":"https://' .. word(8) .. '.example","country":"US","city":"Austin",' ..
    '"address":"500 Congress Ave","ip_address":"203.0.113.7","source":"web_form",' ..
    '"external_id":"' .. n .. '","stage":"lead","owner":"owner@seller.example",' ..
    '"tags":["webinar-2025","enterprise"]}'
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. token
  headers["Idempotency-Key"] = n
  return wrk.format("POST", path, headers, body)
end
"""


# -- the apps the servers run ------------------------------------------------------------------


@post("/echo", status_code=200, sync_to_thread=False)
def echo(data: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "fields": len(data)}


def minimal_app() -> Litestar:
    """The baseline: Litestar decoding a JSON body and encoding a JSON answer, nothing else."""
    return Litestar(route_handlers=[echo], openapi_config=None, logging_config=None)


# -- servers and load --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(server: str, target: str, port: int, workers: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(workers), "--log-level", "warning",
                "--no-access-log", "--loop", "asyncio", "--backlog", "2048"]
    return [shutil.which("granian") or "granian", "--interface", "asgi", "--factory", target,
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log", "--loop", "asyncio",
            "--backlog", "2048"]


class Served:
    def __init__(self, server: str, target: str, workers: int, env: dict[str, str],
                 probe: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            server_command(server, target, self.port, workers), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        method = "POST" if probe == "/echo" else "GET"
        while True:
            try:
                answer = httpx.request(method, self.url + probe,
                                       json={} if method == "POST" else None, timeout=2)
                if answer.status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start ({' '.join(self.process.args)})")
            time.sleep(0.2)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Load(msgspec.Struct, frozen=True):
    rate: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    foreign_cores: float | None
    server_cpu_ms: float | None = None
    """CPU of the server's processes per request (ms): steadier than throughput when other
    work shares the machine."""
    postgres_cpu_ms: float | None = None
    """CPU of PostgreSQL's processes per request (ms), when embedded."""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


_runs = iter(range(1, 10_000))


def run_wrk(url: str, path: str, connections: int, seconds: float, script: Path,
            run: str, token: str, roots: list[int], server_pid: int,
            postgres_pid: int | None) -> Load:
    """One wrk run. Each run numbers its people from its own range (phones stay unique
    across runs: 200,000 per run)."""
    phone_base = next(_runs) * 200_000
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout",
               "10s", "-s", str(script), url, "--", run, token, path, str(phone_base)]
    cpu0 = (_tree_jiffies([server_pid]), _tree_jiffies([postgres_pid]) if postgres_pid else 0)
    with ForeignCpu(roots) as meter:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu1 = (_tree_jiffies([server_pid]), _tree_jiffies([postgres_pid]) if postgres_pid else 0)
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    distribution = out.split("Latency Distribution", 1)[1]
    p50 = _ms(re.search(r"50%\s+(\S+)", distribution).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+(\S+)", distribution).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    cores = None if meter.cores is None else round(meter.cores, 2)
    per_request = 1000 / _HZ / max(requests, 1)
    server_cpu = round((cpu1[0] - cpu0[0]) * per_request, 3)
    postgres_cpu = round((cpu1[1] - cpu0[1]) * per_request, 3) if postgres_pid else None
    return Load(rate, round(p50, 2), round(p99, 2), requests, errors, cores, server_cpu,
                postgres_cpu)


# -- the run -------------------------------------------------------------------------------------


async def _prepare(database_url: str) -> str:
    import psycopg

    from api.keys import KeyStore
    from ledger.migrations import migrate

    await migrate(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        issued = await KeyStore(conn).create("bench", "ops", "bench", rate_limit=100_000_000)
    return issued.token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--from-json", action="store_true",
                        help="only rewrite the RESULTS.md section from bench/results/http.json")
    args = parser.parse_args()
    if args.from_json:
        rewrite_markdown()
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    servers = ["uvicorn"] + (["granian"] if shutil.which("granian") else [])
    quiet_logs()
    from ledger.crypto import generate_master_key

    started_load = load_average()
    with BenchServer() as pg, tempfile.TemporaryDirectory() as tmp:
        database_url = pg.create_database("bench_http")
        token = asyncio.run(_prepare(database_url))
        script = Path(tmp) / "lead.lua"
        script.write_text(LUA)
        env = {**os.environ, "LEADLEDGER_DATABASE_URL": database_url,
               "LEADLEDGER_MASTER_KEY": generate_master_key(), "LEADLEDGER_LOG_FORMAT": "json",
               "LEADLEDGER_LOG_LEVEL": "info", "PYTHONPATH": str(Path.cwd())}
        env.pop("LEADLEDGER_NATS_URL", None)
        loads: dict[tuple[str, str, int], Load] = {}
        for server in servers:
            for kind, target, path, probe in (
                ("minimal", "bench.bench_http:minimal_app", "/echo", "/echo"),
                ("create", "api.http.standalone:app_from_env", "/v1/leads", "/health"),
            ):
                served = Served(server, target, args.workers, env, probe)
                roots = [*pg.own_pids(), served.process.pid]
                postgres = next(iter(pg.own_pids()[1:]), None)
                measure = dict(script=script, token=token, roots=roots,
                               server_pid=served.process.pid, postgres_pid=postgres)
                try:
                    run = uuid.uuid4().hex[:6]
                    run_wrk(served.url, path, 16, args.warmup, run=run + "w", **measure)
                    for connections in CONNECTIONS:
                        loads[(server, kind, connections)] = run_wrk(
                            served.url, path, connections, args.duration,
                            run=f"{run}{connections}", **measure)
                        print(server, kind, connections, loads[(server, kind, connections)],
                              flush=True)
                finally:
                    served.stop()
        machine = describe_machine(pg, packages=("litestar", "uvicorn", "granian"))
    report(loads, servers, machine, args, started_load)


def report(loads: dict[tuple[str, str, int], Load], servers: list[str], machine: Any,
           args: argparse.Namespace, started_load: list[float]) -> None:
    best = max(servers, key=lambda s: loads[(s, "create", 16)].rate)
    figures: list[Figure] = []
    comparisons: list[Comparison] = []
    for server in servers:
        for connections in CONNECTIONS:
            minimal = loads[(server, "minimal", connections)]
            create = loads[(server, "create", connections)]
            base = Figure(name=f"{server}_minimal", writers=connections, unit="req/s",
                          value=minimal.rate, samples=[minimal.rate],
                          foreign_cores=[minimal.foreign_cores])
            figures.append(base)
            figures.append(compare(Figure(
                name=f"{server}_create", writers=connections, unit="creates/s",
                value=create.rate, samples=[create.rate], foreign_cores=[create.foreign_cores],
            ), base, TARGET_RATIO))
            ratio = create.rate / minimal.rate if minimal.rate else 0.0
            comparisons.append(Comparison(
                name=f"{server} create/minimal", writers=connections, numerator=f"{server}_create",
                denominator=f"{server}_minimal", ratio=round(ratio, 3), target=TARGET_RATIO,
                met=ratio >= TARGET_RATIO))
    results = Results(
        benchmark="http", date=now_iso(),
        command="python -m bench.bench_http " + " ".join(sys.argv[1:]),
        settings={"duration_s": args.duration, "warmup_s": args.warmup, "workers": args.workers,
                  "connections": list(CONNECTIONS), "wrk_threads": 2, "loop": "asyncio"},
        machine=machine, figures=figures, comparisons=comparisons,
        load_average={"start": started_load, "end": load_average()},
        details={"loads": {f"{s}/{k}/{c}": msgspec.to_builtins(v)
                           for (s, k, c), v in loads.items()}, "chosen_server": best},
    )
    write_results(results)
    update_results_md("http", markdown(loads, servers, best, results))


def markdown(loads: dict[tuple[str, str, int], Load], servers: list[str], best: str,
             results: Results) -> str:
    lines = [
        "## HTTP create throughput and latency (`bench/bench_http.py`)", "",
        f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        f"- **Load average** (1/5/15 min) at start {results.load_average['start']}, at end "
        f"{results.load_average['end']}: other work on this 2-core machine skews figures.",
        f"- **Reproduce:** `{results.command}` (needs `wrk`; granian is measured when installed)",
        f"- **Method:** wrk (2 threads) for {results.settings['duration_s']} s per figure after "
        f"a warm-up; {results.settings['workers']} server worker processes, asyncio loop, no "
        "access log, the same for every app. `minimal` = Litestar decoding a JSON body and "
        "answering JSON; `create` = POST /v1/leads, a 16-field lead, every check on "
        "(key lookup, rate limit, validation, Idempotency-Key, normalization, dedup, encrypted "
        "append, request log). PostgreSQL, the server and wrk share the 2 cores.", "",
        "| server | app | conns | req/s | p50 ms | p99 ms | errors | create/minimal | "
        "server CPU ms/req | PostgreSQL CPU ms/req | other work (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in servers:
        for kind in ("minimal", "create"):
            for connections in CONNECTIONS:
                load = loads[(server, kind, connections)]
                ratio = "-"
                if kind == "create":
                    base = loads[(server, "minimal", connections)].rate
                    ratio = f"{load.rate / base:.2f}" if base else "-"
                lines.append(
                    f"| {server} | {kind} | {connections} | {fmt_rate(load.rate)} | "
                    f"{load.p50_ms:.1f} | {load.p99_ms:.1f} | {load.errors} | {ratio} | "
                    f"{_fmt(load.server_cpu_ms)} | {_fmt(load.postgres_cpu_ms)} | "
                    f"{_fmt(load.foreign_cores)} |")
    create16 = loads[(best, "create", 16)]
    minimal16 = loads[(best, "minimal", 16)]
    ratio16 = create16.rate / minimal16.rate
    create_cpu = (create16.server_cpu_ms or 0) + (create16.postgres_cpu_ms or 0)
    minimal_cpu = minimal16.server_cpu_ms or 0
    lines += [
        "",
        "CPU per request is the steadier figure on a shared machine: with "
        f"{best} at 16 connections a create costs {create16.server_cpu_ms or 0:.2f} ms of "
        f"server CPU and {create16.postgres_cpu_ms or 0:.2f} ms of PostgreSQL CPU "
        f"({create_cpu:.2f} ms), the minimal endpoint {minimal_cpu:.2f} ms: by CPU, creates "
        f"can reach {minimal_cpu / create_cpu if create_cpu else 0:.3f}x the minimal "
        "endpoint's rate, and two idle cores would serve about "
        f"{2000 / create_cpu if create_cpu else 0:,.0f} creates/s.",
    ]
    slow = [s for s in servers if loads[(s, "minimal", 16)].p50_ms >= 40
            and (loads[(s, "minimal", 16)].server_cpu_ms or 1) < 1]
    for server in slow:
        lines.append(
            f"- {server}'s minimal endpoint waits ~40 ms per response whatever the load (p50 "
            f"{loads[(server, 'minimal', 16)].p50_ms:.0f} ms at "
            f"{loads[(server, 'minimal', 16)].server_cpu_ms:.2f} ms CPU): a stall of its "
            "pure-Python HTTP/1.1 stack with keep-alive clients, not work, so its "
            "create/minimal ratio says little.")
    lines += [
        "", f"Chosen server: **{best}** (higher create throughput at 16 connections).",
        f"- creates/s ÷ minimal req/s at 16 connections: {ratio16:.2f} (target ≥ "
        f"{TARGET_RATIO}): {'met' if ratio16 >= TARGET_RATIO else '**missed**'}.",
        f"- create p99 at 16 connections: {create16.p99_ms:.1f} ms (target ≤ {TARGET_P99_MS:g} "
        f"ms): {'met' if create16.p99_ms <= TARGET_P99_MS else '**missed**'}.",
    ]
    return "\n".join(lines)


def rewrite_markdown() -> None:
    from bench.common import RESULTS_DIR

    results = msgspec.json.decode((RESULTS_DIR / "http.json").read_bytes(), type=Results)
    raw = results.details["loads"]
    assert isinstance(raw, dict)
    loads = {tuple(k.split("/")[:2]) + (int(k.split("/")[2]),): msgspec.convert(v, Load)
             for k, v in raw.items()}
    servers = list(dict.fromkeys(k[0] for k in loads))
    update_results_md("http", markdown(loads, servers, str(results.details["chosen_server"]),
                                       results))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
