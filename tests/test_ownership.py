"""Who may write a batch: one row per batch id even under concurrent submits, a
resubmission never fails another run's batch, a tenant never ends another tenant's
batch, a refused run says so, and a password never shows."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from scrapersky.batch import BatchOptions
from scrapersky.db import batches
from scrapersky.db.batches import NewBatch
from scrapersky.db.engine import Database
from scrapersky.db.schema import checked_schema
from scrapersky.domains import plan_domains
from scrapersky.errors import BatchAlreadyRunning, SubmitFailed
from scrapersky.settings import Settings

SCRAPERSKY_TABLE = Path(__file__).with_name("scrapersky_batch_jobs.sql").read_text()
TENANT_A = uuid.UUID("aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa")
TENANT_B = uuid.UUID("bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb")


def new_batch(batch_id: uuid.UUID, tenant_id: uuid.UUID = TENANT_A, domains: list[str] | None = None) -> NewBatch:
    plan = plan_domains(domains or ["ok-1.test", "ok-2.test"], max_batch_size=1000)
    return NewBatch.of(batch_id, tenant_id, plan, BatchOptions())


async def register(database: Database, batch: NewBatch) -> bool:
    async with database.session() as session:
        return await batches.register_batch(session, batch, schema=await checked_schema(session))


async def open_(database: Database, batch: NewBatch, flow_run_id: str, stale_after: float = 900.0) -> set[str]:
    async with database.session() as session:
        return await batches.open_batch(
            session, batch, flow_run_id=flow_run_id, schema=await checked_schema(session), stale_after=stale_after
        )


def scrapersky(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scrapersky.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


# 5. Concurrent submits of one batch id on ScraperSky's table (batch_id not unique).

def test_concurrent_register_and_open_of_one_id_make_one_row(scratch_database: str) -> None:
    async def setup() -> None:
        connection = await asyncpg.connect(scratch_database)
        try:
            await connection.execute(SCRAPERSKY_TABLE)
        finally:
            await connection.close()
        await Database(scratch_database).init_schema()  # domain_results; batch_jobs kept as it is

    asyncio.run(setup())

    async def race(batch_id: uuid.UUID) -> list[object]:
        work = []
        for i in range(12):
            database = Database(scratch_database)  # an engine (a connection) each
            if i % 3 == 0:
                work.append(open_(database, new_batch(batch_id), flow_run_id=f"run-{i}"))
            else:
                work.append(register(database, new_batch(batch_id)))
        return await asyncio.gather(*work, return_exceptions=True)

    async def rows(batch_id: uuid.UUID) -> int:
        connection = await asyncpg.connect(scratch_database)
        try:
            return await connection.fetchval("SELECT count(*) FROM batch_jobs WHERE batch_id = $1", batch_id)
        finally:
            await connection.close()

    for _ in range(4):
        batch_id = uuid.uuid4()
        results = asyncio.run(race(batch_id))
        unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BatchAlreadyRunning)]
        assert not unexpected, unexpected
        assert asyncio.run(rows(batch_id)) == 1
        assert sum(1 for r in results if r is True) <= 1  # one submission created it


# 6. A resubmission never fails a batch it did not create.

@pytest.fixture
def sqlite_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path / 'batches.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    asyncio.run(Database(url).init_schema())
    return Settings(database_url=url)


def status(settings: Settings, batch_id: uuid.UUID, tenant_id: uuid.UUID = TENANT_A) -> batches.BatchStatusReport:
    return settings.database().run(lambda session: batches.get_batch_status(session, batch_id, tenant_id))


def test_a_resubmission_whose_trigger_fails_never_fails_the_batch(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scrapersky.client
    from scrapersky.client import submit_batch

    async def unreachable(deployment, request, **lane):
        raise RuntimeError("Prefect API unreachable")

    monkeypatch.setattr(scrapersky.client, "_trigger", unreachable)
    database = sqlite_settings.database()

    # A batch another run is working on, submitted again: refused, untouched.
    running = uuid.uuid4()
    asyncio.run(open_(database, new_batch(running), flow_run_id="the-live-run"))
    with pytest.raises(SubmitFailed):
        asyncio.run(submit_batch(["ok-1.test"], TENANT_A, batch_id=running, settings=sqlite_settings))
    report = status(sqlite_settings, running)
    assert (report.status, report.error) == ("processing", None)

    # A pending batch submitted earlier (its run not started yet), submitted again: still pending.
    pending = uuid.uuid4()
    asyncio.run(register(database, new_batch(pending)))
    with pytest.raises(SubmitFailed):
        asyncio.run(submit_batch(["ok-1.test"], TENANT_A, batch_id=pending, settings=sqlite_settings))
    assert (status(sqlite_settings, pending).status, status(sqlite_settings, pending).error) == ("pending", None)

    # The submission that created the row, adopted by a run before the trigger failed: not failed.
    adopted = uuid.uuid4()

    async def adopt_then_fail(deployment, request, **lane):
        await open_(database, new_batch(adopted), flow_run_id="an-adopting-run")
        raise RuntimeError("Prefect API unreachable")

    monkeypatch.setattr(scrapersky.client, "_trigger", adopt_then_fail)
    with pytest.raises(SubmitFailed):
        asyncio.run(submit_batch(["ok-1.test"], TENANT_A, batch_id=adopted, settings=sqlite_settings))
    assert status(sqlite_settings, adopted).status == "processing"

    # The submission that created the row, nobody running it: failed, with the reason.
    monkeypatch.setattr(scrapersky.client, "_trigger", unreachable)
    fresh = uuid.uuid4()
    with pytest.raises(SubmitFailed):
        asyncio.run(submit_batch(["ok-1.test"], TENANT_A, batch_id=fresh, settings=sqlite_settings))
    report = status(sqlite_settings, fresh)
    assert report.status == "failed" and "Prefect API unreachable" in report.error


# 7. A run of one tenant never ends another tenant's batch.

def test_end_batch_refuses_another_tenants_batch(sqlite_settings: Settings) -> None:
    database = sqlite_settings.database()
    batch_id = uuid.uuid4()
    asyncio.run(register(database, new_batch(batch_id, TENANT_B)))
    changed = database.run(lambda session: batches.end_batch(
        session, batch_id=batch_id, tenant_id=TENANT_A, status="failed", error="not yours"))
    assert changed is False
    assert (status(sqlite_settings, batch_id, TENANT_B).status, status(sqlite_settings, batch_id, TENANT_B).error) == (
        "pending", None)


@pytest.mark.usefixtures("prefect_api")
def test_a_run_with_another_tenants_batch_id_leaves_that_batch_alone(sqlite_settings: Settings) -> None:
    from scrapersky.batch import BatchRequest
    from scrapersky.flows.batch_scrape import batch_scrape

    batch_id = uuid.uuid4()
    asyncio.run(register(sqlite_settings.database(), new_batch(batch_id, TENANT_B)))
    state = batch_scrape(BatchRequest(domains=["ok-1.test"], tenant_id=TENANT_A, batch_id=batch_id), return_state=True)
    assert state.is_failed()
    report = status(sqlite_settings, batch_id, TENANT_B)
    assert (report.status, report.error) == ("pending", None)


# 8. A refused concurrent run fails loudly.

def test_scrape_of_a_batch_another_live_run_owns_exits_2_with_batch_running(
    prefect_api: str, sqlite_settings: Settings
) -> None:
    batch_id = uuid.uuid4()
    asyncio.run(open_(sqlite_settings.database(), new_batch(batch_id, TENANT_A, [f"ok-{i}.test" for i in range(100)]),
                      flow_run_id=str(uuid.uuid4())))
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=sqlite_settings.database_url,
               SCRAPERSKY_TENANT_ID=str(TENANT_A))
    env.pop("PREFECT_LOGGING_LEVEL", None)  # the CLI's own default, as users run it
    result = scrapersky(env, "scrape", "ok-1.test", "--batch-id", str(batch_id))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "batch_running" in lines[0] and str(batch_id) in lines[0], result.stderr
    assert "running" not in result.stdout and "of 100" not in result.stdout
    report = status(sqlite_settings, batch_id)
    assert (report.status, report.error) == ("processing", None)


# 15. A password given as a query parameter is masked too.

QUERY_PASSWORD = "s3cret"


def test_a_password_in_the_query_string_never_shows(prefect_api: str) -> None:
    url = f"postgresql://u@127.0.0.1:1/x?password={QUERY_PASSWORD}"
    assert QUERY_PASSWORD not in Database(url).where
    assert QUERY_PASSWORD not in repr(Database(url))
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=url)
    for args in (["db", "init"], ["db", "check"], ["status", str(uuid.uuid4())], ["submit", "ok-1.test"],
                 ["doctor"]):
        result = scrapersky(env, *args)
        assert result.returncode != 0, args
        seen = result.stdout + result.stderr
        assert "127.0.0.1:1/x" in seen, (args, seen)  # the URL is shown ...
        assert QUERY_PASSWORD not in seen, (args, seen)  # ... masked
        assert "Traceback" not in result.stderr, (args, result.stderr)


# 4. A healthy batch stays owned; a run whose batch was taken over cannot write.

@pytest.mark.usefixtures("prefect_api")
def test_a_batch_slower_than_stale_after_a_fetch_stays_owned(
    sqlite_settings: Settings, farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from scrapersky.batch import BatchRequest
    from scrapersky.flows.batch_scrape import batch_scrape

    monkeypatch.setenv("SCRAPERSKY_STALE_AFTER", "2")  # the operator's setting: a fetch takes 5 s
    batch_id = uuid.uuid4()
    seen_stale: list[list[uuid.UUID]] = []

    def look_while_it_runs() -> None:
        deadline = time.monotonic() + 60
        while sum(farm.hits.values()) == 0 and time.monotonic() < deadline:  # the first fetch is under way
            time.sleep(0.1)
        for _ in range(3):  # 3.5 s, 5 s, 6.5 s in: no outcome saved yet, longer than stale_after
            time.sleep(1.5 if seen_stale else 3.5)
            found = sqlite_settings.database().run(lambda session: batches.recovery_candidates(session, stale_after=2))
            seen_stale.append([b.batch_id for b in found if b.stale])

    looker = threading.Thread(target=look_while_it_runs)
    looker.start()
    state = batch_scrape(BatchRequest(
        domains=["slowheaders-1.test", "slowheaders-2.test"], tenant_id=TENANT_A, batch_id=batch_id,
        options=BatchOptions(concurrency=1, retries=0, read_timeout=10),
    ), return_state=True)
    looker.join()
    assert state.is_completed(), state.message
    assert seen_stale == [[], [], []]  # recovery would have found nothing stale
    assert status(sqlite_settings, batch_id).status == "completed"


def test_a_run_whose_batch_was_taken_over_cannot_write(database: str) -> None:
    from scrapersky.batch import DomainOutcome, DomainStatus

    db = Database(database)
    batch_id = uuid.uuid4()
    batch = new_batch(batch_id)
    outcome = [DomainOutcome(domain="ok-1.test", status=DomainStatus.COMPLETED, metadata={"title": "late"})]
    asyncio.run(open_(db, batch, flow_run_id="old-run"))

    def writes_of(run: str) -> dict[str, object]:
        refused: dict[str, object] = {}
        for name, write in {
            "save_progress": lambda s: batches.save_progress(
                s, batch_id=batch_id, tenant_id=TENANT_A, flow_run_id=run, outcomes=outcome),
            "record_outcomes": lambda s: batches.record_outcomes(
                s, batch_id=batch_id, tenant_id=TENANT_A, flow_run_id=run, outcomes=outcome),
        }.items():
            with pytest.raises(BatchAlreadyRunning):
                db.run(write)
            refused[name] = True
        refused["end_batch"] = db.run(lambda s: batches.end_batch(
            s, batch_id=batch_id, tenant_id=TENANT_A, status="failed", error="late hook", flow_run_id=run))
        refused["heartbeat"] = db.run(lambda s: batches.heartbeat(
            s, batch_id=batch_id, tenant_id=TENANT_A, flow_run_id=run))
        return refused

    # A recovery takes the batch away (nobody owns it) ... the old run may not write.
    seen = next(c for c in db.run(lambda s: batches.recovery_candidates(s, stale_after=0)) if c.batch_id == batch_id)
    assert db.run(lambda s: batches.take_over(s, seen=seen, reason="stale", crashed=True)) == 1
    assert writes_of("old-run") == {"save_progress": True, "record_outcomes": True, "end_batch": False,
                                    "heartbeat": False}
    # ... and once the recovery's run owns it, neither.
    asyncio.run(open_(db, batch, flow_run_id="new-run"))
    assert writes_of("old-run")["end_batch"] is False
    report = db.run(lambda s: batches.get_batch_status(s, batch_id, TENANT_A))
    assert (report.status, report.error, report.completed_domains) == ("processing", None, 0)
    assert all(entry.get("status") != "completed" for entry in report.domain_statuses.values())
    assert report.metadata["flow_run_id"] == "new-run"
    # The owner writes as before.
    assert db.run(lambda s: batches.heartbeat(s, batch_id=batch_id, tenant_id=TENANT_A, flow_run_id="new-run"))
    db.run(lambda s: batches.record_outcomes(
        s, batch_id=batch_id, tenant_id=TENANT_A, flow_run_id="new-run", outcomes=outcome))
    assert db.run(lambda s: batches.get_batch_status(s, batch_id, TENANT_A)).completed_domains == 1
