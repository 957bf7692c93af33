"""Nothing silent, nothing lost: a killed run says so, an outage at persist time loses
nothing. Real processes, real signals, a real pooler that really goes away."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from db.batches import get_batch_status
from db.engine import unit_of_work
from scrapersky.batch import DEFAULT_TENANT_ID, BatchOptions
from scrapersky.farm import Farm


def status_of(batch_id: uuid.UUID):
    async def read():
        async with unit_of_work() as session:
            return await get_batch_status(session, batch_id, DEFAULT_TENANT_ID)

    return asyncio.run(read())


def test_sigterm_marks_the_batch_failed_within_ten_seconds(
    prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'sigterm.db'}"
    monkeypatch.setenv("DATABASE_URL", database)
    batch_id = uuid.uuid4()
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=database)
    domains = [f"slowheaders-{i}.test" for i in range(20)]
    log = (tmp_path / "scrape.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapersky.cli", "scrape", *domains, "--batch-id", str(batch_id),
         "--concurrency", "2", "--read-timeout", "10"],
        env=env, stdout=log, stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while sum(farm.hits.values()) == 0:  # the batch is running: its first fetches arrived
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        assert status_of(batch_id).status == "running"

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while status_of(batch_id).status == "running" and time.monotonic() - signalled < 10:
            time.sleep(0.2)
        report = status_of(batch_id)
        assert report.status == "failed", report
        assert "termination signal" in report.error and "Crashed" in report.error
        assert report.metadata["flow_run_id"] in report.error
        assert report.end_time is not None
    finally:
        process.kill()
        process.wait()


@pytest.mark.usefixtures("prefect_api")
def test_the_database_gone_for_ten_seconds_at_persist_time_loses_nothing(
    postgres_url: str, pooled_url: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pooled_url: the session database with its schema in place.
    from pgbouncer import PgBouncer

    from flows.batch_scrape import batch_scrape

    with PgBouncer() as pooler:  # this test's own pooler: the one it takes away
        monkeypatch.setenv("DATABASE_URL", pooler.url(postgres_url.rsplit("/", 1)[1]))
        outage: dict[str, float] = {}

        def take_the_database_away() -> None:
            while sum(farm.hits.values()) == 0:  # the batch row is open, fetching began
                time.sleep(0.05)
            pooler.stop()
            outage["down"] = time.monotonic()
            time.sleep(10)
            pooler.start()
            outage["up"] = time.monotonic()

        saboteur = threading.Thread(target=take_the_database_away, daemon=True)
        saboteur.start()
        domains = [f"slowheaders-{i}.test" for i in range(8)] + [f"ok-{i}.test" for i in range(40)]
        state = batch_scrape(domains=domains, options=BatchOptions(concurrency=16, read_timeout=10),
                             return_state=True)
        saboteur.join(timeout=30)

        assert outage["up"] - outage["down"] >= 10
        assert state.is_completed(), state
        report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
        assert (report.status, report.completed_domains, len(report.domain_statuses)) == ("completed", 48, 48)
        assert report.end_time.timestamp() >= time.time() - (time.monotonic() - outage["up"]) - 1


def test_sigkill_halfway_then_resume_fetches_nothing_recorded_again(
    prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from flows.batch_scrape import batch_scrape

    path = tmp_path / "killed.db"
    database = f"sqlite+aiosqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", database)
    batch_id = uuid.uuid4()
    domains = [f"delay-{i}.test" for i in range(300)]
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=database)
    log = (tmp_path / "scrape.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapersky.cli", "scrape", *domains, "--batch-id", str(batch_id), "--concurrency", "4"],
        env=env, stdout=log, stderr=log,
    )

    def saved() -> set[str]:
        try:
            with sqlite3.connect(path) as db:
                return {d for (d,) in db.execute("SELECT domain FROM domain_results WHERE outcome IS NOT NULL")}
        except sqlite3.OperationalError:
            return set()

    try:
        deadline = time.monotonic() + 180
        while sum(farm.hits.values()) < 150 or not saved():  # halfway, and progress saved
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    recorded = saved()
    fetched_before = farm.hits.copy()
    assert 0 < len(recorded) < 300
    assert status_of(batch_id).status == "running"  # SIGKILL: no hook could run

    state = batch_scrape(domains=domains, batch_id=batch_id, options=BatchOptions(concurrency=8), return_state=True)

    assert state.is_completed()
    report = status_of(batch_id)
    assert (report.status, report.completed_domains, report.total_domains) == ("completed", 300, 300)
    assert all(farm.hits[d] == 1 for d in recorded)  # nothing recorded was fetched again
    refetched = [d for d in domains if farm.hits[d] > 1]
    # only what was in flight or not yet saved at the kill (at most a few seconds' worth)
    assert all(fetched_before[d] == 1 for d in refetched)
    assert len(refetched) <= len(domains) - len(recorded)
