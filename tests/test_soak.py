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

It takes minutes, not seconds: marked `soak`, deselected by default, run by `make soak`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
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
