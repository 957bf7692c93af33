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

from scrapersky.settings import Settings

from scrapersky.db.batches import get_batch_status
from scrapersky.batch import DEFAULT_TENANT_ID, BatchOptions, BatchRequest, BatchStatus
from scrapersky.farm import Farm


def status_of(batch_id: uuid.UUID):
    async def read():
        async with Settings().database().session() as session:
            return await get_batch_status(session, batch_id, DEFAULT_TENANT_ID)

    return asyncio.run(read())


def test_a_foreground_scrape_stopped_by_its_user_saves_what_it_knows_ends_cancelled_and_resumes(
    prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README, "When a run stops": `scrape` stopped with SIGTERM (as Ctrl-C) saves every
    outcome it knows, ends the batch ``cancelled`` within ten seconds, and the same command
    with --batch-id finishes it without fetching a recorded domain again."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'sigterm.db'}"
    monkeypatch.setenv("DATABASE_URL", database)
    batch_id = uuid.uuid4()
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=database)
    domains = [f"slowheaders-{i}.test" for i in range(6)]  # each answers after 5 s; two at a time
    log = (tmp_path / "scrape.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapersky.cli", "scrape", *domains, "--batch-id", str(batch_id),
         "--concurrency", "2", "--read-timeout", "10", "--retries", "0"],
        env=env, stdout=log, stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while sum(farm.hits.values()) < 4:  # two answered, two more under way
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        assert status_of(batch_id).status == "processing"
        time.sleep(0.5)  # the first two outcomes are known to the run (their answers came at 5 s)

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while status_of(batch_id).status == "processing" and time.monotonic() - signalled < 10:
            time.sleep(0.2)
        report = status_of(batch_id)
        assert report.status == "cancelled", report
        assert "stopped by its user (SIGTERM)" in report.error and "--batch-id" in report.error
        assert report.end_time is not None
        done = {d for d, entry in report.domain_statuses.items() if entry.get("status") == "completed"}
        assert len(done) >= 2 and report.completed_domains == len(done), report  # known, hence saved
    finally:
        process.kill()
        process.wait()

    hits_before = farm.hits.copy()
    resumed = subprocess.run([sys.executable, "-m", "scrapersky.cli", "scrape", "--batch-id", str(batch_id),
                              "--concurrency", "2", "--read-timeout", "10", "--retries", "0"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    report = status_of(batch_id)
    assert (report.status, report.completed_domains, report.total_domains) == ("completed", 6, 6), report
    assert all(farm.hits[d] == hits_before[d] for d in done)  # nothing saved was fetched again


@pytest.mark.usefixtures("prefect_api")
def test_the_database_gone_for_ten_seconds_at_persist_time_loses_nothing(
    postgres_url: str, pooled_url: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pooled_url: the session database with its schema in place.
    from pgbouncer import PgBouncer

    from scrapersky.flows.batch_scrape import batch_scrape

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
        state = batch_scrape(BatchRequest(domains=domains, options=BatchOptions(concurrency=16, read_timeout=10)),
                             return_state=True)
        saboteur.join(timeout=30)

        assert outage["up"] - outage["down"] >= 10
        assert state.is_completed(), state
        report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
        assert (report.status, report.completed_domains, len(report.domain_statuses)) == ("completed", 48, 48)
        assert report.end_time.timestamp() >= time.time() - (time.monotonic() - outage["up"]) - 1


def kill_halfway(prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch, *,
                 domains: list[str], fetched: int) -> tuple[uuid.UUID, set[str]]:
    """Run a batch in a process of its own and SIGKILL it once ``fetched`` pages were
    served and some progress was saved; the batch id and the domains saved by then."""
    import sqlite3

    path = tmp_path / "killed.db"
    database = f"sqlite+aiosqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", database)
    batch_id = uuid.uuid4()
    log = (tmp_path / "scrape.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "scrapersky.cli", "scrape", *domains, "--batch-id", str(batch_id), "--concurrency", "4"],
        env=dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=database), stdout=log, stderr=log,
    )

    def saved() -> set[str]:
        try:
            with sqlite3.connect(path) as db:
                return {d for (d,) in db.execute("SELECT domain FROM domain_results WHERE outcome IS NOT NULL")}
        except sqlite3.OperationalError:
            return set()

    try:
        deadline = time.monotonic() + 180
        while sum(farm.hits.values()) < fetched or not saved():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    recorded = saved()
    assert 0 < len(recorded) < len(domains)
    assert status_of(batch_id).status == "processing"  # SIGKILL: no hook could run
    assert status_of(batch_id).completed_domains > 0  # counts moved while it ran
    return batch_id, recorded


@pytest.mark.parametrize("fan_out", ["task per domain", "sub-batches"])
def test_sigkill_halfway_then_the_recovery_flow_fetches_nothing_recorded_again(
    fan_out: str, prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    if fan_out == "sub-batches":  # two worker processes, sub-batches of 25
        monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "50")
        monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", "processes")
        monkeypatch.setenv("SCRAPERSKY_WORKERS", "2")
    else:
        monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "1000")
    domains = [f"delay-{i}.test" for i in range(300)]
    batch_id, recorded = kill_halfway(prefect_api, farm, tmp_path, monkeypatch, domains=domains, fetched=150)
    time.sleep(1.0)  # what was in flight at the kill ends; nothing starts after it
    fetched_before = farm.hits.copy()
    time.sleep(1.5)
    assert farm.hits == fetched_before  # no orphaned worker goes on fetching

    # One pass of the recovery flow, once the killed batch is stale.
    time.sleep(2.5)
    summary = recover_stale_batches(stale_after=2)
    assert summary == {"resumed": [str(batch_id)], "failed": [], "cancelled": []}

    report = status_of(batch_id)
    assert (report.status, report.completed_domains, report.total_domains) == ("completed", 300, 300)
    assert all(farm.hits[d] == 1 for d in recorded)  # nothing recorded was fetched again
    refetched = [d for d in domains if farm.hits[d] > 1]
    assert all(fetched_before[d] == 1 for d in refetched)
    if fan_out == "task per domain":
        # only what was in flight at the kill: at most the concurrency limit (4)
        assert len(refetched) <= 4, refetched
    else:
        # what was in flight (two workers: 2 fetch threads and one domain waiting each),
        # and what finished after the last progress save began: its interval (3 s) and
        # the save's own round trip (a task run, the database, the artifact: up to 2 s on
        # a loaded machine), while every slot goes on at 4 / 0.2 s. Far below the 150
        # fetched before the kill: saves happen as the batch runs.
        assert len(refetched) <= 2 * (2 + 1) + (3 + 2) * 4 / 0.2, refetched


def insert_batch(batch_id: uuid.UUID, *, flow_run_id: str, metadata: dict | None = None, age: float = 0.0) -> None:
    from datetime import timedelta

    from scrapersky.db.models import BatchJob, DomainResult
    from scrapersky.batch import utcnow

    async def insert() -> None:
        async with Settings().database().session() as session:
            session.add(BatchJob(
                batch_id=batch_id, tenant_id=DEFAULT_TENANT_ID, processor_type="domain_metadata", status="running",
                batch_metadata={"flow_run_id": flow_run_id, **(metadata or {})}, options={},
                total_domains=1, updated_at=utcnow() - timedelta(seconds=age), start_time=utcnow(),
            ))
            # Its domain, recorded as every batch of ours records its domains.
            session.add(DomainResult(batch_id=batch_id, domain="ok-1.test"))

    asyncio.run(insert())


def test_recovery_resumes_a_vanished_run_fails_a_hopeless_one_and_leaves_a_live_one_alone(
    prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client

    from scrapersky.flows.batch_scrape import batch_scrape
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    domains = [f"delay-{i}.test" for i in range(120)]
    vanished, recorded = kill_halfway(prefect_api, farm, tmp_path, monkeypatch, domains=domains, fetched=40)
    killed_run = status_of(vanished).metadata["flow_run_id"]

    # A batch another run is moving right now, and one recovered too often already.
    live, hopeless = uuid.uuid4(), uuid.uuid4()
    insert_batch(live, flow_run_id=str(uuid.uuid4()))
    insert_batch(hopeless, flow_run_id=str(uuid.uuid4()), metadata={"recovery": {"attempts": 3}}, age=600)

    # One batch, one run: the live batch cannot be started again.
    refused = batch_scrape(BatchRequest(domains=["ok-1.test"], batch_id=live), return_state=True)
    assert refused.is_failed() and "one batch, one run" in refused.message
    assert (status_of(live).status, status_of(live).error) == ("processing", None)

    time.sleep(3)  # the killed batch is now older than stale_after=2 ...

    async def touch(batch_id: uuid.UUID) -> None:  # ... and the live one keeps moving
        from sqlalchemy import update

        from scrapersky.db.models import BatchJob
        from scrapersky.batch import utcnow

        async with Settings().database().session() as session:
            await session.execute(update(BatchJob).where(BatchJob.batch_id == batch_id).values(updated_at=utcnow()))

    asyncio.run(touch(live))
    summary = recover_stale_batches(stale_after=2)

    assert summary == {"resumed": [str(vanished)], "failed": [str(hopeless)], "cancelled": []}
    report = status_of(vanished)
    assert (report.status, report.completed_domains) == ("completed", 120)
    assert report.metadata["recovery"]["attempts"] == 1
    assert all(farm.hits[d] == 1 for d in recorded)  # nothing recorded was fetched again
    assert status_of(hopeless).status == "failed" and "gave up after 4 runs of the batch died" in status_of(hopeless).error
    assert status_of(live).status == "processing" and "recovery" not in status_of(live).metadata

    async def killed_state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(uuid.UUID(killed_run))).state.type.value

    assert asyncio.run(killed_state()) == "CRASHED"  # Prefect no longer shows it running


@pytest.fixture
def served(prefect_api: str, farm: Farm, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """batch-scrape served by Prefect's runner in a process of its own (as in production,
    where the runner supervises each flow run's process); yields (deployment id, server pid)."""
    from prefect.client.orchestration import get_client

    database = f"sqlite+aiosqlite:///{tmp_path / 'served.db'}"
    monkeypatch.setenv("DATABASE_URL", database)
    name = f"reliability-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=database, PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "serve_batch_scrape.py"), name],
                              env=env, stdout=log, stderr=log)

    async def deployment_id() -> uuid.UUID:
        async with get_client() as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    return (await client.read_deployment_by_name(f"batch-scrape/{name}")).id
                except Exception:
                    assert time.monotonic() < deadline and server.poll() is None
                    await asyncio.sleep(0.5)

    try:
        yield asyncio.run(deployment_id()), server.pid
    finally:
        server.kill()
        server.wait()


def start_served_batch(deployment_id: uuid.UUID, farm: Farm, domains: list[str] | None = None,
                       concurrency: int = 2) -> tuple[uuid.UUID, uuid.UUID]:
    from prefect.client.orchestration import get_client

    batch_id = uuid.uuid4()

    async def start() -> uuid.UUID:
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(deployment_id, parameters={"batch": {
                "domains": domains or [f"slowheaders-{i}.test" for i in range(20)], "batch_id": str(batch_id),
                "options": {"concurrency": concurrency, "read_timeout": 10},
            }})
            return run.id

    flow_run_id = asyncio.run(start())
    deadline = time.monotonic() + 90
    while sum(farm.hits.values()) == 0:  # the run's first fetches arrived
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return batch_id, flow_run_id


def wait_for_end(batch_id: uuid.UUID, seconds: float):
    deadline = time.monotonic() + seconds
    while status_of(batch_id).status == "processing" and time.monotonic() < deadline:
        time.sleep(0.3)
    return status_of(batch_id)


def test_a_run_cancelled_through_the_api_marks_its_batch_cancelled(served, farm: Farm) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    deployment_id, _ = served
    batch_id, flow_run_id = start_served_batch(deployment_id, farm)

    async def cancel() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(flow_run_id, Cancelling())

    asyncio.run(cancel())
    report = wait_for_end(batch_id, 30)
    assert report.status == "cancelled", report
    assert str(flow_run_id) in report.error and "cancel" in report.error.lower()


def test_sigkill_of_a_served_run_releases_its_batch_and_its_next_run_finishes_it(served, farm: Farm) -> None:
    """The flow's process killed alone (its runner lives): the batch is not failed. The
    runner's crash hook releases it and asks for its next run, which the runner takes;
    the batch ends ``completed``, nothing saved before the kill fetched again."""
    deployment_id, server_pid = served
    domains = [f"delay-served-{i}.test" for i in range(60)]  # 0.2 s each, one at a time
    batch_id, flow_run_id = start_served_batch(deployment_id, farm, domains, concurrency=1)
    deadline = time.monotonic() + 60
    while status_of(batch_id).completed_domains < 5:  # some outcomes saved before the kill
        assert time.monotonic() < deadline
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
    flow_processes = [int(pid) for pid in children if "spawn_main" in open(f"/proc/{pid}/cmdline").read()]
    assert len(flow_processes) == 1
    saved = {d for d, e in status_of(batch_id).domain_statuses.items() if e.get("status") == "completed"}
    os.kill(flow_processes[0], signal.SIGKILL)
    hits_at_kill = farm.hits.copy()

    deadline = time.monotonic() + 120
    while not BatchStatus(status_of(batch_id).status).is_final:
        assert time.monotonic() < deadline, status_of(batch_id)
        time.sleep(0.3)
    report = status_of(batch_id)
    assert (report.status, report.completed_domains, report.total_domains) == ("completed", 60, 60), report
    assert report.metadata["recovery"]["attempts"] == 1
    assert report.metadata["generation"] == 1 and report.metadata["flow_run_id"] != str(flow_run_id)
    assert all(farm.hits[d] == hits_at_kill[d] for d in saved)  # nothing saved was fetched again
