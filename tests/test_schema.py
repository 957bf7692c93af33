"""The schema check: `scrapersky db check`, and the same check when a batch starts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from scrapersky.farm import Farm

SCRAPERSKY_TABLE = Path(__file__).with_name("scrapersky_batch_jobs.sql").read_text()


def sql(url: str, statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def scrapersky(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scrapersky.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def env(prefect_api: str, scratch_database: str) -> dict[str, str]:
    return dict(os.environ, PREFECT_API_URL=prefect_api, DATABASE_URL=scratch_database,
                SCRAPERSKY_RETRY_BACKOFF="0.01")


def test_a_missing_column_is_named_and_no_batch_starts(env: dict[str, str], farm: Farm) -> None:
    sql(env["DATABASE_URL"], SCRAPERSKY_TABLE + "ALTER TABLE batch_jobs DROP COLUMN batch_metadata;")
    init = scrapersky(env, "db", "init")  # never alters their batch_jobs: refuses, naming the column
    assert init.returncode == 2 and "batch_jobs.batch_metadata is missing" in init.stderr

    check = scrapersky(env, "db", "check")
    assert check.returncode == 1
    assert "batch_jobs.batch_metadata is missing" in check.stdout

    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    run = scrapersky(env, "scrape", "ok-1.test", "ok-2.test", "--json", *rules)
    assert run.returncode != 0
    assert "batch_jobs.batch_metadata is missing" in run.stderr
    assert sum(farm.hits.values()) == 0  # refused before any work


@pytest.mark.parametrize(
    ("alteration", "message"),
    [
        ("ALTER TABLE batch_jobs ALTER COLUMN progress TYPE text", "batch_jobs.progress is TEXT; the code writes DOUBLE PRECISION"),
        ("ALTER TABLE batch_jobs ALTER COLUMN options TYPE text", "batch_jobs.options is TEXT; the code writes JSONB"),
        ("ALTER TABLE batch_jobs ADD COLUMN owner text NOT NULL", "batch_jobs.owner is NOT NULL without a default"),
        ("DROP TABLE domain_results", "table domain_results is missing"),
    ],
)
def test_types_and_required_columns_that_would_break_writes(env: dict[str, str], alteration: str, message: str) -> None:
    assert scrapersky(env, "db", "init").returncode == 0
    sql(env["DATABASE_URL"], alteration)
    check = scrapersky(env, "db", "check")
    assert check.returncode == 1
    assert message in check.stdout


def test_scrapersky_production_table_is_adopted_as_is(env: dict[str, str], farm: Farm) -> None:
    import json

    sql(env["DATABASE_URL"], SCRAPERSKY_TABLE)
    assert scrapersky(env, "db", "init").returncode == 0
    check = scrapersky(env, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "batch_jobs.id_uuid: extra ScraperSky column, filled on insert" in check.stdout
    assert "batch_jobs.batch_id_original: extra ScraperSky column" in check.stdout

    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    run = scrapersky(env, "scrape", "ok-1.test", "notfound-1.test", "--json", *rules)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["status"], report["completed_domains"], report["failed_domains"]) == ("partial", 1, 1)
    assert report["start_time"] <= report["end_time"]

    async def row() -> asyncpg.Record:
        connection = await asyncpg.connect(env["DATABASE_URL"])
        try:
            return await connection.fetchrow("SELECT id_uuid, batch_id, status FROM batch_jobs")
        finally:
            await connection.close()

    stored = asyncio.run(row())
    assert str(stored["batch_id"]) == report["batch_id"] == str(stored["id_uuid"])
    assert stored["status"] == "partial"


# A column named domain_statuses in SQL text: bare or double-quoted, outside string
# literals (a JSON key such as batch_metadata->'domain_statuses' is a literal, and the
# statuses themselves travel as bound JSON parameters).
_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_DOMAIN_STATUSES_IDENTIFIER = re.compile(r'(?<![\w$])"?domain_statuses"?(?![\w$])', re.IGNORECASE)


def names_domain_statuses_column(statement: str) -> bool:
    return bool(_DOMAIN_STATUSES_IDENTIFIER.search(_STRING_LITERAL.sub("''", statement)))


def test_the_column_detector_tells_a_column_from_a_json_key() -> None:
    assert names_domain_statuses_column("UPDATE batch_jobs SET domain_statuses=$1 WHERE id = $2")
    assert names_domain_statuses_column('UPDATE batch_jobs SET "domain_statuses" = $1')
    assert names_domain_statuses_column("SELECT batch_jobs.domain_statuses FROM batch_jobs")
    assert not names_domain_statuses_column("SELECT batch_metadata->'domain_statuses' FROM batch_jobs")
    assert not names_domain_statuses_column("UPDATE batch_jobs SET batch_metadata=$1::JSONB WHERE id = $2")


@pytest.fixture
def sent_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every SQL statement this process sends, as (statement, parameters): through
    SQLAlchemy (any engine, text() and exec_driver_sql included) and through asyncpg's
    own connection methods (a raw asyncpg call that bypasses SQLAlchemy)."""
    import asyncpg.connection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sent: list[tuple[str, str]] = []

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, repr(parameters)))

    def spy(name: str) -> None:
        real = getattr(asyncpg.connection.Connection, name)

        async def wrapper(self, query, *args, **kwargs):
            sent.append((str(query), repr(args)))
            return await real(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, name, wrapper)

    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare"):
        spy(name)
    event.listen(Engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", before_cursor_execute)


def test_no_code_path_writes_a_domain_statuses_column(
    prefect_api: str, scratch_database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch,
    sent_statements: list[tuple[str, str]],
) -> None:
    """A batch run, its recovery and its status read, on ScraperSky's production table
    (no domain_statuses column): no statement names such a column, and the statuses
    are still there, under batch_metadata["domain_results"] (ScraperSky's key)."""
    from scrapersky.batch import BatchOptions, BatchRequest
    from scrapersky.db.batches import get_batch_status
    from scrapersky.db.engine import create_engine, init_schema
    from scrapersky.settings import Settings
    from scrapersky.flows.batch_scrape import batch_scrape
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    sql(scratch_database, SCRAPERSKY_TABLE)

    async def init() -> None:
        engine = create_engine(scratch_database)
        try:
            await init_schema(engine)  # adds domain_results
        finally:
            await engine.dispose()

    asyncio.run(init())
    monkeypatch.setenv("DATABASE_URL", scratch_database)
    tenant, batch_id = uuid.uuid4(), uuid.uuid4()
    domains = ["ok-1.test", "ok-2.test", "notfound-1.test"]
    request = BatchRequest(domains=domains, tenant_id=tenant, batch_id=batch_id,
                           options=BatchOptions(retries=0, retry_backoff=0.01))
    sent_statements.clear()

    first = batch_scrape(request, return_state=True)
    assert first.is_completed(), first.message
    # Its run vanished mid-way: a recovery finds it stale and runs it again, adopting the row.
    sql(scratch_database, f"UPDATE batch_jobs SET status = 'running', updated_at = now() - interval '1 hour' "
                          f"WHERE batch_id = '{batch_id}'")
    recovered = recover_stale_batches(stale_after=1, return_state=True)
    assert recovered.is_completed() and recovered.result()["resumed"] == [str(batch_id)]

    async def read():
        async with Settings().database().session() as session:
            return await get_batch_status(session, batch_id, tenant)

    report = asyncio.run(read())

    ours = [(s, p) for s, p in sent_statements if "batch_jobs" in s or "domain_results" in s]
    # The capture saw the batch's own writes, so the assertion below is about real traffic.
    assert any(s.lstrip().upper().startswith("UPDATE BATCH_JOBS") for s, _ in ours), ours
    assert any(s.lstrip().upper().startswith("INSERT INTO DOMAIN_RESULTS") for s, _ in ours), ours
    assert any("domain_results" in p for s, p in ours if "UPDATE BATCH_JOBS" in s.upper())  # a JSON key
    offenders = [s for s, _ in sent_statements if names_domain_statuses_column(s)]
    assert offenders == [], f"SQL naming a domain_statuses column: {offenders}"

    assert report.status == "partial"
    assert {d: e["status"] for d, e in report.domain_statuses.items()} == {
        "ok-1.test": "completed", "ok-2.test": "completed", "notfound-1.test": "failed",
    }
    assert report.domain_statuses["ok-1.test"]["metadata"]["title"] == "ok-1"

    async def stored() -> dict:
        connection = await asyncpg.connect(scratch_database)
        try:
            return json.loads(await connection.fetchval(
                "SELECT batch_metadata->'domain_results' FROM batch_jobs WHERE batch_id = $1", batch_id))
        finally:
            await connection.close()

    assert set(asyncio.run(stored())) == set(domains)  # the key inside batch_metadata, not a column
