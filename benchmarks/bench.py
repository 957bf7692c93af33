"""Benchmark: the batch flow beside a raw asyncio + httpx baseline and a Scrapy peer,
on the project's local web farm, in one invocation.

    python -m benchmarks.bench --n 1000 --n 10000 --latency 0.1 --concurrency 50
        [--repeat R] [--json PATH] [--contestants raw,scrapy,flow] [--database-url URL]

Contestants (``benchmarks.contestants``, ``benchmarks.spider``), each in a process of
its own, measured by ``os.wait4`` through ``benchmarks.measure`` (wall time, CPU of the
process and its waited-for children, peak RSS): ``raw`` (asyncio, one httpx client and
``extract_metadata``), ``scrapy`` (a plain spider extracting the same fields with its
selectors) and ``flow`` (``batch_scrape`` against a real local Prefect server started
here, temporary PREFECT_HOME and SQLite, into a fresh SQLite file per run or
``--database-url``; its batch row is read back and checked afterwards).

The farm (``scrapersky.farm.Farm`` in a process of its own, ``benchmarks.processes``)
serves ``site-<i>.test``: a 30-100 KB homepage after ``--latency`` seconds, one
connection a domain; https is refused, so the flow pays its https attempt and http
fallback. The farm's and the Prefect server's CPU (psutil) are never a contestant's.

Runs are interleaved per N (raw, scrapy, flow), ``--repeat`` times; the table shows
medians. Every contestant must fetch every page and extract every title, or the run is
flagged and the exit status is 1: the harness cannot silently measure nothing. Only
loopback addresses are used; no name is ever resolved.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.checks import check_batch, check_records, count_api_errors, expected_pages
from benchmarks.processes import REPO, FarmProcess, PrefectServer, clean_env, run_measured, tail

__all__ = ["main", "Run", "run_benchmark"]

CONTESTANTS = ("raw", "raw-cores", "scrapy", "scrapy-cores", "flow")
#: What ``--realistic`` sets unless given: the realistic web at the scale users run it.
#: Every contestant retries at once (the flow too: ``flow_retry_backoff`` 0).
REALISTIC = {"n": [2000, 10000], "repeat": 3, "concurrency": 200, "request_timeout": 5.0, "retries": 1,
             "flow_retry_backoff": 0.0}


@dataclass
class Run:
    """One contestant at one N, once."""

    contestant: str
    n: int
    repeat: int
    wall_seconds: float
    work_seconds: float | None
    cpu_seconds: float
    work_cpu_seconds: float | None
    max_rss_mb: float
    exit_code: int | None
    timed_out: bool
    farm: dict[str, Any]
    farm_cpu_seconds: float
    expected_pages: int = 0
    pages_ok: int = 0
    titles_ok: int = 0
    server_cpu_seconds: float | None = None
    server_drain_seconds: float | None = None
    api_errors: int | None = None
    api_error_kinds: dict[str, int] = field(default_factory=dict)
    api_error_samples: list[str] = field(default_factory=list)
    state: str | None = None
    batch: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        if self.expected_pages != self.n:  # the realistic web: some hosts serve no page
            # A page or two may miss a deadline under load; never a wrong title.
            return (not self.timed_out and self.exit_code == 0 and self.titles_ok == self.pages_ok
                    and self.pages_ok >= 0.99 * self.expected_pages)
        return (
            not self.timed_out and self.exit_code == 0 and self.pages_ok == self.n == self.titles_ok
            and (self.batch is None or self.batch.get("status") == "completed")
        )

    def numbers(self) -> dict[str, Any]:
        def per_1k(seconds: float | None) -> float | None:
            return None if seconds is None else 1000 * seconds / self.n

        return dict(
            asdict(self), complete=self.complete,
            domains_per_second=self.n / self.wall_seconds if self.wall_seconds else None,
            cpu_seconds_per_1k=per_1k(self.cpu_seconds), work_cpu_seconds_per_1k=per_1k(self.work_cpu_seconds),
            server_cpu_seconds_per_1k=per_1k(self.server_cpu_seconds),
        )


@dataclass
class _Setup:
    farm: FarmProcess
    server: PrefectServer | None
    args: argparse.Namespace
    work: Path
    logs: Path

    def timeout(self, n: int) -> float:
        return self.args.timeout or 120.0 + 0.18 * n  # 10k: 32 min


def _last_json(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()[-50:]):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def _run_one(setup: _Setup, contestant: str, n: int, repeat: int) -> Run:
    name = f"{contestant}-n{n}-r{repeat}"
    args = setup.args
    every_core = contestant.endswith("-cores")
    results = setup.work / (f"{name}.{{shard}}.jsonl" if every_core else f"{name}.jsonl")
    common = ["--n", str(n), "--concurrency", str(args.concurrency), "--kind", args.kind,
              "--retries", str(args.retries)]
    if args.request_timeout:
        common += ["--timeout", str(args.request_timeout)]
    env = clean_env()
    if contestant != "flow":
        module = "benchmarks.contestants raw" if contestant.startswith("raw") else "benchmarks.spider"
        cmd = [sys.executable, "-m", *module.split(), *common, "--port", str(setup.farm.port),
               "--results", str(results)]
        if every_core:
            cmd = [sys.executable, "-m", "benchmarks.every_core", str(args.cores), *cmd]
    else:
        assert setup.server is not None
        batch_id = str(uuid.uuid4())
        database_url = setup.args.database_url or f"sqlite+aiosqlite:///{setup.work / (name + '.db')}"
        env.update(
            PREFECT_API_URL=setup.server.api_url, PREFECT_HOME=str(setup.server.home),
            PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false",
            SCRAPERSKY_CONNECT_TO=" ".join(setup.farm.connect_to), DATABASE_URL=database_url,
        )
        if database_url.startswith("postgres"):  # a PostgreSQL schema is created on purpose
            scrapersky = shutil.which("scrapersky", path=str(Path(sys.executable).parent)) or "scrapersky"
            subprocess.run([scrapersky, "db", "init"], env=env, cwd=REPO, check=True, capture_output=True)
        env.update(setup.args.flow_env)  # e.g. SCRAPERSKY_* settings under comparison
        cmd = [sys.executable, "-m", "benchmarks.contestants", "flow", *common, "--batch-id", batch_id]
        if args.flow_retry_backoff is not None:
            cmd += ["--retry-backoff", str(args.flow_retry_backoff)]
        server_cpu, server_log = setup.server.cpu_seconds(), setup.server.log_size()

    setup.farm.stats(reset=True)
    farm_cpu = setup.farm.cpu_seconds()
    done = run_measured(cmd, env, setup.timeout(n), setup.logs, name)
    farm_cpu = setup.farm.cpu_seconds() - farm_cpu
    summary = _last_json(done.stdout)
    run = Run(
        contestant=contestant, n=n, repeat=repeat, wall_seconds=done.wall_seconds,
        work_seconds=summary.get("work_seconds"), cpu_seconds=done.cpu_seconds,
        work_cpu_seconds=summary.get("work_cpu_seconds"), max_rss_mb=done.max_rss_mb,
        exit_code=done.exit_code, timed_out=done.timed_out, farm=setup.farm.stats(reset=True),
        farm_cpu_seconds=farm_cpu, expected_pages=expected_pages(n, args.kind, args.retries),
    )
    if done.timed_out:
        run.problems.append(f"timed out after {setup.timeout(n):.0f} s")
    elif done.exit_code != 0:
        run.problems.append(f"exit code {done.exit_code}: {tail(done.stderr, 8)}")
    if contestant != "flow":
        files = ([Path(str(results).replace("{shard}", str(k))) for k in range(args.cores)] if every_core
                 else results)
        run.pages_ok, run.titles_ok, problems = check_records(files, n, args.kind, args.retries)
        run.problems += problems
        # Scrapy logs each domain it gave up on as an ERROR: an outcome, counted in pages.
        log = "\n".join(line for line in done.stderr.read_text(errors="replace").splitlines()
                         if "Gave up retrying" not in line)
        errors, _, samples = count_api_errors(log)
        if errors:
            run.problems.append(f"{errors} error lines on stderr: {samples[:2]}")
    else:
        assert setup.server is not None
        # The server goes on recording the run's events after the flow process exits:
        # its CPU and its log lines are counted until it is idle again.
        run.server_drain_seconds = setup.server.wait_idle()
        run.server_cpu_seconds = setup.server.cpu_seconds() - server_cpu
        text = "\n".join((done.stdout.read_text(errors="replace"), done.stderr.read_text(errors="replace"),
                          setup.server.log_since(server_log)))
        run.api_errors, run.api_error_kinds, run.api_error_samples = count_api_errors(text)
        run.state = summary.get("state") or ("timed out" if done.timed_out else "no state")
        run.batch = check_batch(database_url, batch_id, n, args.kind, args.retries)
        run.pages_ok, run.titles_ok = run.batch.pop("pages_ok"), run.batch.pop("titles_ok")
        run.problems += run.batch.pop("problems")
    if run.farm["hosts"] < n or (args.kind == "site" and run.farm["hosts"] != n):
        run.problems.append(f"the farm served {run.farm['hosts']} of {n} homepages")
    return run


def run_benchmark(args: argparse.Namespace) -> tuple[list[Run], dict[str, Any]]:
    """Start the farm (and the Prefect server when the flow runs), run every contestant
    at every N, interleaved, ``args.repeat`` times; everything started is stopped."""
    contestants = [c for c in CONTESTANTS if c in args.contestants]
    work = Path(args.keep_logs) if args.keep_logs else Path(tempfile.mkdtemp(prefix="scrapersky-bench-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    farm = server = None
    runs: list[Run] = []
    meta: dict[str, Any] = {}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        def interrupted(signum: int, frame: Any) -> None:  # SIGTERM unwinds like Ctrl-C
            raise KeyboardInterrupt(f"signal {signum}")

        previous_handler = signal.signal(signal.SIGTERM, interrupted)
    try:
        if "flow" in contestants:
            started = time.perf_counter()
            home = work / "prefect-home"
            home.mkdir(exist_ok=True)
            server = PrefectServer(home, logs, args.prefect_startup_timeout)
            meta["prefect_server_startup_seconds"] = time.perf_counter() - started
            meta["prefect_server_idle_cpu_per_second"] = server.idle_cpu_per_second
        farm = FarmProcess(latency=args.latency, logs=logs)
        meta["load_average_at_start"] = os.getloadavg()
        setup = _Setup(farm=farm, server=server, args=args, work=work, logs=logs)
        for repeat in range(args.repeat):
            for n in args.n:
                for contestant in contestants:
                    if not args.quiet:
                        print(f"[bench] {contestant} N={n} repeat {repeat + 1}/{args.repeat} ...",
                              file=sys.stderr, flush=True)
                    run = _run_one(setup, contestant, n, repeat)
                    runs.append(run)
                    if not args.quiet:
                        busy = run.farm_cpu_seconds / run.wall_seconds if run.wall_seconds else 0.0
                        print(f"[bench]   {run.wall_seconds:.2f} s, {run.pages_ok}/{n} pages, "
                              f"{run.titles_ok}/{n} titles, CPU {run.cpu_seconds:.2f} s"
                              + (f", server CPU {run.server_cpu_seconds:.2f} s" if run.server_cpu_seconds else "")
                              + f", farm {100 * busy:.0f}% of a core"
                              + (f"; problems: {run.problems[:3]}" if run.problems else ""),
                              file=sys.stderr, flush=True)
    finally:
        if farm is not None:
            farm.stop()
        if server is not None:
            server.stop()
        if args.keep_logs:
            meta["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return runs, meta


# --------------------------------------------------------------------------- report


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Medians per (contestant, N), in run order."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run.contestant, run.n), []).append(run.numbers())
    rows = []
    for (contestant, n), items in groups.items():
        row: dict[str, Any] = {"contestant": contestant, "n": n, "repeats": len(items)}
        for key in ("wall_seconds", "work_seconds", "domains_per_second", "cpu_seconds_per_1k",
                    "work_cpu_seconds_per_1k", "server_cpu_seconds_per_1k", "server_drain_seconds",
                    "max_rss_mb", "api_errors", "farm_cpu_seconds"):
            values = [item[key] for item in items if item[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["pages_ok"] = min(item["pages_ok"] for item in items)
        row["pages_median"] = statistics.median(item["pages_ok"] for item in items)
        row["expected_pages"] = items[0]["expected_pages"]
        row["titles_ok"] = min(item["titles_ok"] for item in items)
        row["complete"] = all(item["complete"] for item in items)
        row["states"] = sorted({item["state"] for item in items if item["state"]})
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """flow / each peer per N: wall time and CPU per 1,000 domains; flow - peer pages."""
    by = {(row["contestant"], row["n"]): row for row in rows}
    result: dict[str, dict[str, float | None]] = {}
    for n in sorted({row["n"] for row in rows}):
        flow, entry = by.get(("flow", n)), {}
        for peer in ("raw", "raw-cores", "scrapy", "scrapy-cores"):
            other = by.get((peer, n))
            if flow is None or other is None:
                continue
            for key, label in (("wall_seconds", "wall"), ("cpu_seconds_per_1k", "cpu")):
                a, b = flow[key], other[key]
                entry[f"{label}_flow_over_{peer}"] = a / b if a and b else None
            a, b = flow["cpu_seconds_per_1k"], other["cpu_seconds_per_1k"]
            server = flow["server_cpu_seconds_per_1k"] or 0.0
            entry[f"cpu_with_server_flow_over_{peer}"] = (a + server) / b if a and b else None
            entry[f"pages_flow_minus_{peer}"] = flow["pages_median"] - other["pages_median"]
        if entry:
            result[str(n)] = entry
    return result


def lower_bounds(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per N, the physical limit: max(network-bound = the sum of per-host service times
    / concurrency, CPU-bound = per-page CPU x N / cores), per-page CPU being the least
    any contestant spent (its CPU / N); each contestant's wall time over it; and the
    in-order floor (``in_order_floor``), each contestant's wall time over that."""
    from scrapersky.farm_pages import real_attempt_seconds

    result: dict[str, dict[str, float]] = {}
    for n in sorted({row["n"] for row in rows}):
        if args.kind == "real":
            attempts = [real_attempt_seconds(f"real-{i}.test", timeout=args.request_timeout or 60.0,
                                             retries=args.retries) for i in range(n)]
        else:
            attempts = [[args.latency]] * n
        network = sum(map(sum, attempts)) / args.concurrency
        spent = [row["cpu_seconds_per_1k"] * n / 1000 for row in rows if row["n"] == n and row["cpu_seconds_per_1k"]]
        cpu = min(spent) / args.cores if spent else 0.0
        bound = max(network, cpu)
        floor = in_order_floor(attempts, args.concurrency)
        entry = {"network_bound_s": network, "cpu_bound_s": cpu, "lower_bound_s": bound, "in_order_floor_s": floor}
        for row in rows:
            if row["n"] == n and row["wall_seconds"] and bound:
                entry[f"{row['contestant']}_over_bound"] = row["wall_seconds"] / bound
                entry[f"{row['contestant']}_over_in_order_floor"] = row["wall_seconds"] / floor
        result[str(n)] = entry
    return result


def in_order_floor(attempts: list[list[float]], concurrency: int) -> float:
    """The wall time of a client that costs nothing itself (no start, no CPU) and takes
    the hosts in their order, each attempt into the first free slot of ``concurrency``,
    a retry only when no host is left untried: the floor of any contestant that cannot
    know beforehand which hosts hang. (Sorting the hosts longest first would reach the
    network bound; no client knows their times before asking.)"""
    fresh = deque(range(len(attempts)))
    retries: deque[tuple[int, int]] = deque()
    running: list[tuple[float, int, int]] = []
    now = 0.0
    while fresh or retries or running:
        while len(running) < concurrency and (fresh or retries):
            host, attempt = (fresh.popleft(), 0) if fresh else retries.popleft()
            heapq.heappush(running, (now + attempts[host][attempt], host, attempt))
        now, host, attempt = heapq.heappop(running)
        if attempt + 1 < len(attempts[host]):
            retries.append((host, attempt + 1))
    return now


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_report(rows: list[dict[str, Any]], ratio: dict[str, dict[str, float | None]], header: str,
                 bounds: dict[str, dict[str, float]] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, shutil.get_terminal_size((150, 40)).columns), highlight=False)
    table = Table(title=header, title_justify="left")
    for column in ("N", "contestant", "wall s", "work s", "domains/s", "CPU s/1k", "server CPU s/1k",
                   "peak RSS MB", "pages (median/expected)", "titles OK (min)", "API errors", "final state"):
        table.add_column(column, justify="left" if column in ("contestant", "final state") else "right")
    for row in rows:
        table.add_row(
            str(row["n"]), row["contestant"], _fmt(row["wall_seconds"]), _fmt(row["work_seconds"]),
            _fmt(row["domains_per_second"], 1), _fmt(row["cpu_seconds_per_1k"]),
            _fmt(row["server_cpu_seconds_per_1k"]), _fmt(row["max_rss_mb"], 0),
            f"{row['pages_median']:.0f}/{row['expected_pages']}", f"{row['titles_ok']}", _fmt(row["api_errors"]),
            ",".join(row["states"]) or "-", style=None if row["complete"] else "bold red",
        )
    console.print(table)
    for n, entry in ratio.items():
        console.print(f"N={n}: " + "; ".join(f"{k.replace('_', ' ')} = {_fmt(v)}" for k, v in entry.items()))
    for n, entry in (bounds or {}).items():
        console.print(f"N={n} lower bound: " + "; ".join(f"{k.replace('_', ' ')} = {_fmt(v)}" for k, v in entry.items()))


def _git_revision() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- main


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description="The batch flow beside a raw asyncio+httpx baseline and a Scrapy peer, on one local web farm.",
    )
    parser.add_argument("--realistic", action="store_true",
                        help="the farm's realistic web (real-<i>: heavy-tailed delays, hangs, 503s, 404s,"
                             " 301s to www.; 45-75 KB pages); unless given: --n 2000 --n 10000 --repeat 3"
                             " --concurrency 200 --request-timeout 5 --retries 1 --flow-retry-backoff 0")
    parser.add_argument("--n", type=int, action="append", help="domains per run (repeatable; default 1000)")
    parser.add_argument("--request-timeout", type=float, default=None,
                        help="seconds a request may take, for every contestant (the flow: connect, read and"
                             " total timeouts); default: each one's own")
    parser.add_argument("--retries", type=int, default=None, help="extra attempts after a transient failure,"
                        " for every contestant (default 0)")
    parser.add_argument("--flow-retry-backoff", type=float, default=None,
                        help="the flow's first retry delay (default the project's, 2 s with jitter; with"
                             " --realistic 0); 0 retries at once, as raw and Scrapy do")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="processes of the raw-cores and scrapy-cores peers (default: every core)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before the farm answers (default 0.1)")
    parser.add_argument("--concurrency", type=int, default=None, help="fetches at the same time (default 50)")
    parser.add_argument("--repeat", type=int, default=None, help="runs of each contestant at each N; medians shown")
    parser.add_argument("--contestants", default=",".join(CONTESTANTS),
                        help=f"comma-separated subset of {','.join(CONTESTANTS)} (default all); -cores: one"
                             " process a core, the domains and the concurrency split between them")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per contestant run (default 120 + 0.18 N: 32 min at 10k)")
    parser.add_argument("--database-url", default=None,
                        help="the flow's DATABASE_URL (default: a fresh SQLite file per run)")
    parser.add_argument("--flow-env", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
                        help="an environment variable for the flow process (repeatable), e.g."
                             " SCRAPERSKY_READ_TIMEOUT=5; inherited PREFECT_*/SCRAPERSKY_* are not passed")
    parser.add_argument("--prefect-startup-timeout", type=float, default=180.0)
    parser.add_argument("--json", dest="json_path", default=None, help="write every number to this file")
    parser.add_argument("--keep-logs", default=None, metavar="DIR",
                        help="keep logs, results and databases in DIR (default: a temporary dir, removed)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The benchmark command; 0 when every contestant fetched every page and title."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = REALISTIC if args.realistic else {"n": [1000], "repeat": 1, "concurrency": 50,
                                                   "request_timeout": None, "retries": 0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.kind = "real" if args.realistic else "site"
    args.contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
    unknown = set(args.contestants) - set(CONTESTANTS)
    if unknown or not args.contestants:
        parser.error(f"--contestants: unknown {sorted(unknown)}; choose among {', '.join(CONTESTANTS)}")
    if any(n < 1 or n > 100_000 for n in args.n) or args.repeat < 1 or args.concurrency < 1:
        parser.error("--n must be 1..100000, --repeat and --concurrency at least 1")

    started = time.time()
    runs, meta = run_benchmark(args)
    rows = summarize(runs)
    ratio = ratios(rows)
    bounds = lower_bounds(rows, args)
    revision = _git_revision()
    web = ("the realistic web" if args.realistic else f"latency {args.latency} s")
    print_report(rows, ratio, f"benchmark @ {revision or '?'}: {web}, concurrency {args.concurrency}, timeout "
                              f"{args.request_timeout or 'own'}, retries {args.retries}"
                              + ("" if args.flow_retry_backoff is None else f" (flow backoff {args.flow_retry_backoff} s)")
                              + f", repeat {args.repeat}, "
                              f"{os.cpu_count()} CPUs, load at start {meta.get('load_average_at_start')}", bounds)
    for run in runs:
        if not run.complete:
            print(f"INCOMPLETE {run.contestant} N={run.n} repeat {run.repeat + 1}: "
                  f"{run.pages_ok}/{run.expected_pages} pages, {run.titles_ok} titles; {run.problems[:5]}")
        if run.api_error_samples:
            print(f"{run.contestant} N={run.n} repeat {run.repeat + 1}: {run.api_errors} API error lines "
                  f"{run.api_error_kinds}; first: {run.api_error_samples[:3]}")
    if args.json_path:
        document = {
            "git": revision,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_seconds": time.time() - started,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "args": {k: v for k, v in vars(args).items() if k != "database_url"},
            "database": "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite",
            **meta,
            "summary": rows,
            "ratios": ratio,
            "lower_bounds": bounds,
            "runs": [run.numbers() for run in runs],
        }
        Path(args.json_path).write_text(json.dumps(document, indent=2, default=str))
    return 0 if runs and all(run.complete for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
