"""The scrapersky command, run as users run it: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from scrapersky.farm import Farm

TENANT = "33333333-3333-3333-3333-333333333333"


@pytest.fixture
def cli_env(prefect_api: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api,
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        SCRAPERSKY_TENANT_ID=TENANT,
        SCRAPERSKY_RETRY_BACKOFF="0.01",
    )
    return env


def scrapersky(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scrapersky.cli", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=cwd,
    )


def test_scrape_json_then_status_and_other_tenant(cli_env: dict[str, str], farm: Farm, tmp_path: Path) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("# a comment\nok-1.test\n\nerr500-1.test\nhttps://OK-1.test/again\n")
    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]

    scraped = scrapersky(cli_env, "scrape", "--file", str(domains), "ok-2.test", "--json", "--retries", "1", *rules)

    assert scraped.returncode == 0, scraped.stderr
    report = json.loads(scraped.stdout)
    assert (report["status"], report["completed_domains"], report["failed_domains"]) == ("partial", 2, 1)
    assert report["domain_statuses"]["err500-1.test"]["attempts"] == 2
    assert report["domain_statuses"]["ok-2.test"]["metadata"]["title"] == "ok-2"

    again = scrapersky(cli_env, "status", report["batch_id"], "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout) == report  # the same JSON as scrape --json

    table = scrapersky(cli_env, "status", report["batch_id"])
    assert "partial" in table.stdout and "http_error" in table.stdout

    other = scrapersky(cli_env, "status", report["batch_id"], "--tenant", str(uuid.uuid4()))
    assert other.returncode == 1
    assert "not found" in other.stderr and other.stdout == ""


def test_settings_come_from_the_environment(cli_env: dict[str, str], farm: Farm) -> None:
    cli_env["SCRAPERSKY_CONNECT_TO"] = " ".join(farm.connect_to())
    cli_env["SCRAPERSKY_RETRIES"] = "0"
    scraped = scrapersky(cli_env, "scrape", "err500-4.test", "ok-4.test", "--json")
    assert scraped.returncode == 0, scraped.stderr
    report = json.loads(scraped.stdout)
    assert report["domain_statuses"]["err500-4.test"]["attempts"] == 1
    assert farm.hits["ok-4.test"] == 1


def test_refusals_are_clear(cli_env: dict[str, str]) -> None:
    none = scrapersky(cli_env, "scrape")
    assert none.returncode == 2 and "no domains" in none.stderr
    bad_rule = scrapersky(cli_env, "scrape", "a.test", "--connect-to", "nonsense")
    assert bad_rule.returncode == 2 and "HOST1:PORT1:HOST2:PORT2" in bad_rule.stderr
    cli_env["SCRAPERSKY_MAX_BATCH_SIZE"] = "1"
    too_many = scrapersky(cli_env, "scrape", "a.test", "b.test")
    assert too_many.returncode == 2 and "limit is 1" in too_many.stderr


def test_db_init_is_idempotent_and_hides_the_password(cli_env: dict[str, str], postgres_url: str) -> None:
    # The local server trusts loopback, so any password is accepted: a real one must not leak.
    cli_env["DATABASE_URL"] = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    first = scrapersky(cli_env, "db", "init")
    second = scrapersky(cli_env, "db", "init")
    assert first.returncode == second.returncode == 0, first.stderr
    assert "schema ready" in second.stdout and "***" in second.stdout
    assert "s3cret-pw" not in first.stdout + first.stderr + second.stdout + second.stderr


def test_export_csv_and_jsonl(cli_env: dict[str, str], farm: Farm, tmp_path: Path) -> None:
    import csv

    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    scraped = scrapersky(cli_env, "scrape", "ok-1.test", "notfound-1.test", "--json", *rules)
    batch_id = json.loads(scraped.stdout)["batch_id"]

    as_csv = scrapersky(cli_env, "export", batch_id, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = {row["domain"]: row for row in csv.DictReader(as_csv.stdout.splitlines())}
    assert set(rows) == {"ok-1.test", "notfound-1.test"}
    assert (rows["ok-1.test"]["status"], rows["ok-1.test"]["title"]) == ("completed", "ok-1")
    assert rows["ok-1.test"]["keywords"] == "farm; ok-1"
    assert (rows["notfound-1.test"]["error_type"], rows["notfound-1.test"]["http_status"]) == ("http_error", "404")

    out = tmp_path / "batch.jsonl"
    as_jsonl = scrapersky(cli_env, "export", batch_id, "--format", "jsonl", "-o", str(out))
    assert as_jsonl.returncode == 0 and "2 domains written" in as_jsonl.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["domain"] for line in lines} == {"ok-1.test", "notfound-1.test"}
    assert next(l for l in lines if l["domain"] == "ok-1.test")["metadata"]["site_name"] == "ok-1 site"

    other = scrapersky(cli_env, "export", batch_id, "--tenant", str(uuid.uuid4()))
    assert other.returncode == 1 and "not found" in other.stderr


def test_csv_cells_cannot_become_formulas() -> None:
    import io

    from scrapersky.export import write_csv

    class Report:
        batch_id = uuid.uuid4()
        domain_statuses = {"evil.test": {"status": "completed", "metadata": {"title": "=HYPERLINK(\"x\")"}}}

    out = io.StringIO()
    write_csv(Report(), out)
    assert "'=HYPERLINK" in out.getvalue()


def test_recover_runs_the_recovery_flow_once(cli_env: dict[str, str]) -> None:
    assert scrapersky(cli_env, "db", "init").returncode == 0
    recovered = scrapersky(cli_env, "recover", "--stale-after", "1")
    assert recovered.returncode == 0, recovered.stderr
    assert "resumed 0 batch(es), failed 0" in recovered.stdout
