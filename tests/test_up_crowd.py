"""One `scrapersky up` (its Prefect server on PostgreSQL) under a crowd: 50 submissions
of 5 farm domains each at the same moment, each from a thread with a client of its own,
as 50 dashboards would. On SQLite the Prefect server answered some of them 503
"database is locked"; here every answer is 200 (or 429 with Retry-After, resubmitted
after it), none 5xx, and every batch is recorded to run. The answers by status, their
median and p95 latency, and the peak of PostgreSQL connections to our database and to
the Prefect server's (sampled every 0.5 s from a connection of its own) are printed;
our process holds one engine with a pool of at most 10 connections.

That every batch of the crowd then ends ``completed`` takes about five minutes on 2
cores (each flow run is a Python process with Prefect imported, four at a time): that
test is marked ``soak`` (`make soak`).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import pytest

from scrapersky.farm import Farm
from up_process import Up, running_up

CROWD = 50
DOMAINS_EACH = 5
REQUEST_TIMEOUT = 60  # s, each submission
CROWD_DEADLINE = 480  # s, for every batch of the crowd to end (about 280 s on 2 cores: 4 runs at a time)
RESUBMITS = 10  # a 429's resubmissions, each after its Retry-After


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, prefect_postgres_template: str) -> Iterator[Up]:
    with Farm() as farm, running_up(tmp_path_factory.mktemp("up-crowd"),
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


def test_a_crowd_of_50_submissions_is_answered_without_a_5xx(up: Up) -> None:
    batch_ids, _ = _crowd(up, drain=False)
    with up.api() as api:
        statuses = Counter(api.get(f"/batch/{batch_id}/status").json()["status"] for batch_id in batch_ids)
    assert set(statuses) <= {"pending", "processing", "completed"}, statuses  # recorded, none refused


@pytest.mark.soak
def test_a_crowd_of_50_submissions_is_answered_and_every_batch_completes(up: Up) -> None:
    _crowd(up, drain=True)


def _crowd(up: Up, *, drain: bool) -> tuple[list[str], dict[str, dict]]:
    """The crowd: every answer checked; with ``drain``, every batch waited for and checked."""
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

        pending, finals = set(batch_ids) if drain else set(), {}
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
    if drain:
        outcomes = Counter((body["status"], body["completed_domains"], body["failed_domains"])
                           for body in finals.values())
        assert outcomes == {("completed", DOMAINS_EACH, 0): CROWD}, outcomes
    return batch_ids, finals


