"""The schema check: `scrapersky db check`, and the same check when a batch starts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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
    assert scrapersky(env, "db", "init").returncode == 0  # adds domain_results, never alters batch_jobs

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


def test_no_code_path_writes_a_domain_statuses_column() -> None:
    from scrapersky.db.models import Base

    columns = {c.name for table in Base.metadata.tables.values() for c in table.columns}
    assert "domain_statuses" not in columns
