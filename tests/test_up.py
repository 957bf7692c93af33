"""``scrapersky up`` end to end: the command started as a user starts it (a subprocess,
free loopback ports, a scratch PostgreSQL database, the loopback web farm behind
SCRAPERSKY_CONNECT_TO; tests/up_process.py), a batch submitted through its API with the
old dashboard's static token until it completes, the Prefect server's state in its own
PostgreSQL database beside ours, the recovery run `up` asks for once its worker is
online, the old dashboard's page driven in headless Chromium from the API's origin, and
SIGTERM (then SIGINT while stopping): the API, the worker and the server stop in that
order, every process `up` started is gone, the ports free.

Also, without a stack: the deployments `up` creates say what prefect.yaml says, a
taken port is one line, a Prefect database that cannot be created is one line, where
the server keeps its state, a part that keeps dying stops the stack, a relative SQLite
path is made absolute for the stack.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
import yaml

from scrapersky.farm import Farm
from up_process import BIN, PASSWORD, STOP_BOUND, Up, clean_env, free_port, port_free, running_up

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, prefect_postgres_template: str) -> Iterator[Up]:
    """`scrapersky up` on free ports, its Prefect server on PostgreSQL, ready."""
    with Farm() as farm, running_up(tmp_path_factory.mktemp("up-home"), prefect_postgres_template, farm) as stack:
        yield stack


def test_up_prints_its_urls_and_no_secret(up: Up) -> None:
    printed = up.out.read_text()
    assert f"Prefect UI   {up.ui_url}" in printed
    assert f"API          {up.api_url}/api/v3/batch_page_scraper" in printed
    assert f"{up.api_url}/static/batch-domain-scanner.html" in printed
    assert "postgres:***@" in printed
    assert f"Prefect db   postgresql+asyncpg://postgres:***@127.0.0.1:5432/{up.prefect_database_name}  (" in printed
    assert PASSWORD not in up.output() + up.logs()
    # The server's database is the server's only: not in the environment of the worker
    # (and so of its flow runs) nor of the API.
    assert up.part("server start").environ()["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith(
        f"/{up.prefect_database_name}")
    for other in ("worker start", "scrapersky.cli api"):
        assert not {"PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"} & set(
            up.part(other).environ()), other
    with httpx.Client(trust_env=False, timeout=10) as client:
        assert client.get(f"{up.ui_url}/api/health").status_code == 200
        health = client.get(f"{up.api_url}/health")
        assert health.status_code == 200, health.text
        assert {name for name, check in health.json()["checks"].items() if check["status"] == "ok"} >= {
            "database", "worker"}
        names = [d["name"] for d in client.post(f"{up.ui_url}/api/deployments/filter", json={}).json()]
        assert sorted(names) == ["batch-scrape", "nightly-watchlist", "recover-stale-batches"]


def test_a_batch_submitted_through_the_api_completes(up: Up) -> None:
    domains = ["ok-up-1.test", "ok-up-2.test", "notfound-up.test"]
    with up.api() as api:
        created = api.post("/batch", json={"domains": domains, "max_pages": 5, "max_concurrent": 3})
        assert created.status_code == 200, created.text
        batch_id = created.json()["batch_id"]
        final = up.wait_final(api, batch_id)
    assert final["status"] == "completed" and final["batch_status"] == "partial", final  # the old word: a poller stops
    assert (final["completed_domains"], final["failed_domains"], final["progress"]) == (2, 1, 1.0)
    assert set(final["domain_statuses"]) == set(domains)

    from scrapersky.db.batches import get_batch_status
    from scrapersky.db.engine import unit_of_work

    async def stored():
        async with unit_of_work(up.database_url) as session:
            return await get_batch_status(session, uuid.UUID(batch_id), up.tenant)

    report = asyncio.run(stored())
    assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 2, 1)
    assert up.farm.hits["ok-up-1.test"] == 1


def test_the_prefect_server_keeps_its_state_in_postgresql(up: Up) -> None:
    """The batch above is a flow run in `<db>_prefect` (Prefect's tables there, migrated
    from the template); no SQLite file under PREFECT_HOME; and the recovery deployment
    had one run asked for when the worker came online."""
    async def read() -> tuple[int, list[str]]:
        connection = await asyncpg.connect(up.admin_url(up.prefect_database_name))
        try:
            runs = await connection.fetchval(
                "select count(*) from flow_run join deployment on deployment.id = flow_run.deployment_id "
                "where deployment.name = 'batch-scrape'")
            recovery = await connection.fetch(
                "select flow_run.state_type from flow_run join deployment on deployment.id = flow_run.deployment_id "
                "where deployment.name = 'recover-stale-batches' and flow_run.auto_scheduled is not true")
            return runs, [str(row["state_type"]) for row in recovery]
        finally:
            await connection.close()

    runs, recovery = asyncio.run(read())
    assert runs >= 1
    assert not (up.home / "prefect.db").exists(), sorted(up.home.iterdir())
    assert "asked for a run of recover-stale-batches/recover-stale-batches" in up.err.read_text(), up.output()
    assert len(recovery) == 1, recovery  # one asked for by `up` (the schedule's own are auto_scheduled)


def test_dashboard_page_submits_and_stops_polling_at_100_percent(up: Up) -> None:
    from flow_run_screenshot import open_page

    domains = [f"ok-page-{i}.test" for i in range(1, 6)] + ["err500-page.test"]
    with open_page(window="1200,900") as page:
        page.call("Page.navigate", url=f"{up.api_url}/static/batch-domain-scanner.html")
        page.wait_for("document.readyState === 'complete' && !!window.scanner", 30)
        assert page.evaluate("location.origin") == up.api_url
        page.evaluate(f"document.getElementById('domainList').value = {json.dumps(chr(10).join(domains))}")
        page.evaluate("document.getElementById('importBtn').click()")
        page.wait_for("!!window.scanner.batchId || !!window.scanner.error", 30)
        assert page.evaluate("window.scanner.error") is None
        final = "window.scanner.lastStatus && ['completed', 'failed'].includes(window.scanner.lastStatus.status)"
        page.wait_for(f"({final}) || !!window.scanner.error", 120)
        state = page.evaluate("JSON.stringify({s: window.scanner.lastStatus.status, p: window.scanner.polling, "
                              "i: window.scanner.pollingInterval, n: window.scanner.statusRequests, "
                              "w: document.getElementById('progressBar').style.width, "
                              "t: document.getElementById('progressText').textContent, "
                              "rows: document.getElementById('domainRows').rows.length})")
        state = json.loads(state)
        assert state["s"] == "completed" and state["w"] == "100%", state
        assert state["t"].startswith("100% (6/6)") and state["rows"] == 6, state
        assert state["p"] is False and state["i"] is None and state["n"] >= 1, state
        time.sleep(5)  # more than two polling intervals (2 s): no status request after the end
        assert page.evaluate("window.scanner.statusRequests") == state["n"]
        batch_id = page.evaluate("window.scanner.batchId")
    with up.api() as api:
        body = api.get(f"/batch/{batch_id}/status").json()
    assert (body["completed_domains"], body["failed_domains"], body["batch_status"]) == (5, 1, "partial")


def test_sigterm_stops_the_api_then_the_worker_then_the_server(up: Up) -> None:
    """Defined last: it stops the module's stack. A SIGINT while stopping (Ctrl-C
    twice) is said, and the order and the bound are kept."""
    root = psutil.Process(up.process.pid)
    tree = [root, *root.children(recursive=True)]
    names = " ".join(" ".join(p.cmdline()[:6]) for p in tree)
    assert "server start" in names and "worker start" in names and " api " in f"{names} ", names
    order = {"API": up.part("scrapersky.cli api"), "worker": up.part("worker start"),
             "server": up.part("server start")}
    started = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    up.process.send_signal(signal.SIGINT)
    gone_at: dict[str, float] = {}
    while len(gone_at) < len(order) and time.monotonic() < started + STOP_BOUND:
        for name, process in order.items():
            if name not in gone_at and not process.is_running():
                gone_at[name] = time.monotonic() - started
        time.sleep(0.05)
    gone, alive = psutil.wait_procs(tree, timeout=max(1.0, started + STOP_BOUND - time.monotonic()))
    assert not alive, f"still running {STOP_BOUND} s after SIGTERM: {alive}"
    assert up.process.wait(timeout=5) == 0, up.output()
    elapsed = time.monotonic() - started
    assert gone_at["API"] <= gone_at["worker"] <= gone_at["server"], gone_at
    for url in (up.api_url, up.ui_url):
        assert port_free(int(url.rsplit(":", 1)[1])), url
    said = up.err.read_text()
    assert "SIGTERM: stopping" in said and "SIGINT again: already stopping, in order" in said, said
    assert said.rstrip().endswith("stopped"), said
    print(f"{len(tree)} processes stopped in {elapsed:.1f} s; gone at {gone_at}")


# -- without a stack ----------------------------------------------------------------

def test_deployments_say_what_prefect_yaml_says() -> None:
    from scrapersky.deployments import deployments

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    built = {d.name: d for d in deployments()}
    assert set(built) == {d["name"] for d in config["deployments"]}
    for spec in config["deployments"]:
        ours = built[spec["name"]]
        assert ours.entrypoint == spec["entrypoint"].replace(":", "."), spec["name"]
        assert ours.work_pool_name == spec["work_pool"]["name"] == "scrapersky"
        assert (ours.description, ours.tags, ours.parameters) == (spec["description"], spec["tags"], spec["parameters"])
        assert ours.concurrency_limit == spec["concurrency_limit"]["limit"]
        assert ours.concurrency_options.collision_strategy == spec["concurrency_limit"]["collision_strategy"]
        assert len(ours.schedules) == len(spec.get("schedules", []))
        for schedule, expected in zip(ours.schedules, spec.get("schedules", [])):
            assert schedule.slug == expected["slug"] and schedule.active == expected.get("active", True)
            if "cron" in expected:
                assert (schedule.schedule.cron, schedule.schedule.timezone) == (expected["cron"], expected["timezone"])
            else:
                assert schedule.schedule.interval.total_seconds() == expected["interval"]


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "scrapersky"), "up", "--ui-port", str(port), "--api-port", str(free_port()),
             "--prefect-home", str(tmp_path / "home")],
            env=clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'b.db'}"), cwd=tmp_path, capture_output=True,
            text=True, timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is taken (--ui-port): stop what uses it or pick another"


def test_a_prefect_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    nobody = free_port()  # nothing listens there
    result = subprocess.run(
        [str(BIN / "scrapersky"), "up", "--ui-port", str(free_port()), "--api-port", str(free_port()),
         "--prefect-home", str(tmp_path / "home")],
        env=clean_env(DATABASE_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{nobody}/batches"), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot create the Prefect server's database 'batches_prefect' through "
                           f"postgresql+asyncpg://postgres:***@127.0.0.1:{nobody}/batches "
                           "(ConnectionRefusedError"), last
    assert last.endswith("create it, or set PREFECT_API_DATABASE_CONNECTION_URL"), last
    assert PASSWORD not in result.stdout + result.stderr


def test_where_the_prefect_server_keeps_its_state(tmp_path: Path) -> None:
    from scrapersky.errors import ConfigError
    from scrapersky.stack import prefect_database

    ours = "postgresql://u:secret@db.example:6543/batches?sslmode=require"
    derived = prefect_database(ours, {})
    assert derived.create
    assert derived.url == "postgresql+asyncpg://u:secret@db.example:6543/batches_prefect?sslmode=require"
    assert derived.where(tmp_path) == "postgresql+asyncpg://u:***@db.example:6543/batches_prefect?sslmode=require"
    assert "secret" not in repr(derived)
    for setting in ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        given = prefect_database(ours, {setting: "postgresql+asyncpg://p:pw@elsewhere/prefect"})
        assert (given.url, given.create) == ("postgresql+asyncpg://p:pw@elsewhere/prefect", False)
        assert given.where(tmp_path) == "postgresql+asyncpg://p:***@elsewhere/prefect"
    sqlite = prefect_database(f"sqlite+aiosqlite:///{tmp_path}/b.db", {})
    assert (sqlite.url, sqlite.create) == (None, False)
    assert sqlite.where(tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/prefect.db"
    with pytest.raises(ConfigError, match="longer than PostgreSQL's 63 bytes"):
        prefect_database(f"postgresql://u@h/{'x' * 60}", {})


def test_a_part_that_keeps_dying_stops_the_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead API (or worker) is started again; the sixth death within a minute stops
    the stack with the reason. (The real restart: tests/test_up_crowd.py.)"""
    from scrapersky.stack import MAX_RESTARTS, Part, Stack, StackConfig, StackError

    said: list[str] = []
    stack = Stack(StackConfig(prefect_home=tmp_path), said.append)
    log = tmp_path / "api.log"
    log.write_text("address already in use\n")

    def dead() -> Part:
        process = subprocess.Popen(["false"])
        process.wait(timeout=10)
        return Part("API", process, log)

    starts: list[float] = []

    def start_api(http: httpx.Client) -> None:
        starts.append(time.monotonic())
        stack.api = dead()

    stack.api = dead()
    monkeypatch.setattr(stack, "_start_api", start_api)
    monkeypatch.setattr(stack, "_reap_orphans", lambda: None)  # pytest's other children are not ours
    with pytest.raises(StackError, match=rf"the API exited with 1: address already in use .*; restarted "
                                         rf"{MAX_RESTARTS} times within 60 s already"):
        stack.watch()
    assert len(starts) == MAX_RESTARTS
    assert said[0].startswith("the API exited with 1: restarting (its last line: address already in use"), said


def test_the_stack_shares_one_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scrapersky.errors import ConfigError
    from scrapersky.stack import shared_database_url

    monkeypatch.chdir(tmp_path)
    assert shared_database_url("sqlite+aiosqlite:///scrapersky.db") == f"sqlite+aiosqlite:///{tmp_path}/scrapersky.db"
    assert shared_database_url("sqlite:///a/b.db") == f"sqlite+aiosqlite:///{tmp_path}/a/b.db"
    assert shared_database_url("sqlite:////abs/b.db") == "sqlite+aiosqlite:////abs/b.db"
    assert shared_database_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    with pytest.raises(ConfigError, match="in-memory"):
        shared_database_url("sqlite+aiosqlite://")
