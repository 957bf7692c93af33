"""Schema evolution (Alembic): `scrapersky db upgrade` brings an empty database, ours from
any earlier version, and ScraperSky's production batch_jobs to the head revision without
touching rows it should not; the migrations make exactly what the models define (the
drift check, `alembic check`); `db check` names a missing revision."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from earlier_schemas import DDL, SHAPES
from scrapersky.db import migrate
from scrapersky.db.batches import BatchStatusReport, get_batch_status
from scrapersky.db.engine import Database, create_engine
from scrapersky.farm import Farm

SCRAPERSKY_TABLE = Path(__file__).with_name("scrapersky_batch_jobs.sql").read_text()
TENANT = uuid.UUID("550e8400-e29b-41d4-a716-446655440000")
USER = uuid.UUID("5905e9fe-6c61-4694-b09a-6602017b000a")
HEAD = "0002_domain_batch_vocabulary"
PASSWORD = "m1gr4te-pw"


# -- helpers -------------------------------------------------------------------------


def on(url: str, work: Callable[[sa.Connection], Any]) -> Any:
    """``work(connection)`` in one transaction on our own async engine for ``url``."""

    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def execute_script(script: str) -> Callable[[sa.Connection], None]:
    def run(connection: sa.Connection) -> None:
        for statement in script.split(";"):
            if statement.strip():
                connection.exec_driver_sql(statement)

    return run


def pg(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    return asyncio.run(run())


def pg_script(url: str, script: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(script)
        finally:
            await connection.close()

    asyncio.run(run())


def snapshot(url: str, where: str = "true") -> list[str]:
    """Every batch_jobs row as PostgreSQL renders it, ordered by id: a byte-for-byte image."""
    return [r[0] for r in pg(url, f"SELECT t::text FROM batch_jobs t WHERE {where} ORDER BY id")]


def status_of(url: str, batch_id: uuid.UUID, tenant: uuid.UUID = TENANT) -> BatchStatusReport:
    async def read() -> BatchStatusReport:
        async with Database(url).session() as session:
            return await get_batch_status(session, batch_id, tenant)

    return asyncio.run(read())


def scrapersky(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scrapersky.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


def with_password(url: str) -> str:
    # The local server trusts loopback, so any password is accepted: a real one must not leak.
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'batches.db'}"
    return request.getfixturevalue("scratch_database")


# -- an empty database, the drift check, idempotence ------------------------------------


def test_upgrade_of_an_empty_database_matches_the_models(empty_database: str) -> None:
    before = asyncio.run(migrate.state(empty_database))
    assert (before.current, before.shape, [r for r, _ in before.pending]) == ((), "empty", ["0001_baseline", HEAD])

    done = asyncio.run(migrate.upgrade(empty_database))
    assert done.applied == ["0001_baseline", HEAD] and done.after.current == (HEAD,) and done.after.at_head
    assert asyncio.run(migrate.drift(empty_database)) == []  # alembic check: the migrations make the models

    again = asyncio.run(migrate.upgrade(empty_database))  # twice = no-op
    assert again.applied == [] and again.after.current == (HEAD,)
    assert asyncio.run(migrate.drift(empty_database)) == []

    # The check can fail: a column the models define and the database lacks is drift.
    if empty_database.startswith("sqlite"):
        on(empty_database, execute_script("ALTER TABLE domain_results DROP COLUMN final_url"))
    else:
        on(empty_database, execute_script("ALTER TABLE domain_results DROP COLUMN final_url;"
                                          "ALTER TABLE batch_jobs DROP CONSTRAINT batch_jobs_batch_id_key"))
    found = "\n".join(asyncio.run(migrate.drift(empty_database)))
    assert "add_column" in found and "final_url" in found
    if not empty_database.startswith("sqlite"):
        assert "add_constraint" in found or "add_index" in found


def test_create_all_makes_what_the_migrations_make_and_is_adopted(empty_database: str) -> None:
    """The tests' fixtures keep create_all (fast); a database they make upgrades as a
    pre-Alembic one of ours, and the result has no drift."""
    asyncio.run(Database(empty_database).init_schema())
    assert asyncio.run(migrate.state(empty_database)).shape == "db-init-3f28c1b"
    done = asyncio.run(migrate.upgrade(empty_database))
    assert done.applied == ["0001_baseline", HEAD]
    assert asyncio.run(migrate.drift(empty_database)) == []


# -- ScraperSky's production table with its rows ------------------------------------------


def _scrapersky_entry(status: str, seconds: float, error: str | None = None) -> dict[str, Any]:
    return {
        "status": status, "job_id": str(uuid.uuid4()), "start_time": "2025-03-10T09:00:00",
        "end_time": f"2025-03-10T09:00:{seconds:06.3f}", "processing_time": seconds, "error": error,
    }


LEGACY_ROWS = [
    # (status, progress, total, completed, failed, domain entries)
    ("complete", 1.0, 2, 2, 0, {"example.com": _scrapersky_entry("completed", 1.2),
                                "example.org": _scrapersky_entry("completed", 2.5)}),
    ("processing", 0.5, 2, 1, 0, {"alpha.example": _scrapersky_entry("completed", 0.8)}),
    ("partial", 1.0, 2, 1, 1, {"ok.example": _scrapersky_entry("completed", 1.0),
                               "down.example": _scrapersky_entry("failed", 30.0, "Connection timed out")}),
    ("completed", 1.0, 1, 1, 0, {"beta.example": _scrapersky_entry("completed", 0.4)}),
]


def _insert_scrapersky_rows(url: str) -> list[uuid.UUID]:
    """Rows as ScraperSky wrote them; the first batch id twice (no uniqueness), one row
    without a batch_id at all (rows from before that column)."""
    ids = [uuid.uuid4() for _ in LEGACY_ROWS]

    async def insert() -> None:
        connection = await asyncpg.connect(url)
        try:
            for batch_id, (status, progress, total, completed, failed, entries) in zip(ids, LEGACY_ROWS):
                await connection.execute(
                    """INSERT INTO batch_jobs (id_uuid, tenant_id, processor_type, status, created_by,
                           total_domains, completed_domains, failed_domains, progress, batch_metadata, options,
                           start_time, end_time, processing_time, batch_id_string, batch_id, batch_id_original,
                           created_at, updated_at)
                       VALUES ($1, $2, 'domain_batch', $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb,
                           '2025-03-10 09:00:00', $11, $12, $13, $1, $13, '2025-03-10 08:59:59.123456',
                           '2025-03-10 09:01:00.654321')""",
                    batch_id, TENANT, status, USER, total, completed, failed, progress,
                    json.dumps({"domain_results": entries, "max_pages": 1000, "source": "dashboard"}),
                    json.dumps({"max_pages": 1000, "max_concurrent": 5}),
                    None if status == "processing" else datetime(2025, 3, 10, 9, 0, 31),
                    None if status == "processing" else 31.25, str(batch_id),
                )
            await connection.execute(  # the same batch id again: ScraperSky's batch_id is not unique
                """INSERT INTO batch_jobs (id_uuid, tenant_id, processor_type, status, progress, batch_id,
                       batch_metadata) VALUES ($1, $2, 'domain_batch', 'completed', 1.0, $3, '{}'::jsonb)""",
                uuid.uuid4(), TENANT, ids[0])
            await connection.execute(
                """INSERT INTO batch_jobs (id_uuid, tenant_id, processor_type, status, progress)
                   VALUES ($1, $2, 'domain_batch', 'pending', 0)""", uuid.uuid4(), TENANT)
        finally:
            await connection.close()

    asyncio.run(insert())
    return ids


def test_scrapersky_production_table_upgrades_untouched_and_runs_a_batch(
    prefect_api: str, scratch_database: str, farm: Farm
) -> None:
    url = scratch_database
    pg_script(url, SCRAPERSKY_TABLE)
    legacy = _insert_scrapersky_rows(url)
    before = snapshot(url)
    assert len(before) == 6
    env = dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=with_password(url),
               SCRAPERSKY_TENANT_ID=str(TENANT), SCRAPERSKY_RETRY_BACKOFF="0.01")

    check = scrapersky(env, "db", "check")  # no domain_results, no revision: named, exit 1
    assert check.returncode == 1
    assert "table domain_results is missing" in check.stdout
    assert "no Alembic revision recorded: ScraperSky's production batch_jobs" in check.stdout
    assert "run `scrapersky db upgrade`" in check.stdout

    upgrade = scrapersky(env, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "adopted: ScraperSky's production batch_jobs" in upgrade.stdout
    assert f"applied 0001_baseline\napplied {HEAD}" in upgrade.stdout
    assert snapshot(url) == before  # their rows, byte for byte
    assert pg(url, "SELECT to_regclass('domain_results') IS NOT NULL AS there")[0]["there"]
    assert pg(url, "SELECT version_num FROM alembic_version")[0]["version_num"] == HEAD

    again = scrapersky(env, "db", "upgrade")  # idempotent
    assert again.returncode == 0 and "already at revision" in again.stdout and "applied" not in again.stdout
    check = scrapersky(env, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"note: Alembic revision {HEAD} (head)" in check.stdout
    assert "CREATE UNIQUE INDEX ON batch_jobs (batch_id)" in check.stdout  # recommended, not imposed
    assert PASSWORD not in "".join(r.stdout + r.stderr for r in (upgrade, again, check))

    # A real batch on their table, beside their rows.
    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    run = scrapersky(env, "scrape", "ok-1.test", "notfound-1.test", "--json", *rules)
    assert run.returncode == 0, run.stderr
    ours = json.loads(run.stdout)
    assert (ours["status"], ours["completed_domains"], ours["failed_domains"], ours["progress"]) == ("partial", 1, 1, 1.0)
    assert snapshot(url, "id <= 6") == before  # the batch touched none of theirs
    (row,) = pg(url, "SELECT * FROM batch_jobs WHERE batch_id = $1", uuid.UUID(ours["batch_id"]))
    assert (row["processor_type"], row["status"], row["progress"], row["id_uuid"]) == (
        "domain_batch", "partial", 1.0, row["batch_id"])
    assert set(json.loads(row["batch_metadata"])["domain_results"]) == {"ok-1.test", "notfound-1.test"}

    # Their rows read right, through the library and through `scrapersky status --json`.
    expected = {"complete": "completed", "processing": "processing", "partial": "partial", "completed": "completed"}
    for batch_id, (status, progress, total, completed, failed, entries) in zip(legacy, LEGACY_ROWS):
        report = status_of(url, batch_id)
        assert (report.status, report.progress) == (expected[status], progress)
        assert (report.total_domains, report.completed_domains, report.failed_domains) == (total, completed, failed)
        assert (report.processor_type, report.created_by) == ("domain_batch", USER)
        assert set(report.domain_statuses) == set(entries)
        for domain, entry in entries.items():
            shown = report.domain_statuses[domain]
            assert {key: shown[key] for key in entry} == entry
        assert report.metadata["source"] == "dashboard"
    partial = json.loads(scrapersky(env, "status", str(legacy[2]), "--json").stdout)
    assert (partial["status"], partial["progress"], partial["failed_domains"]) == ("partial", 1.0, 1)
    assert partial["domain_statuses"]["down.example"]["error"] == "Connection timed out"
    shown = json.loads(scrapersky(env, "status", ours["batch_id"], "--json").stdout)
    assert (shown["status"], shown["progress"], shown["processor_type"]) == ("partial", 1.0, "domain_batch")
    assert shown["domain_statuses"]["ok-1.test"]["metadata"]["title"] == "ok-1"
    assert shown["domain_statuses"]["notfound-1.test"]["error_type"] == "http_error"


def test_an_adopted_batch_jobs_lacking_a_column_is_refused_and_left_alone(scratch_database: str) -> None:
    pg_script(scratch_database, SCRAPERSKY_TABLE + "ALTER TABLE batch_jobs DROP COLUMN options;")
    with pytest.raises(Exception, match=r"batch_jobs\.options is missing"):
        asyncio.run(migrate.upgrade(scratch_database))
    tables = {r[0] for r in pg(scratch_database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"batch_jobs"}  # rolled back whole: no domain_results, no alembic_version


# -- databases created by earlier versions of ours ----------------------------------------

#: An earlier version's row: processor_type domain_metadata, progress a percentage.
OLD_RUNNING = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
OLD_FINISHED = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000002")
THEIRS = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000003")

JSONT = sa.JSON().with_variant(JSONB(), "postgresql")
OLD_BATCH_JOBS = sa.table(
    "batch_jobs", *(sa.column(name, type_) for name, type_ in [
        ("batch_id", sa.Uuid()), ("tenant_id", sa.Uuid()), ("processor_type", sa.Text()), ("status", sa.Text()),
        ("created_by", sa.Uuid()), ("total_domains", sa.Integer()), ("completed_domains", sa.Integer()),
        ("failed_domains", sa.Integer()), ("progress", sa.Double()), ("batch_metadata", JSONT),
        ("options", JSONT), ("start_time", sa.DateTime(timezone=True)), ("end_time", sa.DateTime(timezone=True)),
        ("processing_time", sa.Double()), ("error", sa.Text()),
    ]),
)


def _old_entry(domain: str, status: str, seconds: float) -> dict[str, Any]:
    """A domain's entry as our earlier versions kept it under batch_metadata["domain_statuses"]."""
    failed = status == "failed"
    return {
        "status": status, "attempts": 1, "http_status": 404 if failed else 200,
        "final_url": None if failed else f"http://{domain}/", "elapsed_ms": int(seconds * 1000),
        "error_type": "http_error" if failed else None, "error": "HTTP 404" if failed else None,
        "truncated": False, "started_at": "2026-11-28T21:30:00Z",
        "finished_at": f"2026-11-28T21:30:{seconds:09.6f}Z",
    }


def _create_earlier_version(url: str, shape: str) -> None:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    on(url, execute_script(DDL[(shape, dialect)]))
    start = datetime(2026, 11, 28, 21, 30, tzinfo=UTC)
    finished_entries = {"a.test": _old_entry("a.test", "completed", 1.5), "b.test": _old_entry("b.test", "failed", 0.25)}
    running_outcome = _old_entry("c.test", "completed", 2.0)

    def fill(connection: sa.Connection) -> None:
        common = dict(tenant_id=TENANT, created_by=None, options={"retries": 2}, error=None)
        connection.execute(OLD_BATCH_JOBS.insert(), [
            dict(common, batch_id=OLD_RUNNING, processor_type="domain_metadata", status="running",
                 total_domains=4, completed_domains=1, failed_domains=1, progress=50.0,
                 batch_metadata={"flow_run_id": str(OLD_RUNNING), "input": {"domains": 4}},
                 start_time=start, end_time=None, processing_time=None),
            dict(common, batch_id=OLD_FINISHED, processor_type="domain_metadata", status="partial",
                 total_domains=2, completed_domains=1, failed_domains=1, progress=100.0,
                 batch_metadata={"flow_run_id": str(OLD_FINISHED), "domain_statuses": finished_entries},
                 start_time=start, end_time=start, processing_time=1.75),
            # A row ScraperSky's code wrote into the same table: never converted.
            dict(common, batch_id=THEIRS, processor_type="domain_batch", status="processing",
                 total_domains=2, completed_domains=1, failed_domains=0, progress=0.5,
                 batch_metadata={"domain_results": {"x.example": _scrapersky_entry("completed", 1.0)}},
                 start_time=start, end_time=None, processing_time=None),
        ])
        results = sa.table("domain_results", sa.column("batch_id", sa.Uuid()), sa.column("domain", sa.Text()),
                           sa.column("final_url", sa.Text()), sa.column("site_metadata", JSONT),
                           *([sa.column("outcome", JSONT)] if shape == "3f28c1b" else []))
        rows = [dict(batch_id=OLD_FINISHED, domain="a.test", final_url="http://a.test/", site_metadata={"title": "A"})]
        rows.append(dict(batch_id=OLD_RUNNING, domain="c.test", final_url="http://c.test/", site_metadata={"title": "C"}))
        if shape == "3f28c1b":  # outcomes saved while a batch runs (live progress)
            rows = [dict(r, outcome=running_outcome if r["domain"] == "c.test" else None) for r in rows]
        connection.execute(results.insert(), rows)

    on(url, fill)


def _rows(url: str) -> dict[uuid.UUID, dict[str, Any]]:
    def read(connection: sa.Connection) -> dict[uuid.UUID, dict[str, Any]]:
        columns = [sa.column(c.name, c.type) for c in OLD_BATCH_JOBS.c]
        table = sa.table("batch_jobs", *columns, sa.column("updated_at", sa.DateTime(timezone=True)))
        return {row.batch_id: row._asdict() for row in connection.execute(sa.select(table))}

    return on(url, read)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_database_of_an_earlier_version_upgrades_and_reads_right(shape: str, empty_database: str) -> None:
    url = empty_database
    _create_earlier_version(url, shape)
    before = _rows(url)
    state = asyncio.run(migrate.state(url))
    assert state.shape == f"db-init-{shape}" and [r for r, _ in state.pending] == ["0001_baseline", HEAD]

    done = asyncio.run(migrate.upgrade(url))
    assert done.applied == ["0001_baseline", HEAD] and done.after.at_head
    after = _rows(url)
    assert after[THEIRS] == before[THEIRS]  # not ours: untouched
    assert {b: r["updated_at"] for b, r in after.items()} == {b: r["updated_at"] for b, r in before.items()}

    running, finished = after[OLD_RUNNING], after[OLD_FINISHED]
    assert (running["processor_type"], running["status"], running["progress"]) == ("domain_batch", "processing", 0.5)
    assert (finished["processor_type"], finished["status"], finished["progress"]) == ("domain_batch", "partial", 1.0)
    assert "domain_statuses" not in finished["batch_metadata"]
    assert finished["batch_metadata"]["domain_results"]["a.test"]["processing_time"] == 1.5
    assert finished["batch_metadata"]["domain_results"]["b.test"]["start_time"] == "2026-11-28T21:30:00Z"

    # Read back as users read it.
    report = status_of(url, OLD_RUNNING)
    assert (report.status, report.progress, report.processor_type) == ("processing", 0.5, "domain_batch")
    if shape == "3f28c1b":
        assert report.domain_statuses["c.test"]["status"] == "completed"
        assert report.domain_statuses["c.test"]["metadata"] == {"title": "C"}
    report = status_of(url, OLD_FINISHED)
    assert (report.status, report.progress, report.completed_domains, report.failed_domains) == ("partial", 1.0, 1, 1)
    assert report.domain_statuses["a.test"]["metadata"] == {"title": "A"}
    assert report.domain_statuses["a.test"]["end_time"] == "2026-11-28T21:30:01.500000Z"
    assert (report.domain_statuses["b.test"]["status"], report.domain_statuses["b.test"]["error"]) == ("failed", "HTTP 404")
    theirs = status_of(url, THEIRS)
    assert (theirs.status, theirs.progress) == ("processing", 0.5)

    # The older domain_results became today's: no foreign key, outcome there, metadata optional.
    def write_result(connection: sa.Connection) -> None:
        table = sa.table("domain_results", sa.column("batch_id", sa.Uuid()), sa.column("domain", sa.Text()),
                         sa.column("outcome", JSONT))
        connection.execute(table.insert().values(batch_id=uuid.uuid4(), domain="z.test", outcome={"status": "failed"}))

    on(url, write_result)
    assert asyncio.run(migrate.drift(url)) == []  # and it is exactly what the models define
    again = asyncio.run(migrate.upgrade(url))
    assert again.applied == [] and _rows(url) == after  # a converted row is never converted twice


# -- db check one revision behind ---------------------------------------------------------


def test_db_check_names_the_missing_revision_and_upgrade_applies_it(scratch_database: str) -> None:
    asyncio.run(migrate.upgrade(scratch_database, "0001_baseline"))
    env = dict(os.environ, DATABASE_URL=with_password(scratch_database))

    check = scrapersky(env, "db", "check")
    assert check.returncode == 1
    assert "error: Alembic revision 0001_baseline; head is 0002_domain_batch_vocabulary" in check.stdout
    assert f"error: revision {HEAD} is missing: domain_batch vocabulary" in check.stdout
    assert "run `scrapersky db upgrade`" in check.stdout + check.stderr

    upgrade = scrapersky(env, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"applied {HEAD}" in upgrade.stdout and "applied 0001" not in upgrade.stdout
    init = scrapersky(env, "db", "init")  # the one-step start is the same upgrade: nothing left to do
    assert init.returncode == 0 and "schema ready" in init.stdout and "already at revision" in init.stdout
    check = scrapersky(env, "db", "check", "--drift")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no drift" in check.stdout
    assert PASSWORD not in "".join(r.stdout + r.stderr for r in (check, upgrade, init))
    assert "postgres:***@" in upgrade.stdout


def test_upgrades_at_once_run_one_after_the_other(empty_database: str) -> None:
    """Four first uses of one database at once (four batches starting on a fresh SQLite
    file): one upgrade applies the revisions, the others find the head."""
    from concurrent.futures import ThreadPoolExecutor

    def upgrade(_: int) -> list[str]:
        return asyncio.run(migrate.upgrade(empty_database)).applied

    with ThreadPoolExecutor(4) as pool:
        applied = sorted(pool.map(upgrade, range(4), timeout=120), key=len)
    assert applied == [[], [], [], ["0001_baseline", HEAD]]
    assert on(empty_database, lambda c: c.exec_driver_sql("SELECT version_num FROM alembic_version").all()) == [(HEAD,)]
    assert asyncio.run(migrate.drift(empty_database)) == []
