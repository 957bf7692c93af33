"""``scrapersky up`` end to end: the command started as a user starts it (a subprocess,
free loopback ports, a scratch PostgreSQL database, the loopback web farm behind
SCRAPERSKY_CONNECT_TO), a batch submitted through its API with the old dashboard's
static token until it completes, the old dashboard's page driven in headless Chromium
from the API's origin, and SIGTERM: every process `up` started is gone, the ports free.

Also, without a stack: the deployments `up` creates say what prefect.yaml says, a
taken port is one line, a relative SQLite path is made absolute for the stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from conftest import POSTGRES_ADMIN_URL, _admin
from scrapersky.db.engine import Database
from scrapersky.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "scraper_sky_2024"  # the old dashboard's
PASSWORD = "up-test-secret-pw"  # in DATABASE_URL (the local server trusts loopback): never printed
STARTUP_TIMEOUT = 180  # a fresh PREFECT_HOME migrates for 20+ s on a busy machine
STOP_BOUND = 45  # s: up's stop waits 15 s per part at most before SIGKILL


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _clean_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCRAPERSKY_", "DATABASE_URL"))} | {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "250",
    } | extra


@dataclass
class Up:
    process: subprocess.Popen
    api_url: str
    ui_url: str
    tenant: uuid.UUID
    database_url: str
    farm: Farm
    out: Path
    err: Path
    home: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def logs(self) -> str:
        found = sorted((self.home / "scrapersky-up").glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in found)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.api_url}/api/v3/batch_page_scraper", trust_env=False, timeout=30,
                            headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, migrated_prefect_home: Callable[[str], Path]) -> Iterator[Up]:
    """`scrapersky up` on free ports, ready (it printed its URLs)."""
    name = f"scrapersky_up_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    database_url = f"{base}/{name}".replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    asyncio.run(Database(database_url).upgrade())  # as an operator would: db upgrade
    tenant = uuid.uuid4()
    home = tmp_path_factory.mktemp("up-home")
    prefect_home = migrated_prefect_home("up-prefect-home")
    api_port, ui_port = _free_port(), _free_port()
    farm = Farm()
    farm.__enter__()
    env = _clean_env(
        DATABASE_URL=database_url,
        SCRAPERSKY_CONNECT_TO=" ".join(farm.connect_to()),
        SCRAPERSKY_API_TOKENS=f"{TOKEN}={tenant}",
        SCRAPERSKY_RETRY_BACKOFF="0.2",
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    out, err = home / "up.out", home / "up.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(BIN / "scrapersky"), "up", "--api-port", str(api_port), "--ui-port", str(ui_port),
             "--prefect-home", str(prefect_home)],
            env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )
    stack = Up(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", tenant, database_url, farm,
               out, err, prefect_home)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while "ready" not in out.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"up did not start (exit {process.poll()}):\n{stack.output()}\n{stack.logs()}")
            time.sleep(0.5)
        yield stack
    finally:
        if process.poll() is None:  # a test failed before the SIGTERM test: leave nothing behind
            tree = [process, *psutil.Process(process.pid).children(recursive=True)]
            process.terminate()
            _, alive = psutil.wait_procs(tree, timeout=STOP_BOUND)
            for leftover in alive:
                leftover.kill()
        farm.__exit__(None, None, None)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _wait_final(api: httpx.Client, batch_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = api.get(f"/batch/{batch_id}/status")
        assert status.status_code == 200, status.text
        body = status.json()
        if body["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"batch {batch_id} not final after {timeout} s: {body}"
        time.sleep(0.5)


def test_up_prints_its_urls_and_no_secret(up: Up) -> None:
    printed = up.out.read_text()
    assert f"Prefect UI   {up.ui_url}" in printed
    assert f"API          {up.api_url}/api/v3/batch_page_scraper" in printed
    assert f"{up.api_url}/static/batch-domain-scanner.html" in printed
    assert "postgres:***@" in printed
    assert PASSWORD not in up.output() + up.logs()
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
        final = _wait_final(api, batch_id)
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


def test_sigterm_stops_every_process_up_started(up: Up) -> None:
    """Defined last: it stops the module's stack."""
    root = psutil.Process(up.process.pid)
    tree = [root, *root.children(recursive=True)]
    names = " ".join(" ".join(p.cmdline()[:6]) for p in tree)
    assert "server start" in names and "worker start" in names and " api " in f"{names} ", names
    started = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    gone, alive = psutil.wait_procs(tree, timeout=STOP_BOUND)
    assert not alive, f"still running {STOP_BOUND} s after SIGTERM: {alive}"
    assert up.process.wait(timeout=5) == 0, up.output()
    elapsed = time.monotonic() - started
    for url in (up.api_url, up.ui_url):
        assert _port_free(int(url.rsplit(":", 1)[1])), url
    assert "stopping" in up.err.read_text() and "stopped" in up.err.read_text()
    print(f"{len(tree)} processes stopped in {elapsed:.1f} s")


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
            [str(BIN / "scrapersky"), "up", "--ui-port", str(port), "--api-port", str(_free_port()),
             "--prefect-home", str(tmp_path / "home")],
            env=_clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'b.db'}"), cwd=tmp_path, capture_output=True,
            text=True, timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: port {port} on 127.0.0.1 is taken (--ui-port): stop what uses it or pick another"


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
