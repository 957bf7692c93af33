"""One `scrapersky up` (its Prefect server on PostgreSQL) under a crowd, then with its
worker killed.

A crowd: 50 submissions of 5 farm domains each at the same moment, each from a thread
with a client of its own, as 50 dashboards would. On SQLite the Prefect server answered
some of them 503 "database is locked"; here every answer is 200 (or 429 with
Retry-After, resubmitted after it), none 5xx, and every batch ends completed. The
answers by status, their median and p95 latency, and the peak of PostgreSQL connections
to our database (sampled every 0.5 s from a connection of its own) are printed: no
bound on the peak is asserted yet.

A killed worker: SIGKILL of `up`'s Prefect worker while a batch of slow farm domains
runs; `up` keeps running, says so in one line, stops the flow run the worker left (it
releases its batch), starts a worker under a new name, which comes online within 60 s,
and asks for a recovery run, which resumes the batch to its end: every domain one
outcome.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import psutil
import pytest

from scrapersky.farm import Farm
from up_process import Up, running_up

CROWD = 50
DOMAINS_EACH = 5
REQUEST_TIMEOUT = 60  # s, each submission
CROWD_DEADLINE = 300  # s, for every batch of the crowd to end
RESUBMITS = 10  # a 429's resubmissions, each after its Retry-After
SLOW_LATENCY = 1.5  # s before each site-<i> page of the farm


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, prefect_postgres_template: str) -> Iterator[Up]:
    with Farm(latency=SLOW_LATENCY) as farm, running_up(tmp_path_factory.mktemp("up-crowd"),
                                                        prefect_postgres_template, farm) as stack:
        yield stack


class ConnectionSampler:
    """The connections PostgreSQL counts to each of ``databases``, every 0.5 s from a
    connection of its own, in a thread; the peaks."""

    def __init__(self, admin_url: str, databases: list[str]) -> None:
        self.admin_url = admin_url
        self.databases = databases
        self.peaks = dict.fromkeys(databases, 0)
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), name="pg-sampler", daemon=True)

    async def _sample(self) -> None:
        connection = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            deadline = time.monotonic() + CROWD_DEADLINE + 120
            while not self._done.is_set() and time.monotonic() < deadline:
                rows = await connection.fetch(
                    "select datname, count(*) as n from pg_stat_activity where datname = any($1::text[]) "
                    "group by datname", self.databases)
                for row in rows:
                    self.peaks[row["datname"]] = max(self.peaks[row["datname"]], row["n"])
                self.samples += 1
                await asyncio.sleep(0.5)
        finally:
            await connection.close()

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def _submit(up: Up, index: int, start: threading.Barrier) -> tuple[list[tuple[int, float, str | None]], str | None]:
    """One dashboard: its answers (status, seconds, Retry-After), resubmitting after a
    429's Retry-After; the batch id of the 200, if any."""
    domains = [f"ok-crowd-{index}-{j}.test" for j in range(DOMAINS_EACH)]
    answers: list[tuple[int, float, str | None]] = []
    with up.api(timeout=REQUEST_TIMEOUT) as api:
        start.wait(timeout=60)
        for _ in range(1 + RESUBMITS):
            began = time.monotonic()
            try:
                response = api.post("/batch", json={"domains": domains, "max_concurrent": DOMAINS_EACH})
            except httpx.TimeoutException:
                answers.append((0, time.monotonic() - began, None))  # 0: no answer within REQUEST_TIMEOUT
                return answers, None
            answers.append((response.status_code, time.monotonic() - began, response.headers.get("retry-after")))
            if response.status_code == 200:
                return answers, response.json()["batch_id"]
            if response.status_code != 429 or response.headers.get("retry-after") is None:
                return answers, None
            time.sleep(min(float(response.headers["retry-after"]), 10.0))
    return answers, None


def test_a_crowd_of_50_submissions_is_answered_and_every_batch_completes(up: Up) -> None:
    start = threading.Barrier(CROWD)
    began = time.monotonic()
    with ConnectionSampler(up.admin_url("postgres"), [up.database_name, up.prefect_database_name]) as sampler:
        with ThreadPoolExecutor(max_workers=CROWD, thread_name_prefix="dashboard") as pool:
            results = list(pool.map(lambda i: _submit(up, i, start), range(CROWD)))
        answered = time.monotonic() - began

        answers = [answer for dashboard, _ in results for answer in dashboard]
        first = [dashboard[0] for dashboard, _ in results]
        codes = Counter(code for code, _, _ in answers)
        latencies = sorted(seconds for code, seconds, _ in answers if code)
        p95 = latencies[max(0, round(0.95 * len(latencies)) - 1)] if latencies else float("nan")
        print(f"\ncrowd of {CROWD}: answers by status {dict(sorted(codes.items()))} (first answers "
              f"{dict(sorted(Counter(code for code, _, _ in first).items()))}); latency median "
              f"{statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s; "
              f"all answered in {answered:.1f} s")

        bad = [answer for answer in answers if answer[0] not in (200, 429)]
        assert not bad, f"answers other than 200/429 (0: none within {REQUEST_TIMEOUT} s): {bad}\n{up.logs()}"
        assert all(retry is not None for code, _, retry in answers if code == 429), answers
        batch_ids = [batch_id for _, batch_id in results]
        assert all(batch_ids), "a dashboard got no 200 after its resubmissions"

        pending, finals = set(batch_ids), {}
        with up.api() as api:
            deadline = time.monotonic() + CROWD_DEADLINE
            while pending and time.monotonic() < deadline:
                for batch_id in sorted(pending):
                    body = api.get(f"/batch/{batch_id}/status").json()
                    if body.get("status") in ("completed", "failed"):
                        finals[batch_id] = body
                        pending.discard(batch_id)
                time.sleep(1.0)
        ended = time.monotonic() - began
    print(f"crowd: {len(finals)}/{CROWD} batches final {ended:.1f} s after the first submission; PostgreSQL "
          f"connections at peak (of {sampler.samples} samples): ours {sampler.peaks[up.database_name]}, the Prefect "
          f"server's {sampler.peaks[up.prefect_database_name]}")
    assert not pending, f"{len(pending)} batches not final after {CROWD_DEADLINE} s\n{up.logs()}"
    outcomes = Counter((body["status"], body["completed_domains"], body["failed_domains"]) for body in finals.values())
    assert outcomes == {("completed", DOMAINS_EACH, 0): CROWD}, outcomes


def _online_workers(up: Up) -> dict[str, str]:
    """The pool's workers by name, with their status, as the Prefect server says."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.post(f"{up.ui_url}/api/work_pools/scrapersky/workers/filter", json={})
        response.raise_for_status()
        return {worker["name"]: worker["status"] for worker in response.json()}


def test_a_killed_worker_is_restarted_and_its_batch_completes(up: Up) -> None:
    """Defined after the crowd: the crowd's batches are over."""
    domains = [f"site-{i}.test" for i in range(1, 25)]  # 1.5 s each, 2 at a time: about 18 s of work
    with up.api() as api:
        created = api.post("/batch", json={"domains": domains, "max_concurrent": 2})
        assert created.status_code == 200, created.text
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + 60
        while True:  # running, with outcomes saved
            body = api.get(f"/batch/{batch_id}/status").json()
            if body["completed_domains"] + body["failed_domains"] >= 2:
                break
            assert time.monotonic() < deadline, f"batch not under way after 60 s: {body}\n{up.logs()}"
            time.sleep(0.5)
        assert body["status"] not in ("completed", "failed"), body

        worker = up.part("worker start")
        before = set(_online_workers(up))
        killed = time.monotonic()
        worker.kill()  # SIGKILL: only the worker; its flow run stays, handed to `up`
        worker.wait(timeout=10)

        deadline = killed + 60
        new: set[str] = set()
        while True:
            assert up.process.poll() is None, f"up exited with {up.process.returncode}:\n{up.output()}"
            workers = _online_workers(up)
            new = {name for name, status in workers.items() if name not in before and status == "ONLINE"}
            health = httpx.get(f"{up.api_url}/health", timeout=10).json()
            if new and health["checks"]["worker"]["status"] == "ok":
                break
            assert time.monotonic() < deadline, f"no new worker online 60 s after the kill: {workers}\n{up.output()}"
            time.sleep(0.5)
        online_after = time.monotonic() - killed
        said = up.err.read_text()
        assert "the worker exited with -9: restarting" in said, said
        assert up.part("worker start").pid != worker.pid
        print(f"\na new worker {sorted(new)} online {online_after:.1f} s after the kill")

        final = up.wait_final(api, batch_id, timeout=120)
        print(f"batch final {time.monotonic() - killed:.1f} s after the kill: {final['status']}, "
              f"{final['completed_domains']} completed, {final['failed_domains']} failed; farm hits "
              f"{sorted(Counter(up.farm.hits[d] for d in domains).items())} (times fetched: domains)\n"
              + "\n".join(line for line in said.splitlines() if "worker" in line or "recover" in line))

    async def outcomes() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(up.admin_url(up.database_name))
        try:
            return await connection.fetch("select domain, outcome is not null as known from domain_results "
                                          "where batch_id = $1", uuid.UUID(batch_id))
        finally:
            await connection.close()

    rows = asyncio.run(outcomes())
    assert final["status"] == "completed", f"{final}\n{up.logs()}"
    assert sorted(row["domain"] for row in rows) == sorted(domains)
    assert all(row["known"] for row in rows), [row["domain"] for row in rows if not row["known"]]
    assert (final["completed_domains"], final["failed_domains"]) == (len(domains), 0), final
    assert psutil.pid_exists(up.process.pid)
