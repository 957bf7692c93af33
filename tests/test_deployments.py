"""Deployments end to end: a real `prefect server start` on loopback, a process work
pool, `prefect deploy --all` from prefect.yaml, a real `prefect worker`, and batches
triggered the three ways users do - the CLI, `run_deployment()`, and the REST API with
the batch id as idempotency key - plus `scrapersky submit`, `scrapersky doctor`, the
recovery deployment on its schedule, and the flow-run page in headless Chromium.

The worker reaches PostgreSQL through PgBouncer in transaction mode, as on Supabase.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from scrapersky.db.batches import BatchStatusReport, get_batch_status
from scrapersky.db.engine import unit_of_work
from scrapersky.batch import DEFAULT_TENANT_ID, BatchStatus, utcnow
from scrapersky.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README_SCREENSHOT = ROOT / "docs" / "flow-run.png"
RECOVERY_INTERVAL = 15  # seconds, for the test; prefect.yaml says 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    api_url: str
    ui_url: str
    env: dict[str, str]  # what a client of this stack runs with (API, database, routing)
    database_url: str
    logs: Path

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def scrapersky(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "scrapersky"), *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def status(self, batch_id: uuid.UUID, tenant_id: uuid.UUID = DEFAULT_TENANT_ID) -> BatchStatusReport:
        async def read() -> BatchStatusReport:
            async with unit_of_work(self.database_url) as session:
                return await get_batch_status(session, batch_id, tenant_id)

        return asyncio.run(read())

    def wait_final(self, batch_id: uuid.UUID, timeout: float = 120) -> BatchStatusReport:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.status(batch_id)
                if BatchStatus(report.status).is_final:
                    return report
            except Exception:  # not created yet
                report = None
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch_id} not final after {timeout} s: {report}\n{self.tail()}")
            time.sleep(0.5)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.iterdir()))


def _wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
            try:
                if client.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(url)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _insert_stale_batch(database_url: str, domains: list[str]) -> uuid.UUID:
    """A batch left 'running' ten minutes ago by a flow run Prefect never heard of."""
    from sqlalchemy import insert

    from scrapersky.db.models import BatchJob, DomainResult

    batch_id = uuid.uuid4()
    then = utcnow() - timedelta(minutes=10)

    async def insert_rows() -> None:
        async with unit_of_work(database_url) as session:
            await session.execute(insert(BatchJob).values(
                batch_id=batch_id, tenant_id=DEFAULT_TENANT_ID, processor_type="domain_metadata",
                status=BatchStatus.PROCESSING, total_domains=len(domains), created_at=then, updated_at=then,
                start_time=then, batch_metadata={"flow_run_id": str(uuid.uuid4())}, options={"retries": 0},
            ))
            await session.execute(insert(DomainResult), [
                {"batch_id": batch_id, "domain": d, "updated_at": then} for d in domains
            ])

    asyncio.run(insert_rows())
    return batch_id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pooled_url: str) -> Iterator[Stack]:
    """Server, work pool, deployments (the recovery one every 15 s) and a worker."""
    home = tmp_path_factory.mktemp("prefect-home")
    logs = tmp_path_factory.mktemp("prefect-logs")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    farm = Farm()
    farm.__enter__()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SCRAPERSKY_"))
    } | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "DATABASE_URL": pooled_url,
        "SCRAPERSKY_CONNECT_TO": " ".join(farm.connect_to()),
        "SCRAPERSKY_STALE_AFTER": "60",
        "SCRAPERSKY_RETRY_BACKOFF": "0.2",
        "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "250",  # whole names in the CLI's tables
    }
    stale = _insert_stale_batch(pooled_url, ["ok-stale-1.test", "ok-stale-2.test", "ok-stale-3.test"])

    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen([str(BIN / "prefect"), *args], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        server = start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        _wait_http(f"{api_url}/health", 120, server)
        stack = Stack(api_url=api_url, ui_url=f"http://127.0.0.1:{port}", env=env,
                      database_url=pooled_url, logs=logs)
        created = stack.prefect("work-pool", "create", "scrapersky", "--type", "process", "--overwrite")
        assert created.returncode == 0, created.stdout + created.stderr

        # prefect.yaml as shipped, but the recovery runs every 15 s for this test.
        config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
        recovery = next(d for d in config["deployments"] if d["name"] == "recover-stale-batches")
        recovery["schedules"][0]["interval"] = RECOVERY_INTERVAL
        test_yaml = logs.parent / "prefect.test.yaml"
        test_yaml.write_text(yaml.safe_dump(config))
        deployed = stack.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(test_yaml))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        start("worker", "worker", "start", "--pool", "scrapersky", "--name", "test-worker", "--limit", "6")
        stack.stale_batch = stale  # type: ignore[attr-defined]
        stack.farm = farm  # type: ignore[attr-defined]
        yield stack
    finally:
        for process in reversed(processes):
            _stop(process)
        farm.__exit__(None, None, None)


def test_deploy_all_created_every_deployment_without_prompts(stack: Stack) -> None:
    listed = stack.prefect("deployment", "ls")
    for name in ("batch-scrape/batch-scrape", "recover-stale-batches/recover-stale-batches",
                 "batch-scrape/nightly-watchlist"):
        assert name in listed.stdout, listed.stdout

    async def read() -> tuple:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            async with get_client() as client:
                batch = await client.read_deployment_by_name("batch-scrape/batch-scrape")
                nightly = await client.read_deployment_by_name("batch-scrape/nightly-watchlist")
                return batch, nightly

    batch, nightly = asyncio.run(read())
    assert batch.work_pool_name == "scrapersky" and batch.global_concurrency_limit.limit == 4
    # The run form: one typed model, bounds and descriptions from pydantic.
    schema = batch.parameter_openapi_schema
    assert schema["required"] == ["batch"]
    request = schema["definitions"]["BatchRequest"]
    assert request["properties"]["domains"]["type"] == "array"
    # At least one domain, or the id of a batch registered with its domains (by reference).
    assert {"required": ["domains"], "properties": {"domains": {"minItems": 1}}} in request["anyOf"]
    assert schema["definitions"]["BatchOptions"]["properties"]["concurrency"]["maximum"] == 256
    assert "description" in request["properties"]["domains"]
    assert nightly.schedules[0].schedule.cron == "0 3 * * *"
    assert nightly.parameters["batch"]["domains"] == ["example.com", "example.org", "example.net"]


def test_cli_trigger_runs_a_batch(stack: Stack) -> None:
    batch_id = uuid.uuid4()
    batch = {"domains": ["ok-cli-1.test", "ok-cli-2.test"], "batch_id": str(batch_id)}
    started = stack.prefect("deployment", "run", "batch-scrape/batch-scrape", "--param", f"batch={json.dumps(batch)}")
    assert started.returncode == 0, started.stdout + started.stderr
    report = stack.wait_final(batch_id)
    assert (report.status, report.completed_domains) == ("completed", 2)


def test_run_deployment_waits_for_the_batch(stack: Stack) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    batch_id = uuid.uuid4()
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        run = run_deployment(
            "batch-scrape/batch-scrape",
            parameters={"batch": {"domains": ["ok-py-1.test", "notfound-py.test"], "batch_id": str(batch_id),
                                  "options": {"retries": 0}}},
            timeout=180,
        )
    assert run.state is not None and run.state.is_completed(), run.state
    report = stack.status(batch_id)
    assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 1, 1)
    assert report.domain_statuses["notfound-py.test"]["error_type"] == "http_error"
    assert report.metadata["flow_run_id"] == str(run.id)


def create(api: httpx.Client, deployment_id: str, body: dict) -> httpx.Response:
    """POST create_flow_run as a careful client does: a server error (a busy SQLite-backed
    server) is tried again, which the idempotency key makes safe."""
    for _ in range(3):
        response = api.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
        if response.status_code < 500:
            break
        time.sleep(1.0)
    return response


def test_rest_trigger_with_idempotency_key_is_one_run_and_one_batch(stack: Stack) -> None:
    batch_id = uuid.uuid4()
    with httpx.Client(base_url=stack.api_url, trust_env=False, timeout=30) as api:
        deployment = api.get("/deployments/name/batch-scrape/batch-scrape").json()
        body = {"parameters": {"batch": {"domains": ["ok-rest-1.test", "ok-rest-2.test", "ok-rest-3.test"],
                                         "batch_id": str(batch_id)}},
                "idempotency_key": str(batch_id)}
        first = create(api, deployment["id"], body)
        second = create(api, deployment["id"], body)
        assert first.status_code in (200, 201), first.text
        assert second.status_code in (200, 201), second.text
        assert second.json()["id"] == first.json()["id"]

        report = stack.wait_final(batch_id)
        assert (report.status, report.completed_domains) == ("completed", 3)
        runs = api.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}}).json()
        assert [r["id"] for r in runs if r["idempotency_key"] == str(batch_id)] == [first.json()["id"]]
        # A run form the schema refuses never becomes a run: a clear error instead.
        refused = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"batch": {"domains": []}}})
        assert refused.status_code == 409 and "domains" in refused.text
    assert stack.farm.hits["ok-rest-1.test"] == 1  # type: ignore[attr-defined]


def test_submit_is_idempotent_and_doctor_runs_a_canary(stack: Stack) -> None:
    batch_id = uuid.uuid4()
    domains = ["ok-sub-1.test", "ok-sub-2.test"]
    submitted = stack.scrapersky("submit", *domains, "--batch-id", str(batch_id), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert json.loads(submitted.stdout) == {"batch_id": str(batch_id), "status": "pending"}
    again = stack.scrapersky("submit", *domains, "--batch-id", str(batch_id), "--wait", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
    assert stack.farm.hits["ok-sub-1.test"] == 1  # type: ignore[attr-defined]
    # By reference: the run's parameters name the batch; its domains are in the database.
    with httpx.Client(base_url=stack.api_url, trust_env=False, timeout=30) as api:
        runs = [r for r in api.post("/flow_runs/filter", json={"limit": 200}).json()
                if r["idempotency_key"] == str(batch_id)]
    assert len(runs) == 1 and runs[0]["parameters"]["batch"]["batch_id"] == str(batch_id)
    assert not runs[0]["parameters"]["batch"].get("domains")

    doctor = stack.scrapersky("doctor", "--canary", "ok-canary.test", "--timeout", "120")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for name in ("database", "schema", "prefect api", "work pool", "worker", "deployment", "canary"):
        assert any(line.startswith(f"PASS {name}") for line in doctor.stdout.splitlines()), doctor.stdout
    pooler_port = httpx.URL(stack.database_url.replace("postgresql://", "http://")).port
    assert f":{pooler_port}/" in doctor.stdout  # the database was checked through PgBouncer


def test_submit_to_a_missing_deployment_fails_the_batch_loudly(stack: Stack) -> None:
    batch_id = uuid.uuid4()
    result = stack.scrapersky("submit", "ok-1.test", "--batch-id", str(batch_id), "--deployment", "batch-scrape/nope")
    assert result.returncode == 2
    assert "submit_failed" in result.stderr or "could not start deployment batch-scrape/nope" in result.stderr
    report = stack.status(batch_id)
    assert report.status == "failed" and "no such deployment" in (report.error or "")


def test_doctor_names_what_is_missing(stack: Stack) -> None:
    env = stack.env | {"PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api"}
    result = subprocess.run([str(BIN / "scrapersky"), "doctor"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("PASS database") for line in lines), result.stdout
    assert any(line.startswith("FAIL prefect api") for line in lines), result.stdout
    stopped = stack.scrapersky("doctor", "--pool", "no-such-pool")
    assert stopped.returncode == 1 and any(l.startswith("FAIL work pool") for l in stopped.stdout.splitlines())


def test_recovery_deployment_runs_on_its_schedule(stack: Stack) -> None:
    report = stack.wait_final(stack.stale_batch, timeout=150)  # type: ignore[attr-defined]
    assert (report.status, report.completed_domains) == ("completed", 3), report
    assert report.metadata["recovery"]["attempts"] == 1

    async def scheduled_runs() -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            async with get_client() as client:
                return await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["recover-stale-batches"])),
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))),
                )

    runs = asyncio.run(scheduled_runs())
    assert runs and all(run.auto_scheduled for run in runs)


def test_flow_run_page_shows_the_batch_artifacts(stack: Stack, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flow_run_screenshot import capture

    domains = [f"ok-ui-{i}.test" for i in range(12)] + ["err500-ui.test", "notfound-ui.test", "down.refused.test"]
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        run = run_deployment("batch-scrape/batch-scrape", timeout=180,
                             parameters={"batch": {"domains": domains, "options": {"retries": 1}}})
    assert run.state is not None and run.state.is_completed()
    out = tmp_path / "flow-run.png"
    text = capture(stack.ui_url, str(run.id), out, expect=["batch summary", "failed domains", f"batch {run.id}"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 30_000
    assert "MARKDOWN" in text and "TABLE" in text and "PROGRESS" in text
    if os.environ.get("SCRAPERSKY_UPDATE_SCREENSHOT"):
        README_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(out, README_SCREENSHOT)
