"""``batch_jobs`` keeps ScraperSky's meanings: what we write reads right to its readers
(progress a 0-1 fraction, ``processing``, ``domain_batch``, ``created_by``, the per-domain
entries under ``batch_metadata.domain_results`` with their keys), and what it wrote
(``complete``, its ``domain_results``) reads right to ours. Checked on its production
table, read back with plain SQL as its code and dashboards read it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from scrapersky.batch import BatchOptions, BatchStatus, DomainOutcome, DomainStatus
from scrapersky.db import batches
from scrapersky.db.batches import NewBatch
from scrapersky.db.engine import Database
from scrapersky.db.schema import checked_schema
from scrapersky.domains import plan_domains
from scrapersky.export import flat_row

SCRAPERSKY_TABLE = Path(__file__).with_name("scrapersky_batch_jobs.sql").read_text()
TENANT = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
USER = uuid.UUID("5905e9fe-6c61-4694-b09a-6602017b000a")


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("pending", BatchStatus.PENDING),
        ("processing", BatchStatus.PROCESSING),
        ("running", BatchStatus.PROCESSING),  # ours, before ScraperSky's words
        ("completed", BatchStatus.COMPLETED),
        ("complete", BatchStatus.COMPLETED),  # ScraperSky's model (update_progress)
        ("partial", BatchStatus.PARTIAL),
        ("failed", BatchStatus.FAILED),
        ("error", BatchStatus.FAILED),  # ScraperSky's service
        ("cancelled", BatchStatus.CANCELLED),
        ("unknown", None),
        (None, None),
    ],
)
def test_stored_status_words_read_as_one_vocabulary(word: str | None, status: BatchStatus | None) -> None:
    assert BatchStatus.read(word) is status


def test_a_domain_entry_carries_scrapersky_keys_beside_ours() -> None:
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    entry = DomainOutcome(
        domain="a.test", status=DomainStatus.FAILED, error="boom", started_at=start,
        finished_at=start + timedelta(seconds=2.5), elapsed_ms=2400,
    ).status_entry()
    assert (entry["status"], entry["error"], entry["processing_time"]) == ("failed", "boom", 2.5)
    assert entry["start_time"] == entry["started_at"] == "2026-01-01T12:00:00Z"
    assert entry["end_time"] == entry["finished_at"] == "2026-01-01T12:00:02.500000Z"
    assert entry["elapsed_ms"] == 2400


async def _sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


@pytest.fixture
def scrapersky_table(scratch_database: str) -> str:
    """ScraperSky's production batch_jobs (and our domain_results beside it)."""
    async def create() -> None:
        connection = await asyncpg.connect(scratch_database)
        try:
            await connection.execute(SCRAPERSKY_TABLE)
        finally:
            await connection.close()

    asyncio.run(create())
    asyncio.run(Database(scratch_database).init_schema())
    return scratch_database


def _outcome(domain: str, status: DomainStatus) -> DomainOutcome:
    now = datetime.now(UTC)
    return DomainOutcome(domain=domain, status=status, started_at=now - timedelta(seconds=1), finished_at=now,
                         error=None if status == DomainStatus.COMPLETED else "http 404")


def test_a_batch_we_write_reads_in_scrapersky_meanings(scrapersky_table: str) -> None:
    url = scrapersky_table
    database = Database(url)
    batch_id = uuid.uuid4()
    domains = ["a.test", "b.test", "c.test", "d.test"]
    batch = NewBatch.of(batch_id, TENANT, plan_domains(domains, max_batch_size=100), BatchOptions(concurrency=7),
                        created_by=USER, extra_options={"max_pages": 50})

    async def row() -> asyncpg.Record:
        found = await _sql(url, "SELECT * FROM batch_jobs WHERE batch_id = $1", batch_id)
        assert len(found) == 1
        return found[0]

    async def story() -> list[asyncpg.Record]:
        seen = []
        async with database.session() as session:
            await batches.register_batch(session, batch, schema=await checked_schema(session))
        seen.append(await row())
        async with database.session() as session:
            await batches.open_batch(session, batch, flow_run_id="run-1", schema=await checked_schema(session))
        async with database.session() as session:
            await batches.save_progress(session, batch_id=batch_id, tenant_id=TENANT, flow_run_id="run-1",
                                        outcomes=[_outcome("a.test", DomainStatus.COMPLETED)])
        seen.append(await row())
        async with database.session() as session:
            await batches.record_outcomes(session, batch_id=batch_id, tenant_id=TENANT, flow_run_id="run-1", outcomes=[
                _outcome("b.test", DomainStatus.COMPLETED), _outcome("c.test", DomainStatus.COMPLETED),
                _outcome("d.test", DomainStatus.FAILED)])
        seen.append(await row())
        return seen

    pending, working, ended = asyncio.run(story())
    assert (pending["status"], pending["processor_type"], pending["created_by"], pending["progress"]) == (
        "pending", "domain_batch", USER, 0.0)
    assert pending["options"] is not None and json.loads(pending["options"])["max_pages"] == 50
    assert (working["status"], working["progress"], working["completed_domains"]) == ("processing", 0.25, 1)
    options = json.loads(working["options"])
    assert (options["max_pages"], options["concurrency"]) == (50, 7)  # the run kept what the submission recorded
    assert (ended["status"], ended["progress"], ended["created_by"]) == ("partial", 1.0, USER)
    assert (ended["completed_domains"], ended["failed_domains"], ended["total_domains"]) == (3, 1, 4)
    # ScraperSky's status endpoint reads batch_metadata["domain_results"], with these keys.
    entries = json.loads(ended["batch_metadata"])["domain_results"]
    assert set(entries) == set(domains)
    for entry in entries.values():
        assert {"status", "start_time", "end_time", "processing_time", "error"} <= set(entry)
        assert entry["processing_time"] == pytest.approx(1.0, abs=0.01)
    assert entries["d.test"]["status"] == "failed" and entries["d.test"]["error"] == "http 404"


def test_rows_scrapersky_wrote_read_right(scrapersky_table: str) -> None:
    url = scrapersky_table
    legacy_entries = {
        "old-1.com": {"status": "completed", "job_id": str(uuid.uuid4()), "start_time": "2025-03-01T10:00:00",
                      "end_time": "2025-03-01T10:00:04", "processing_time": 4.0, "error": None},
        "old-2.com": {"status": "failed", "job_id": None, "start_time": "2025-03-01T10:00:00",
                      "end_time": "2025-03-01T10:00:09", "processing_time": 9.0, "error": "timeout"},
    }
    done, working = uuid.uuid4(), uuid.uuid4()
    insert = (
        "INSERT INTO batch_jobs (id_uuid, tenant_id, processor_type, status, created_by, total_domains,"
        " completed_domains, failed_domains, progress, batch_metadata, options, start_time, end_time,"
        " processing_time, batch_id, batch_id_string) VALUES ($1::uuid, $2, 'domain_batch', $3, $4, $5, $6, $7, $8,"
        " $9::jsonb, $10::jsonb, $11, $12, $13, $1::uuid, $14)"
    )
    start = datetime(2025, 3, 1, 10, 0, 0)

    async def insert_rows() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(insert, done, TENANT, "complete", USER, 2, 1, 1, 1.0,
                                     json.dumps({"domain_results": legacy_entries, "domain_count": 2}),
                                     json.dumps({"max_concurrent": 5}), start, start + timedelta(seconds=9), 9.0, str(done))
            await connection.execute(insert, working, TENANT, "processing", USER, 4, 1, 1, 0.5,
                                     json.dumps({"domain_results": legacy_entries}), json.dumps({}), start, None, None,
                                     str(working))
        finally:
            await connection.close()

    asyncio.run(insert_rows())
    database = Database(url)
    read = lambda batch_id: database.call(lambda s: batches.get_batch_status(s, batch_id, TENANT))  # noqa: E731

    report = asyncio.run(read(done))
    assert (report.status, report.progress, report.created_by, report.processor_type) == (
        "completed", 1.0, USER, "domain_batch")
    assert report.domain_statuses["old-2.com"]["error"] == "timeout"
    assert set(report.domain_statuses) == {"old-1.com", "old-2.com"}
    assert "domain_results" not in report.metadata and report.metadata["domain_count"] == 2
    assert report.start_time == start.replace(tzinfo=UTC)
    row = flat_row("old-2.com", report.domain_statuses["old-2.com"])  # what `export` writes
    assert (row["status"], row["error"], row["started_at"], row["finished_at"]) == (
        "failed", "timeout", "2025-03-01T10:00:00", "2025-03-01T10:00:09")

    report = asyncio.run(read(working))
    assert (report.status, report.progress) == ("processing", 0.5)


#: The seed's one named observation: a batch of the old service, pending for over 11,000 s.
STUCK_SINCE_THE_OLD_BACKEND = uuid.UUID("59ebabe3-68ec-40eb-bdc6-9bed2c0d39f2")
ANOTHER_TENANT = uuid.UUID("3f1e0c2a-8f4b-4a51-9e7a-0d2c6b5a4e31")


def test_recovery_resumes_our_stale_batch_and_ends_or_resumes_rows_the_old_backend_left(
    scrapersky_table: str, prefect_api: str, farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ScraperSky's production table: a batch the API registered (``max_pages`` among
    its options) and lost is resumed; rows ScraperSky's old service left ``pending`` or
    ``processing`` hours ago are never left so: one whose domains the row never recorded
    (shaped like 59ebabe3: ``domain_count`` only) ends ``failed`` with an error a person
    understands; one whose row lists its domains is resumed and completes."""
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    url = scrapersky_table
    monkeypatch.setenv("DATABASE_URL", url)
    ours, theirs, listed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stuck = STUCK_SINCE_THE_OLD_BACKEND
    batch = NewBatch.of(ours, TENANT, plan_domains(["ok-1.test", "ok-2.test"], max_batch_size=10),
                        BatchOptions(retries=0), created_by=USER, extra_options={"max_pages": 1000})

    async def setup() -> None:
        database = Database(url)
        async with database.session() as session:
            await batches.register_batch(session, batch, schema=await checked_schema(session))
        connection = await asyncpg.connect(url)
        try:
            old_row = ("INSERT INTO batch_jobs (id_uuid, tenant_id, processor_type, status, created_by, total_domains,"
                       " progress, batch_metadata, options, batch_id) VALUES ($1::uuid, $2, 'domain_batch', $3, $4, 3,"
                       " 0.0, $5::jsonb, '{\"max_concurrent\": 5}'::jsonb, $1::uuid)")
            await connection.execute(old_row, theirs, TENANT, "processing", USER, '{"domain_count": 3}')
            await connection.execute(old_row, stuck, ANOTHER_TENANT, "pending", USER, '{"domain_count": 3}')
            await connection.execute(old_row, listed, TENANT, "pending", USER,
                                     '{"domain_count": 3, "domains": ["ok-3.test", "ok-4.test", "notfound-4.test"]}')
            await connection.execute("UPDATE batch_jobs SET updated_at = now() - interval '4 hours'")
        finally:
            await connection.close()

    asyncio.run(setup())

    summary = recover_stale_batches(stale_after=60)

    assert sorted(summary["resumed"]) == sorted([str(ours), str(listed)]), summary
    assert sorted(summary["failed"]) == sorted([str(theirs), str(stuck)]), summary

    def read(batch_id: uuid.UUID, tenant: uuid.UUID = TENANT) -> batches.BatchStatusReport:
        return asyncio.run(Database(url).call(lambda s: batches.get_batch_status(s, batch_id, tenant)))

    report = read(ours)
    assert (report.status, report.completed_domains, report.created_by) == ("completed", 2, USER)
    for batch_id, tenant, status in ((theirs, TENANT, "processing"), (stuck, ANOTHER_TENANT, "pending")):
        report = read(batch_id, tenant)
        assert report.status == "failed" and report.end_time is not None, report
        assert report.error == (f"left {status} by an earlier backend; its domains were never recorded: "
                                "submit them again"), report.error
    report = read(listed)
    assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 2, 1), report
    assert set(report.domain_statuses) == {"ok-3.test", "ok-4.test", "notfound-4.test"}
    # Nothing is left pending or processing.
    active = asyncio.run(_sql(url, "SELECT count(*) FROM batch_jobs WHERE status IN ('pending', 'processing')"))
    assert active[0][0] == 0
