"""The scrapersky command, run as users run it: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    assert other.returncode == 2
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
    assert other.returncode == 2 and "not found" in other.stderr


def test_csv_cells_cannot_become_formulas() -> None:
    import io

    from scrapersky.export import write_csv

    class Report:
        batch_id = uuid.uuid4()
        domain_statuses = {"evil.test": {"status": "completed", "metadata": {"title": "=HYPERLINK(\"x\")"}}}

    out = io.StringIO()
    write_csv(Report(), out)
    assert "'=HYPERLINK" in out.getvalue()


def _stale_batches(url: str, dead_run: str, resumable: uuid.UUID, hopeless: uuid.UUID) -> None:
    """Two batches whose runs died an hour ago: ``resumable`` (three domains recorded,
    one outcome saved by the dead run) and ``hopeless`` (recovered three times already)."""
    import asyncio
    from datetime import timedelta

    from sqlalchemy import select

    from scrapersky.batch import DomainOutcome, DomainStatus, utcnow
    from scrapersky.db.engine import create_engine, transaction
    from scrapersky.db.models import BatchJob, DomainResult

    long_ago = utcnow() - timedelta(hours=1)
    saved = DomainOutcome(domain="ok-5.test", status=DomainStatus.COMPLETED, attempts=1, http_status=200,
                          final_url="http://ok-5.test/", started_at=long_ago, finished_at=long_ago)

    def batch(batch_id: uuid.UUID, metadata: dict) -> BatchJob:
        return BatchJob(
            batch_id=batch_id, tenant_id=uuid.UUID(TENANT), processor_type="domain_metadata", status="running",
            total_domains=3, batch_metadata=metadata, options={"retries": 0, "retry_backoff": 0.01},
            start_time=long_ago, created_at=long_ago, updated_at=long_ago,
        )

    async def insert() -> None:
        engine = create_engine(url)
        try:
            async with transaction(engine) as session:
                session.add_all([
                    batch(resumable, {"flow_run_id": dead_run}),
                    batch(hopeless, {"flow_run_id": str(uuid.uuid4()), "recovery": {"attempts": 3}}),
                    DomainResult(batch_id=resumable, domain="ok-5.test", final_url=saved.final_url,
                                 outcome=saved.status_entry(), site_metadata={"title": "saved by the dead run"},
                                 updated_at=long_ago),
                    DomainResult(batch_id=resumable, domain="ok-6.test", updated_at=long_ago),
                    DomainResult(batch_id=resumable, domain="notfound-6.test", updated_at=long_ago),
                    DomainResult(batch_id=hopeless, domain="ok-7.test", updated_at=long_ago),
                ])
            # The ORM's onupdate must not have made them fresh.
            async with transaction(engine) as session:
                for row in await session.scalars(select(BatchJob)):
                    row.updated_at = long_ago
        finally:
            await engine.dispose()

    asyncio.run(insert())


def test_recover_resumes_a_stale_batch_and_fails_a_hopeless_one(cli_env: dict[str, str], farm: Farm) -> None:
    cli_env["SCRAPERSKY_CONNECT_TO"] = " ".join(farm.connect_to())
    assert scrapersky(cli_env, "db", "init").returncode == 0
    dead_run, resumable, hopeless = str(uuid.uuid4()), uuid.uuid4(), uuid.uuid4()  # a run Prefect never had
    _stale_batches(cli_env["DATABASE_URL"], dead_run, resumable, hopeless)

    recovered = scrapersky(cli_env, "recover", "--stale-after", "1")

    assert recovered.returncode == 0, recovered.stderr
    assert "resumed 1 batch(es), failed 1" in recovered.stdout
    assert f"resumed {resumable}" in recovered.stdout and f"failed  {hopeless}" in recovered.stdout

    resumed = json.loads(scrapersky(cli_env, "status", str(resumable), "--json").stdout)
    assert (resumed["status"], resumed["total_domains"], resumed["completed_domains"], resumed["failed_domains"]) == (
        "partial", 3, 2, 1,
    )
    assert resumed["progress"] == 1.0 and resumed["end_time"] is not None
    statuses = resumed["domain_statuses"]
    assert {d: e["status"] for d, e in statuses.items()} == {
        "ok-5.test": "completed", "ok-6.test": "completed", "notfound-6.test": "failed",
    }
    assert statuses["ok-6.test"]["metadata"]["title"] == "ok-6"
    assert (statuses["notfound-6.test"]["error_type"], statuses["notfound-6.test"]["http_status"]) == ("http_error", 404)
    # What the dead run saved is kept, not fetched again.
    assert statuses["ok-5.test"]["metadata"]["title"] == "saved by the dead run"
    assert farm.hits["ok-5.test"] == 0 and farm.hits["ok-6.test"] == 1
    recovery = resumed["metadata"]["recovery"]
    assert recovery["attempts"] == 1 and recovery["dead_flow_runs"] == [dead_run]
    assert "unknown to Prefect" in recovery["last_reason"]
    assert resumed["metadata"]["flow_run_id"] not in (None, dead_run)  # the recovery's own run owns it now

    failed = json.loads(scrapersky(cli_env, "status", str(hopeless), "--json").stdout)
    assert failed["status"] == "failed" and failed["end_time"] is not None
    assert "recovery gave up after 4 runs of the batch died" in failed["error"]
    assert farm.hits["ok-7.test"] == 0

    again = scrapersky(cli_env, "recover", "--stale-after", "1")
    assert again.returncode == 0 and "resumed 0 batch(es), failed 0" in again.stdout  # both are final now


def local_server_env(tmp_path: Path, home: str = "prefect-home") -> dict[str, str]:
    """No PREFECT_API_URL: the command starts a Prefect server of its own."""
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / home), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'local.db'}",
               SCRAPERSKY_RETRY_BACKOFF="0.01")
    env.pop("PREFECT_API_URL", None)
    return env


def servers_of(home: Path) -> list:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if "prefect" in cmdline and "server" in cmdline and (process.info["environ"] or {}).get("PREFECT_HOME") == str(home):
                found.append(process)
        except (psutil.Error, TypeError):
            continue
    return found


def test_a_sigkilled_scrape_leaves_no_prefect_server_behind(farm: Farm, tmp_path: Path) -> None:
    import signal

    env = local_server_env(tmp_path)
    home = Path(env["PREFECT_HOME"])
    scrape = subprocess.Popen([sys.executable, "-m", "scrapersky.cli", "scrape", *[f"delay-k{i}.test" for i in range(400)],
                               "--concurrency", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while not (servers_of(home) and sum(farm.hits.values()) > 0):
            assert time.monotonic() < deadline and scrape.poll() is None, "the batch did not start"
            time.sleep(0.2)
    finally:
        scrape.send_signal(signal.SIGKILL)
        scrape.wait()
    deadline = time.monotonic() + 20
    while servers_of(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_of(home) == []


def test_two_commands_on_a_fresh_prefect_home_both_run(farm: Farm, tmp_path: Path) -> None:
    env = local_server_env(tmp_path)
    runs = [subprocess.Popen([sys.executable, "-m", "scrapersky.cli", "scrape", f"ok-twin{n}.test", "--json"],
                             env=dict(env, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / f'twin{n}.db'}"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(2)]
    for run in runs:
        out, errors = run.communicate(timeout=300)
        assert run.returncode == 0, errors[-2000:]
        assert json.loads(out)["status"] == "completed"
        assert "Traceback" not in errors and "already exists" not in errors
    assert servers_of(Path(env["PREFECT_HOME"])) == []


def test_a_batch_too_large_for_a_flow_parameter_runs_by_reference(
    cli_env: dict[str, str], farm: Farm, tmp_path: Path
) -> None:
    """Red-team finding 9: thousands of URL-form entries (10,000 took 600 KB) or one 10 MB
    line are more than Prefect's 512 KiB of flow-run parameters. The batch is registered
    first and its run reads the recorded domains: it runs whole, nothing is echoed."""
    cli_env["SCRAPERSKY_CONNECT_TO"] = " ".join(farm.connect_to())
    cli_env["SCRAPERSKY_RETRIES"] = "0"
    invalid = [f"https://www.invalid_label-{i:05d}.test/{'a/' * 150}page.html" for i in range(1_996)]
    lines = ["ok-1.test", "https://OK-2.test/", *invalid, "ok-3.test", "x" * 10_000_000]
    file = tmp_path / "large.txt"
    file.write_text("\n".join(lines) + "\n")
    assert len(json.dumps(lines[:-1])) > 600 * 1024  # each part alone is over what Prefect takes

    scraped = scrapersky(cli_env, "scrape", "--file", str(file), "--json")

    assert scraped.returncode == 0, scraped.stderr[-2000:]
    assert len(scraped.stderr) < 2_000  # no traceback, no entry echoed
    report = json.loads(scraped.stdout)
    assert (report["status"], report["total_domains"]) == ("partial", 2_000)
    assert (report["completed_domains"], report["failed_domains"]) == (3, 1_997)
    statuses = report["domain_statuses"]
    assert {d for d, e in statuses.items() if e["status"] == "completed"} == {"ok-1.test", "ok-2.test", "ok-3.test"}
    assert {e["error_type"] for e in statuses.values() if e["status"] == "failed"} == {"invalid_domain"}
    assert max(len(d) for d in statuses) <= 255 and max(len(e["error"]) for e in statuses.values() if e["error"]) < 1_000
    assert report["metadata"]["input"]["submitted"] == 2_000  # the submission's counts, kept
    assert len(scraped.stdout) < 12 * 1024 * 1024

    # Resumed by id alone: the recorded domains, nothing fetched again.
    hits = sum(farm.hits.values())
    resumed = scrapersky(cli_env, "scrape", "--batch-id", report["batch_id"], "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["completed_domains"] == 3
    assert sum(farm.hits.values()) == hits


def test_extract_a_saved_page_a_url_and_bad_input(farm: Farm, tmp_path: Path) -> None:
    env = dict(os.environ)
    saved = tmp_path / "page.html"
    saved.write_text(
        "<html><head><title>Acme Tools | Acme</title><meta property='og:title' content='Acme Tools'>"
        "<link rel='canonical' href='https://acme.example/'><link rel='apple-touch-icon' href='/touch.png'>"
        "</head><body></body></html>", encoding="utf-8")
    found = scrapersky(env, "extract", str(saved), "--json")
    assert found.returncode == 0, found.stderr
    meta = json.loads(found.stdout)
    # relative links resolved against the page's own canonical URL
    assert (meta["title"], meta["logo_url"]) == ("Acme Tools", "https://acme.example/touch.png")
    assert "Acme Tools" in scrapersky(env, "extract", str(saved)).stdout

    # a URL goes through the batch's fetcher (here routed to the local farm)
    fetched = scrapersky(env, "extract", "http://ok-7.test/", "--json",
                         "--connect-to", farm.connect_to()[0])
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["title"] and farm.hits["ok-7.test"] == 1

    for args, code, words in [
        (["extract", str(tmp_path / "missing.html")], 2, "no such file"),
        (["extract", str(tmp_path)], 2, "no such file"),
        (["extract", "https://[::1"], 2, "not a URL"),
        # the address guard applies: loopback is refused before any connection
        (["extract", "http://127.0.0.1:9/"], 1, "blocked_address"),
    ]:
        run = scrapersky({k: v for k, v in env.items() if k != "SCRAPERSKY_CONNECT_TO"}, *args)
        assert run.returncode == code, (args, run.stdout, run.stderr)
        assert run.stderr.startswith("error:") and words in run.stderr and run.stderr.count("\n") == 1, run.stderr
    empty = tmp_path / "empty.html"
    empty.write_bytes(b"  ")
    run = scrapersky(env, "extract", str(empty))
    assert run.returncode == 2 and run.stderr.startswith("error: empty_body"), run.stderr
