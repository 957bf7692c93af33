"""Deployments end to end: a real `prefect server start` on loopback, a process work
pool, `prefect deploy --all` from prefect.yaml, a real `prefect worker`, and batches
triggered the three ways users do - the CLI, `run_deployment()`, and the REST API with
the batch id as idempotency key - plus `scrapersky submit`, `scrapersky doctor`, the
recovery deployment on its schedule, and the flow-run page in headless Chromium.

The worker reaches PostgreSQL through PgBouncer in transaction mode, as on Supabase.
The stack is the session's (tests/stack.py), shared with tests/test_api.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import yaml

from stack import BIN, ROOT, Stack, free_port

README_SCREENSHOT = ROOT / "docs" / "flow-run.png"


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
    shipped = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert nightly.parameters["batch"] == next(d for d in shipped if d["name"] == "nightly-watchlist")["parameters"]["batch"]
    assert all(domain.endswith(".test") for domain in nightly.parameters["batch"]["domains"])  # the farm's, no real site


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
    assert stack.farm.hits["ok-rest-1.test"] == 1


def test_submit_is_idempotent_and_doctor_runs_a_canary(stack: Stack) -> None:
    batch_id = uuid.uuid4()
    domains = ["ok-sub-1.test", "ok-sub-2.test"]
    submitted = stack.scrapersky("submit", *domains, "--batch-id", str(batch_id), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert json.loads(submitted.stdout) == {"batch_id": str(batch_id), "status": "pending"}
    again = stack.scrapersky("submit", *domains, "--batch-id", str(batch_id), "--wait", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
    assert stack.farm.hits["ok-sub-1.test"] == 1
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
    env = stack.env | {"PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    result = subprocess.run([str(BIN / "scrapersky"), "doctor"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("PASS database") for line in lines), result.stdout
    assert any(line.startswith("FAIL prefect api") for line in lines), result.stdout
    stopped = stack.scrapersky("doctor", "--pool", "no-such-pool")
    assert stopped.returncode == 1 and any(l.startswith("FAIL work pool") for l in stopped.stdout.splitlines())


def test_recovery_deployment_runs_on_its_schedule(stack: Stack) -> None:
    report = stack.wait_final(stack.stale_batch, timeout=150)
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
