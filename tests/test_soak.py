"""The soak test: 2,000 domains on loopback, healthy ones mixed with slow-header,
trickle, meta-refresh-chain, giant-meta and hanging hosts, through the real CLI
(`scrapersky scrape --file ... --json`, a process of its own, its sub-batches on
worker processes), with one worker process SIGKILLed mid-batch and the recovery flow
run against the batch's database while it runs.

Proved: the batch ends and every domain has its outcome (the kinds fail the way they
should, none `internal_error`); no outcome took longer than total_timeout plus a few
seconds; the peak RSS of the flow's process tree (sampled with psutil) stays under
600 MB; no second run ever writes to the batch (one flow run owns it from start to
end, the recovery passes leave it alone, no recovery entry).

The same 2,000 domains through `scrapersky up` (its Prefect server on PostgreSQL, a
worker, the HTTP API; the batch submitted with `POST /api/v3/batch_page_scraper/batch`),
its Prefect worker SIGKILLed at about 20% and again at about 40% of the outcomes, and
`up` itself stopped with SIGTERM at about 60% and started again (same PREFECT_HOME,
database and ports), each once a new run has saved outcomes after the one before. Proved: the batch ends (`partial`: the hostile kinds fail as KINDS
says); every domain has exactly one outcome (one domain_results row each, with its
outcome); no domain whose outcome was saved before a kill or the stop is fetched again
afterwards (the farm counts requests per host); the peak RSS of the batch's flow runs
(each flow run's process and its worker processes: what the CLI soak measures; psutil,
every second) stays under 600 MB. The whole tree of `up` is printed beside it: its
fixed parts (the Prefect server, the worker, the API, `up`) take about 590 MB before any
batch runs. Printed: the wall time, the outcomes by status and error_type, the peak
RSS, how long after each kill or stop the batch was released, taken by a new run and
saved its first new outcome, and the runs of the batch.

It takes minutes, not seconds: marked `soak`, deselected by default, run by `make soak`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import psutil
import pytest

from scrapersky.db.engine import Database
from scrapersky.farm import Farm

pytestmark = pytest.mark.soak

BIN = Path(sys.executable).parent
TOTAL_TIMEOUT = 8.0  # seconds, the batch's whole-fetch deadline
SLACK = 5.0  # "a few seconds": extraction after the fetch, a loaded 2-core machine
PEAK_RSS_LIMIT = 600 * 1024 * 1024
KILL_AFTER_REQUESTS = 600  # the farm's requests before the kill (of about 2,300)
RECOVERY_PASSES = 2  # `scrapersky recover --stale-after RECOVERY_STALE_AFTER` while it runs
RECOVERY_STALE_AFTER = 20
DEADLINE = 600  # seconds for the whole batch, at most

#: host kind -> (how many, the error_type every one of them must end with; None: completed)
KINDS: dict[str, tuple[int, str | None]] = {
    "site": (1680, None),  # realistic 30-100 KB homepages
    "ok": (20, None),
    "dribble": (50, "timeout"),  # status line and headers one byte every 0.2 s
    "trickle": (50, "timeout"),  # a body at one byte a second
    "hang": (50, "timeout"),  # accepts, answers nothing
    "chain": (25, "too_many_redirects"),  # an endless meta-refresh chain
    "slowchain": (25, "too_many_redirects"),  # the same, 0.3 s a hop
    "giantmeta": (100, None),  # 3.5 MB of title, description and og:* values
}


def _domains() -> dict[str, str]:
    """domain -> kind, 2,000 of them, the hostile ones spread through the batch."""
    by_kind = {}
    for kind, (count, _) in KINDS.items():
        if kind == "site":
            by_kind[kind] = [f"site-{i}.test" for i in range(count)]
        elif kind in ("chain", "slowchain"):  # chain-0.c<i>.test -> chain-1.c<i>.test -> ...
            by_kind[kind] = [f"{kind}-0.c{i}.test" for i in range(count)]
        else:
            by_kind[kind] = [f"{kind}-{i}.test" for i in range(count)]
    total = sum(len(names) for names in by_kind.values())
    order: list[tuple[float, str, str]] = []
    for kind, names in by_kind.items():
        order += [((i + 0.5) * total / len(names), name, kind) for i, name in enumerate(names)]
    return {name: kind for _, name, kind in sorted(order)}


def _tree_rss(root: psutil.Process) -> tuple[int, list[psutil.Process], list[tuple[int, str, int]]]:
    """Summed RSS of a process and its descendants; the descendants; (pid, role, rss) each."""
    try:
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, [], []
    each = []
    for process in [root, *children]:
        try:
            role = "flow" if process.pid == root.pid else "worker" if _is_worker(process) else process.name()
            each.append((process.pid, role, process.memory_info().rss))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return sum(rss for _, _, rss in each), children, each


def _is_worker(process: psutil.Process) -> bool:
    try:
        line = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    return "spawn_main" in line and "resource_tracker" not in line


async def _owner(url: str, batch_id: uuid.UUID) -> tuple[str | None, bool] | None:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT batch_metadata->>'flow_run_id' AS owner, batch_metadata ? 'recovery' AS recovered "
            "FROM batch_jobs WHERE batch_id = $1", batch_id)
    finally:
        await connection.close()
    return None if row is None else (row["owner"], row["recovered"])


def test_soak_2000_hostile_domains_one_worker_process_killed(
    prefect_api: str, scratch_database: str, tmp_path: Path
) -> None:
    domains = _domains()
    assert len(domains) == 2000
    asyncio.run(Database(scratch_database).init_schema())
    listing = tmp_path / "domains.txt"
    listing.write_text("\n".join(domains) + "\n")
    batch_id = uuid.uuid4()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SCRAPERSKY_"))} | {
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DATABASE_URL": scratch_database,
        "SCRAPERSKY_TASK_RUNNER": "processes",
        "SCRAPERSKY_WORKERS": "2",
        "NO_PROXY": "127.0.0.1,localhost",
    }

    with Farm(latency=0.1) as farm:
        # Every name on both ports goes to loopback: none reaches a resolver.
        rules = farm.connect_to()
        assert {rule.split(":")[1] for rule in rules if rule.startswith("*.test:")} == {"80", "443"}
        options = ["--concurrency", "64", "--retries", "1", "--retry-backoff", "0.5", "--connect-timeout", "4",
                   "--read-timeout", "4", "--total-timeout", str(TOTAL_TIMEOUT)]
        out, log = (tmp_path / "scrape.json").open("w"), (tmp_path / "scrape.log").open("w")
        started = time.monotonic()
        cli = subprocess.Popen(
            [str(BIN / "scrapersky"), "scrape", "--file", str(listing), "--batch-id", str(batch_id), "--json",
             *options, *[arg for rule in rules for arg in ("--connect-to", rule)]],
            env=env, stdout=out, stderr=log, start_new_session=True,
        )
        root = psutil.Process(cli.pid)
        peak_rss, at_peak, killed, workers_before, workers_after = 0, [], None, set(), set()
        owners: set[str | None] = set()
        ever_recovered = False
        passes: list[subprocess.Popen] = []
        next_pass, next_owner_read = started + 25, started
        try:
            while cli.poll() is None:
                now = time.monotonic()
                assert now - started < DEADLINE, f"the batch did not end in {DEADLINE} s"
                rss, children, each = _tree_rss(root)
                if rss > peak_rss:
                    peak_rss, at_peak = rss, [(pid, role, f"{size / 2**20:.0f} MB") for pid, role, size in each]
                workers = {p.pid for p in children if _is_worker(p)}
                if killed is None:
                    workers_before |= workers
                    if workers and sum(farm.hits.values()) >= KILL_AFTER_REQUESTS:
                        killed = min(workers)
                        os.kill(killed, signal.SIGKILL)  # a worker process of this test's CLI, by its pid
                        killed_at = now - started
                else:
                    workers_after |= workers - {killed}
                if now >= next_owner_read:
                    found = asyncio.run(_owner(scratch_database, batch_id))
                    if found is not None:
                        owners.add(found[0])
                        ever_recovered |= found[1]
                    next_owner_read = now + 1.0
                if now >= next_pass and len(passes) < RECOVERY_PASSES:
                    passes.append(subprocess.Popen(
                        [str(BIN / "scrapersky"), "recover", "--stale-after", str(RECOVERY_STALE_AFTER)],
                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        start_new_session=True,
                    ))
                    next_pass = now + 30
                time.sleep(0.25)
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.wait(timeout=30)
            recovered = [p.communicate(timeout=120)[0] for p in passes]
        wall = time.monotonic() - started
        hits = farm.hits

    print(f"\nsoak: {len(domains)} domains, wall {wall:.1f} s, peak RSS of the flow's tree "
          f"{peak_rss / 2**20:.0f} MB {at_peak}, worker {killed} killed at {killed_at:.1f} s, "
          f"{sum(hits.values())} requests, recovery passes: {[r.strip().splitlines()[-1:] for r in recovered]}")
    assert cli.returncode == 0, (tmp_path / "scrape.log").read_text()[-3000:]
    report = json.loads((tmp_path / "scrape.json").read_text())

    # The kill came mid-batch, and the pool was replaced.
    assert killed is not None and killed in workers_before, "no worker process was killed"
    assert workers_after - workers_before, "no worker process replaced the killed one"

    # The batch ended, every domain with its outcome, each kind as it should.
    assert report["batch_id"] == str(batch_id) and report["status"] == "partial"
    statuses = report["domain_statuses"]
    assert sorted(statuses) == sorted(domains)
    wrong = {d: (e["status"], e.get("error_type"), (e.get("error") or "")[:120]) for d, e in statuses.items()
             if (e["status"], e.get("error_type")) != (("failed", KINDS[domains[d]][1]) if KINDS[domains[d]][1]
                                                        else ("completed", None))}
    assert wrong == {}, f"{len(wrong)} domains ended otherwise: {dict(list(wrong.items())[:20])}"
    healthy = sum(n for n, error in KINDS.values() if error is None)
    assert (report["completed_domains"], report["failed_domains"]) == (healthy, len(domains) - healthy)
    giant = next(d for d, kind in domains.items() if kind == "giantmeta")
    assert {"title", "description"} <= set(statuses[giant]["metadata"]["truncated_fields"])

    # No outcome outlived the whole-fetch deadline by more than a few seconds.
    limit = TOTAL_TIMEOUT + SLACK
    slow = {}
    for domain, entry in statuses.items():
        took = (datetime.fromisoformat(entry["finished_at"]) - datetime.fromisoformat(entry["started_at"]))
        if took.total_seconds() > limit or entry["elapsed_ms"] > limit * 1000:
            slow[domain] = (took.total_seconds(), entry["elapsed_ms"])
    assert slow == {}, f"{len(slow)} outcomes took longer than {limit} s: {dict(list(slow.items())[:20])}"
    longest = max(entry["elapsed_ms"] for entry in statuses.values())

    # One run, from start to end: never a second owner, never a recovery.
    run = report["metadata"]["flow_run_id"]
    assert owners == {run}, owners
    assert not ever_recovered and "recovery" not in report["metadata"]
    assert recovered and all("resumed 0 batch(es), failed 0" in text for text in recovered), recovered
    print(f"soak: longest outcome {longest} ms (limit {limit * 1000:.0f}), one owner {run}")

    # Memory: the flow's process and its worker processes together.
    assert peak_rss < PEAK_RSS_LIMIT, f"peak RSS {peak_rss / 2**20:.0f} MB: {at_peak}"


# -- the same batch through `scrapersky up`: its worker killed twice, `up` stopped and
# -- started again mid-batch ---------------------------------------------------------

UP_BATCH_DEADLINE = 900  # s from the submission to the batch's end, at most
UP_START_BOUND = 180  # s for `up` to say "ready" on a busy machine
UP_MAX_CONCURRENT = 64  # the API's max_concurrent: the CLI soak's --concurrency
#: The CLI soak's options, as the environment every part of `up` reads (the API stores
#: them in the batch's row: every run of the batch fetches with them).
UP_OPTIONS = {"SCRAPERSKY_RETRIES": "1", "SCRAPERSKY_RETRY_BACKOFF": "0.5", "SCRAPERSKY_CONNECT_TIMEOUT": "4",
              "SCRAPERSKY_READ_TIMEOUT": "4", "SCRAPERSKY_TOTAL_TIMEOUT": str(TOTAL_TIMEOUT),
              "SCRAPERSKY_TASK_RUNNER": "processes", "SCRAPERSKY_WORKERS": "2"}
#: (fraction of the domains with a saved outcome, what is done then)
UP_EVENTS = [(0.20, "SIGKILL worker"), (0.40, "SIGKILL worker"), (0.60, "SIGTERM up")]
POLL = 0.5  # s between two reads of the batch's row
FINAL = {"completed", "partial", "failed", "cancelled"}


def _up_role(process: psutil.Process, root: int) -> str:
    if process.pid == root:
        return "up"
    try:
        argv = process.cmdline()
    except psutil.Error:
        return "?"
    line = " ".join(argv)
    for words, role in (("server start", "server"), ("worker start", "worker"), ("scrapersky.cli api", "api"),
                        ("prefect.engine", "flow run"), ("resource_tracker", "resource tracker"),
                        ("spawn_main", "pool worker"), ("forkserver", "forkserver")):
        if words in line:
            return role
    return " ".join(argv[1:3])[:40] or process.name()


class _RssSampler(threading.Thread):
    """The summed RSS of up's whole process tree, every second, in a thread of its own
    (the test's loop blocks while `up` stops and starts); its peak, by process then."""

    #: The roles of a flow run's own tree (the part the CLI soak measures).
    FLOW = frozenset({"flow run", "pool worker", "resource tracker", "forkserver"})

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.root: int | None = None
        self.peak = 0
        self.at_peak: list[tuple[str, int, int]] = []
        self.flow_peak = 0  # the flow runs and their worker processes alone
        self.samples = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 3600
        while not self.stopped.wait(1.0) and time.monotonic() < deadline:
            root = self.root
            if root is None:
                continue
            try:
                top = psutil.Process(root)
                tree = [top, *top.children(recursive=True)]
            except psutil.Error:
                continue
            each = []
            for process in tree:
                try:
                    each.append((_up_role(process, root), process.pid, process.memory_info().rss))
                except psutil.Error:
                    pass
            total = sum(rss for _, _, rss in each)
            self.flow_peak = max(self.flow_peak, sum(rss for role, _, rss in each if role in self.FLOW))
            self.samples += 1
            if total > self.peak:
                self.peak, self.at_peak = total, sorted(each, key=lambda e: -e[2])

    def described(self) -> str:
        return ", ".join(f"{role} {rss / 2**20:.0f}" for role, _, rss in self.at_peak) + " (MB)"


class _Reader:
    """Reads of our database from the test's thread: one connection, one event loop."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection = self.loop.run_until_complete(asyncpg.connect(url))

    def __call__(self, method: str, query: str, *args):  # noqa: ANN204
        return self.loop.run_until_complete(getattr(self.connection, method)(query, *args))

    def row(self, batch_id: uuid.UUID):  # noqa: ANN201
        return self("fetchrow", """
            select status, batch_metadata->>'flow_run_id' as owner, batch_metadata->'released' as released,
                   (select count(*) from domain_results r where r.batch_id = b.batch_id and r.outcome is not null)
                   as saved
            from batch_jobs b where batch_id = $1""", batch_id)

    def recorded(self, batch_id: uuid.UUID) -> dict[str, str]:
        """The domains with a saved outcome: "status[/error_type]" each."""
        rows = self("fetch", "select domain, outcome->>'status' as status, outcome->>'error_type' as error_type "
                    "from domain_results where batch_id = $1 and outcome is not null", batch_id)
        return {row["domain"]: row["status"] + (f"/{row['error_type']}" if row["error_type"] else "")
                for row in rows}

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.connection.close())
        finally:
            self.loop.close()


@dataclass
class _Event:
    action: str
    at: float  # monotonic
    wall: datetime
    saved: int  # outcomes saved then
    owner: str | None  # the run that had the batch
    recorded: dict[str, str]  # domain -> its saved "status[/error_type]" then
    hits: Counter
    detail: str = ""
    released: datetime | None = None  # the batch released (batch_metadata.released.at) after it
    new_run_at: float | None = None  # a new run had it, processing (seen by a poll)
    new_owner: str | None = None
    saved_then: int = 0  # outcomes saved when the new run was seen
    moved_at: float | None = None  # the new run saved an outcome (seen by a poll)
    first_outcome: datetime | None = None  # the first outcome saved after the release
    notes: list[str] = field(default_factory=list)


def _worker_of(pid: int) -> psutil.Process | None:
    """up's Prefect worker (its child with "worker start" in its command line)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return None
    for child in children:
        try:
            if "worker start" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except psutil.Error:
            pass
    return None


def _stop_up(process: subprocess.Popen, bound: float) -> tuple[float, int | None, list[str]]:
    """SIGTERM to `up`, up to ``bound`` s for it and every process below it to exit (then
    SIGKILL of what is left): (seconds taken, up's exit code or None, what was left)."""
    try:
        top = psutil.Process(process.pid)
        below = top.children(recursive=True)
    except psutil.Error:
        below = []
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code: int | None = process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        code = None
    _, alive = psutil.wait_procs(below, timeout=max(1.0, started + bound - time.monotonic()))
    left = []
    for leftover in alive:
        try:
            left.append(f"{leftover.pid} {_up_role(leftover, -1)}")
            leftover.kill()
        except psutil.Error:
            pass
    if code is None:
        process.kill()
        process.wait(timeout=10)
    return time.monotonic() - started, code, left


def _prefect_runs(admin_url: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """From the Prefect server's database: every flow run of a deployment; the log lines
    of those runs that say how the batch was stopped, released, resumed."""
    async def read() -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        connection = await asyncpg.connect(admin_url)
        try:
            runs = await connection.fetch(
                "select deployment.name as deployment, flow_run.name, flow_run.state_type::text as state, "
                "flow_run.state_name, flow_run.parameters->'batch'->>'generation' as generation, "
                "flow_run.auto_scheduled from flow_run join deployment on deployment.id = flow_run.deployment_id "
                "order by flow_run.created")
            said = await connection.fetch(
                "select log.timestamp, flow_run.name, log.level, log.message from log "
                "join flow_run on flow_run.id = log.flow_run_id where log.level >= 30 "
                "or log.message ~* 'resuming|released|cancelled|crash|terminat|superseded' order by log.timestamp")
            return runs, said
        finally:
            await connection.close()

    return asyncio.run(read())


@pytest.fixture
def up_database(scratch_database: str, prefect_postgres_template: str) -> Iterator[str]:
    """The scratch database, upgraded as an operator would (``db upgrade``), and beside it
    the Prefect server's ``<db>_prefect``, a copy of the session's migrated template
    (`up` finds it existing: no start migrates); dropped afterwards."""
    from conftest import _admin, prefect_database_from

    name = scratch_database.rsplit("/", 1)[1]
    asyncio.run(Database(scratch_database).upgrade())
    prefect_database_from(prefect_postgres_template, f"{name}_prefect")
    try:
        yield scratch_database
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}_prefect" WITH (FORCE)'))


def test_soak_through_up_worker_killed_twice_up_stopped_and_started_again(up_database: str, tmp_path: Path) -> None:
    from up_process import STOP_BOUND as UP_STOP_BOUND
    from up_process import TOKEN, Up, clean_env, free_port, port_free

    scratch_database = up_database
    domains = _domains()
    assert len(domains) == 2000
    name = scratch_database.rsplit("/", 1)[1]
    tenant = uuid.uuid4()
    home = tmp_path / "up"
    home.mkdir()
    prefect_home = home / "prefect-home"
    api_port, ui_port = free_port(), free_port()
    sampler = _RssSampler()
    sampler.start()
    processes: list[subprocess.Popen] = []
    events: list[_Event] = []
    problems: list[str] = []
    owners: list[tuple[str, float]] = []  # each run that had the batch, when first seen
    released_seen: dict[str, dict] = {}  # batch_metadata.released, by its "at"
    starts: list[float] = []
    reader = _Reader(scratch_database)

    def start_up(farm: Farm, environ: dict[str, str], n: int) -> Up:
        out, err = home / f"up-{n}.out", home / f"up-{n}.err"
        argv = [str(BIN / "scrapersky"), "up", "--api-port", str(api_port), "--ui-port", str(ui_port),
                "--prefect-home", str(prefect_home)]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(argv, env=environ, cwd=home, stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr)
        processes.append(process)
        stack = Up(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", tenant,
                   scratch_database, name, farm, out, err, prefect_home, argv, environ)
        sampler.root = process.pid
        began = time.monotonic()
        while "ready" not in out.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > began + UP_START_BOUND:
                raise AssertionError(f"up #{n} did not start (exit {process.poll()}):\n{stack.output()}\n"
                                     f"{stack.logs()}")
            time.sleep(0.5)
        starts.append(time.monotonic() - began)
        return stack

    with Farm(latency=0.1) as farm:
        environ = clean_env(
            DATABASE_URL=scratch_database,
            SCRAPERSKY_CONNECT_TO=" ".join(farm.connect_to()),  # every *.test name on both ports: loopback
            SCRAPERSKY_API_TOKENS=f"{TOKEN}={tenant}",
            PREFECT_WORKER_QUERY_SECONDS="1",
            **UP_OPTIONS,
        )
        try:
            stack = start_up(farm, environ, 1)
            with stack.api(timeout=120) as api:
                created = api.post("/batch", json={"domains": list(domains), "max_concurrent": UP_MAX_CONCURRENT})
            assert created.status_code == 200, created.text
            batch_id = uuid.UUID(created.json()["batch_id"])
            submitted = time.monotonic()
            row = None
            while True:
                now = time.monotonic()
                if now > submitted + UP_BATCH_DEADLINE:
                    problems.append(f"the batch did not end within {UP_BATCH_DEADLINE} s of its submission: "
                                    f"{dict(row) if row else None}")
                    break
                if stack.process.poll() is not None:
                    problems.append(f"up exited on its own with {stack.process.returncode} mid-batch")
                    break
                row = reader.row(batch_id)
                if row is None:
                    time.sleep(POLL)
                    continue
                if row["owner"] and row["owner"] not in {owner for owner, _ in owners}:
                    owners.append((row["owner"], now - submitted))
                if row["released"]:
                    released = json.loads(row["released"])
                    released_seen.setdefault(released.get("at"), released)
                for event in events:
                    if event.new_run_at is None and row["status"] == "processing" and row["owner"] \
                            and row["owner"] != event.owner:
                        event.new_run_at, event.new_owner, event.saved_then = now, row["owner"], row["saved"]
                    elif event.moved_at is None and event.new_run_at is not None and row["saved"] > event.saved_then:
                        event.moved_at = now
                if row["status"] in FINAL:
                    break
                if len(events) < len(UP_EVENTS):
                    fraction, action = UP_EVENTS[len(events)]
                    worker = _worker_of(stack.process.pid) if action == "SIGKILL worker" else None
                    due = (row["saved"] >= fraction * len(domains) and row["status"] == "processing"
                           and row["owner"] is not None and (not events or events[-1].moved_at is not None)
                           and (action != "SIGKILL worker" or worker is not None))
                    if due:
                        recorded = reader.recorded(batch_id)  # saved, so fetched already ...
                        hits = farm.hits  # ... and fetched this many times
                        event = _Event(action, time.monotonic(), datetime.now().astimezone(), len(recorded),
                                       row["owner"], recorded, hits)
                        events.append(event)
                        if worker is not None:
                            os.kill(worker.pid, signal.SIGKILL)  # up's Prefect worker, by its pid
                            event.detail = f"worker pid {worker.pid}"
                        else:
                            took, code, left = _stop_up(stack.process, UP_STOP_BOUND)
                            event.detail = f"up stopped in {took:.1f} s, exit {code}" + (
                                f", SIGKILLed what was left: {left}" if left else "")
                            if code != 0 or left:
                                problems.append(f"up #1 after SIGTERM: {event.detail}")
                            # The second `up` writes its parts' logs under the same names: keep these.
                            shutil.copytree(prefect_home / "scrapersky-up", home / "up-1-logs")
                            if not (port_free(api_port) and port_free(ui_port)):
                                event.notes.append(f"ports {api_port}/{ui_port} still taken: new ones")
                                api_port, ui_port = free_port(), free_port()
                            stack = start_up(farm, environ, 2)
                            event.detail += f"; up started again, ready in {starts[-1]:.1f} s"
                        continue
                time.sleep(POLL)
            ended = time.monotonic()
            final_hits = farm.hits
        finally:
            for process in processes:
                if process.poll() is None:
                    took, code, left = _stop_up(process, UP_STOP_BOUND)
                    print(f"\nsoak-up: the last up stopped in {took:.1f} s, exit {code}, left {left}")
            sampler.stopped.set()
            if sys.exc_info()[0] is not None:
                reader.close()

    try:
        final = reader("fetchrow", "select status, completed_domains, failed_domains, total_domains, error, "
                       "batch_metadata - 'domain_results' - 'domain_statuses' as metadata, "
                       "jsonb_typeof(batch_metadata->'domain_results') as entries_type, "
                       "case jsonb_typeof(batch_metadata->'domain_results') "
                       "when 'object' then (select count(*) from jsonb_object_keys(batch_metadata->'domain_results')) "
                       "when 'array' then jsonb_array_length(batch_metadata->'domain_results') end as entries "
                       "from batch_jobs where batch_id = $1", batch_id)
        rows = reader("fetch", "select domain, outcome from domain_results where batch_id = $1", batch_id)
        for event in events:
            later = sorted(datetime.fromisoformat(at) for at in released_seen if at
                           and datetime.fromisoformat(at) > event.wall)
            event.released = later[0] if later else None
            since = event.released or event.wall
            event.first_outcome = reader("fetchval", "select min(updated_at) from domain_results where batch_id = $1 "
                                         "and outcome is not null and updated_at > $2", batch_id, since)
    finally:
        reader.close()
    try:
        runs, said_by_runs = _prefect_runs(f"{scratch_database.rsplit('/', 1)[0]}/{name}_prefect")
    except Exception as exc:  # the figures only
        runs, said_by_runs = [], []
        print(f"soak-up: could not read the Prefect database: {type(exc).__name__}: {exc}")

    # -- the figures ------------------------------------------------------------------
    metadata = json.loads(final["metadata"]) if final and final["metadata"] else {}
    outcomes = {row["domain"]: json.loads(row["outcome"]) if isinstance(row["outcome"], str) else row["outcome"]
                for row in rows}
    by_kind = Counter((o or {}).get("status", "none") + (f"/{o['error_type']}" if o and o.get("error_type") else "")
                      for o in outcomes.values())
    print(f"\nsoak-up: {len(domains)} domains through `scrapersky up`; up ready in "
          f"{', '.join(f'{s:.1f}' for s in starts)} s; batch {batch_id} ended {final['status']} "
          f"{ended - submitted:.1f} s after its submission ({final['completed_domains']} completed, "
          f"{final['failed_domains']} failed of {final['total_domains']}); {sum(final_hits.values())} requests")
    print(f"soak-up: outcomes by status/error_type: {dict(sorted(by_kind.items()))}")
    print(f"soak-up: peak RSS of up's tree {sampler.peak / 2**20:.0f} MB ({sampler.samples} samples): "
          f"{sampler.described()}; the flow runs' own trees (flow run + worker processes) peaked at "
          f"{sampler.flow_peak / 2**20:.0f} MB")
    for event in events:
        def after(moment: datetime | None) -> str:
            return "never" if moment is None else f"{(moment - event.wall).total_seconds():.1f} s"
        print(f"soak-up: {event.action} at {event.at - submitted:.1f} s ({event.saved} outcomes saved, run "
              f"{event.owner}; {event.detail}): released after {after(event.released)}, a new run "
              f"({event.new_owner}) processing after "
              f"{'never' if event.new_run_at is None else f'{event.new_run_at - event.at:.1f} s'}, first new "
              f"outcome saved after {after(event.first_outcome)}" + (f"; {event.notes}" if event.notes else ""))
    print(f"soak-up: runs of the batch: {len(owners)} owners seen {[(o, round(t, 1)) for o, t in owners]}; "
          f"generation {metadata.get('generation')}, recovery {metadata.get('recovery')}, "
          f"released {metadata.get('released')}")
    batch_runs = [(r["name"], r["state"], r["generation"]) for r in runs if r["deployment"] == "batch-scrape"]
    recovery_runs = Counter((r["state"], "scheduled" if r["auto_scheduled"] else "asked")
                            for r in runs if r["deployment"] == "recover-stale-batches")
    print(f"soak-up: Prefect's batch-scrape runs {batch_runs}; recover-stale-batches runs {dict(recovery_runs)}")
    for event in events:
        again = Counter(f"{domains[d]}: {status}" for d, status in event.recorded.items()
                        if final_hits[d] != event.hits[d])
        print(f"soak-up: recorded before the {event.action} at {event.at - submitted:.1f} s "
              f"{dict(Counter(event.recorded.values()))}; fetched again afterwards: {sum(again.values())} "
              f"{dict(again)}")
    print("soak-up: what the runs said (Prefect's log, warnings and stops; first lines):\n  " + "\n  ".join(
        f"{r['timestamp']:%H:%M:%S} {r['name']} {' | '.join(r['message'].splitlines()[:2])[:240]}"
        for r in said_by_runs[:40]))
    for n in (1, 2):
        said = home / f"up-{n}.err"
        if said.exists():
            print(f"soak-up: up #{n} said:\n  " + "\n  ".join(said.read_text(errors="replace").splitlines()[-40:]))
    print(f"soak-up: logs under {prefect_home / 'scrapersky-up'} (the first up's in {home / 'up-1-logs'})")

    # -- what is proved ---------------------------------------------------------------
    if [event.action for event in events] != [action for _, action in UP_EVENTS]:
        problems.append(f"not every kill or stop happened: {[event.action for event in events]}")
    if final["status"] not in ("completed", "partial"):
        problems.append(f"the batch ended {final['status']}: {final['error']}")
    missing = set(domains) - set(outcomes)
    unknown = sorted(domain for domain, outcome in outcomes.items() if not outcome)
    if missing or unknown or len(outcomes) != len(domains) or set(outcomes) != set(domains):
        problems.append(f"not one outcome a domain: {len(outcomes)} rows, {len(missing)} domains without a row "
                        f"{sorted(missing)[:10]}, {len(unknown)} rows without an outcome {unknown[:10]}")
    if final["status"] in FINAL and final["entries"] != len(domains):
        problems.append(f"batch_metadata.domain_results has {final['entries']} entries ({final['entries_type']})")
    wrong = {}
    for domain, kind in domains.items():
        outcome = outcomes.get(domain) or {}
        expected = ("failed", KINDS[kind][1]) if KINDS[kind][1] else ("completed", None)
        if (outcome.get("status"), outcome.get("error_type")) != expected:
            wrong[domain] = (outcome.get("status"), outcome.get("error_type"), (outcome.get("error") or "")[:120])
    if wrong:
        problems.append(f"{len(wrong)} domains ended otherwise than their kind says: {dict(list(wrong.items())[:15])}")
    for event in events:
        again = {d: (status, event.hits[d], final_hits[d]) for d, status in event.recorded.items()
                 if final_hits[d] != event.hits[d]}
        if again:
            problems.append(f"{len(again)} of the {len(event.recorded)} domains recorded before the {event.action} "
                            f"at {event.at - submitted:.1f} s were fetched again (saved status then, hits then, "
                            f"at the end): {dict(list(again.items())[:8])}; by kind and status: "
                            f"{dict(Counter(f'{domains[d]}: {entry[0]}' for d, entry in again.items()))}")
    if sampler.flow_peak >= PEAK_RSS_LIMIT:
        problems.append(f"peak RSS of the flow runs' trees {sampler.flow_peak / 2**20:.0f} MB >= "
                        f"{PEAK_RSS_LIMIT / 2**20:.0f} MB (up's whole tree at its peak: {sampler.described()})")
    assert not problems, "\n".join(problems)
