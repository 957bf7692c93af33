"""A newcomer's first hour (issue 17): a quiet temporary Prefect server, one-line errors,
doctor on SQLite, submit's database, the farm served for real-looking scrapes, and a
finished batch that is not grown."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from scrapersky.farm import Farm

from test_cli import TENANT, cli_env, local_server_env, scrapersky  # noqa: F401  (cli_env: a fixture)

BAD_SETTINGS = {
    "malformed DATABASE_URL": {"DATABASE_URL": "not a database url"},
    "non-numeric port": {"DATABASE_URL": "postgresql://scraper:s3cret-pw@127.0.0.1:abc/db"},
    "out-of-range port": {"DATABASE_URL": "postgresql://scraper:s3cret-pw@127.0.0.1:99999/db"},
    "unknown driver": {"DATABASE_URL": "mysql://scraper:s3cret-pw@127.0.0.1/db"},
    "tenant": {"SCRAPERSKY_TENANT_ID": "zzz"},
    "a number that is not": {"SCRAPERSKY_CONCURRENCY": "abc"},
    "an API token entry": {"SCRAPERSKY_API_TOKENS": "s3cret-pw"},
}
BATCH = "5b0c1a36-0000-4000-8000-000000000001"
COMMANDS = {
    "scrape": ["scrape", "ok-1.test"],
    "submit": ["submit", "ok-1.test"],
    "status": ["status", BATCH],
    "export": ["export", BATCH],
    "doctor": ["doctor"],
    "db check": ["db", "check"],
    "db upgrade": ["db", "upgrade"],
    "db init": ["db", "init"],
    "recover": ["recover"],
    "api": ["api", "--port", "1"],
    "up": ["up"],
    "demo": ["demo"],
}


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command as `scrapersky ARGS` runs it (the app's own error path), in this process."""
    from scrapersky.cli import app

    with pytest.raises(SystemExit) as ended:
        app(list(args), prog_name="scrapersky")
    captured = capsys.readouterr()
    return ended.value.code, captured.out, captured.err


def assert_one_line(code: int, out: str, err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert (code, out, len(lines)) == (2, "", 1), (code, out, err)
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert "s3cret-pw" not in err
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture
def newcomer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment: no PREFECT_API_URL would be reached (a closed loopback port),
    the database a SQLite file of this test's."""
    for name in [n for n in os.environ if n.startswith("SCRAPERSKY_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'newcomer.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("bad", list(BAD_SETTINGS))
def test_every_command_refuses_a_bad_setting_in_one_line(
    bad: str, newcomer_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in BAD_SETTINGS[bad].items():
        monkeypatch.setenv(name, value)
    variable = next(iter(BAD_SETTINGS[bad]))
    for command, args in COMMANDS.items():
        code, out, err = run_in_process(capsys, *args)
        assert_one_line(code, out, err, variable)


def test_files_named_on_the_command_line_fail_in_one_line(
    newcomer_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scrapersky.client import register_batch
    from scrapersky.settings import Settings

    latin1 = newcomer_env / "domains-latin1.txt"
    latin1.write_bytes("ok-1.test\ncaf\xe9.test\n".encode("latin-1"))
    for command in ("scrape", "submit"):
        assert_one_line(*run_in_process(capsys, command, "--file", str(latin1)), "not UTF-8")
        assert_one_line(*run_in_process(capsys, command, "--file", str(newcomer_env / "missing.txt")),
                        "No such file")

    asyncio.run(Settings.load().database().prepare())
    asyncio.run(register_batch(["ok-1.test"], uuid.UUID(TENANT), batch_id=uuid.UUID(BATCH), settings=Settings.load()))
    code, out, err = run_in_process(capsys, "export", BATCH, "--tenant", TENANT, "-o",
                                    str(newcomer_env / "no-such-dir" / "out.csv"))
    assert_one_line(code, out, err, "cannot write", "no-such-dir")


def test_an_error_is_one_line_and_exit_2_and_debug_shows_its_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL="postgresql://scraper:s3cret-pw@127.0.0.1:99999/db")
    plain = scrapersky(env, "db", "check")
    assert (plain.returncode, plain.stdout, plain.stderr.strip().count("\n")) == (2, "", 0), plain.stderr
    assert plain.stderr.startswith("error: DATABASE_URL: port 99999")
    debug = scrapersky(env, "--debug", "db", "check")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert "s3cret-pw" not in plain.stderr + debug.stderr


def test_doctor_passes_the_database_on_sqlite(newcomer_env: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from scrapersky.cli import app

    monkeypatch.delenv("PREFECT_API_URL")
    with pytest.raises(SystemExit):
        app(["db", "init"], prog_name="scrapersky")
    capsys.readouterr()
    # Not the session's test harness either (its API URL is a setting of this process).
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, out, err = run_in_process(capsys, "doctor")
    lines = out.splitlines()
    assert lines[0].startswith("PASS database") and "SQLite 3." in lines[0], out
    assert lines[1].startswith("PASS schema"), out
    # No temporary server for doctor: what it would check (pool, worker, deployment) never exists there.
    assert lines[2].startswith("FAIL prefect api") and "PREFECT_API_URL is not set" in lines[2]
    assert code == 1 and err == ""


def test_submit_refuses_a_local_sqlite_file_with_a_remote_prefect_api(
    newcomer_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import scrapersky.client
    from scrapersky.client import submit_batch
    from scrapersky.errors import ConfigError
    from scrapersky.settings import Settings

    async def never(*args, **kwargs):
        raise AssertionError("Prefect was asked")

    monkeypatch.setattr(scrapersky.client, "_trigger", never)
    settings = Settings.load()
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.internal.invalid:4200/api"}):
        with pytest.raises(ConfigError, match="SQLite file .*newcomer.db.*prefect.internal.invalid"):
            asyncio.run(submit_batch(["ok-1.test"], settings=settings))
    assert not (newcomer_env / "newcomer.db").exists()  # nothing recorded where no worker looks


def test_submit_records_the_row_before_it_returns_and_says_where(stack) -> None:
    batch_id = uuid.uuid4()
    submitted = stack.scrapersky("submit", "delay-row-1.test", "--batch-id", str(batch_id))
    report = stack.status(batch_id)  # at once: no "not found" while the run starts
    assert submitted.returncode == 0, submitted.stderr
    assert report.status in ("pending", "processing", "completed"), report.status
    where = stack.database_url.split("@")[-1]
    assert f"recorded in postgresql+asyncpg://postgres@{where}" in submitted.stderr, submitted.stderr


def test_farm_serves_the_demo_sites_and_prints_a_scrape_command_that_works(cli_env: dict[str, str]) -> None:
    served = subprocess.Popen([sys.executable, "-m", "scrapersky.cli", "farm", "--for", "60"], env=cli_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = [served.stdout.readline() for _ in range(5)]
        command = next(line for line in printed if " scrape " in line and not line.startswith("#"))
        export = next(line for line in printed if line.startswith("export SCRAPERSKY_CONNECT_TO="))
        args = shlex.split(command)
        rules = [args[i + 1] for i, arg in enumerate(args) if arg == "--connect-to"]
        assert any(rule.startswith("*.test:80:127.0.0.1:") for rule in rules)
        assert any(rule.startswith("*.test:443:127.0.0.1:") for rule in rules)  # https never reaches real DNS
        assert shlex.split(export.split("=", 1)[1]) == [" ".join(rules)]
        scraped = scrapersky(cli_env, *args[1:], "--json")  # the printed command, as printed
        assert scraped.returncode == 0, scraped.stderr
        statuses = json.loads(scraped.stdout)["domain_statuses"]
        assert statuses["ok-1.test"]["metadata"]["title"] == "ok-1"
        assert statuses["notfound-1.test"]["http_status"] == 404
        assert served.poll() is None  # still serving
    finally:
        served.terminate()
        served.wait(timeout=30)
    assert served.returncode == 0


def test_a_finished_batch_is_resumed_with_its_domains_but_not_grown(cli_env: dict[str, str], farm: Farm,
                                                                     tmp_path: Path) -> None:
    cli_env["SCRAPERSKY_CONNECT_TO"] = " ".join(farm.connect_to())
    cli_env.pop("PREFECT_LOGGING_LEVEL", None)  # the command's own default, as a user runs it
    listing = tmp_path / "domains.txt"
    listing.write_text("ok-grow-1.test   # the first\nok-grow-2.test\t# the second\n# a line of its own\n")
    first = scrapersky(cli_env, "scrape", "--file", str(listing), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert set(report["domain_statuses"]) == {"ok-grow-1.test", "ok-grow-2.test"}  # comments are no entries

    grown = scrapersky(cli_env, "scrape", "ok-grow-3.test", "--batch-id", report["batch_id"], "--json")
    assert grown.returncode == 2 and grown.stdout == ""
    assert len(grown.stderr.strip().splitlines()) == 1 and "batch_finished" in grown.stderr
    assert "ok-grow-3.test not among them" in grown.stderr
    assert farm.hits["ok-grow-3.test"] == 0
    unchanged = json.loads(scrapersky(cli_env, "status", report["batch_id"], "--json").stdout)
    assert (unchanged["status"], unchanged["total_domains"]) == ("completed", 2)  # the refused run left it be

    again = scrapersky(cli_env, "scrape", "--file", str(listing), "--batch-id", report["batch_id"], "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["total_domains"] == 2


def in_terminal(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """``argv`` run on a pseudo-terminal (as a user at a terminal sees it: spinners, bars,
    Prefect's first-run notice): its exit status and everything it showed, ANSI codes removed."""
    import pty
    import re
    import select

    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1.0)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal's other end is closed: the command ended
                    break
                if not chunk:
                    break
                shown += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    return code, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.decode(errors="replace"))


def test_a_200_domain_scrape_on_the_temporary_server_is_quiet(farm: Farm, tmp_path: Path) -> None:
    """In a terminal, with no PREFECT_API_URL and no DO_NOT_TRACK, as a newcomer runs it:
    a counter while the command's own Prefect server starts, Prefect's first-run notice
    (if any) before it, not inside the bar; the server stopped once it has written every
    task run; no traceback and no ERROR line, on the terminal or in the server's log."""
    env = local_server_env(tmp_path)
    env.pop("DO_NOT_TRACK", None)
    env.pop("PREFECT_LOGGING_LEVEL", None)
    env["COLUMNS"] = "200"
    domains = [f"ok-quiet-{i}.test" for i in range(200)]
    started = time.monotonic()
    code, shown = in_terminal([sys.executable, "-m", "scrapersky.cli", "scrape", *domains], env, timeout=300)
    assert code == 0, shown[-3000:]
    assert "completed  200 completed, 0 failed of 200" in shown, shown[-3000:]
    assert "Traceback" not in shown and "ERROR" not in shown, shown[-3000:]
    assert re.search(r"starting Prefect\.\.\. +\d+ s", shown), shown[:2000]
    notice = shown.find("Prefect collects anonymous usage data")
    assert notice < shown.index("starting Prefect"), shown[:2000]  # -1: not shown (e.g. under CI)
    server_log = (Path(env["PREFECT_HOME"]) / "scrapersky-server.log").read_text(errors="replace")
    assert "Traceback" not in server_log and "ERROR" not in server_log, server_log[-3000:]
    with sqlite3.connect(Path(env["PREFECT_HOME"]) / "prefect.db") as prefect_db:  # every state written
        states = dict(prefect_db.execute("select state_type, count(*) from task_run group by state_type").fetchall())
    assert set(states) == {"COMPLETED"} and states["COMPLETED"] >= 200, states
    print(f"200 domains on the temporary server: {time.monotonic() - started:.1f} s")
