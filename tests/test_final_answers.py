"""An answer given stays given; a batch whose run died gets a new one.

Real parts: Prefect's test server with a real deployment of ``batch-scrape`` (no worker:
the test runs the flow runs itself, as a worker would, in this process), the real
PostgreSQL, the loopback web farm.

- A submission answered 503 (Prefect did not answer in time) whose flow run Prefect
  created anyway: when that run starts, it does nothing; the batch stays ``failed``;
  the recovery never resumes it. Submitted again, it runs and completes.
- A batch whose run died with nobody to release it (Prefect says Crashed, the row still
  names it): submitted again, it gets a new flow run (not the dead one Prefect hands
  back for the batch id), which finishes it; a late start of the dead generation does
  nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from scrapersky.batch import BatchOptions, BatchRequest
from scrapersky.db import batches
from scrapersky.errors import BatchSuperseded, SubmitFailed
from scrapersky.settings import Settings

TENANT = uuid.UUID("7c4a2a55-1d8e-4a57-9f3e-2a2b8c0e9d11")
OPTIONS = BatchOptions(retries=0, concurrency=4)


@pytest.fixture
def deployment(prefect_api: str, postgres_url: str, farm, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A deployment of batch-scrape on Prefect's test server (nobody serves it); its name."""
    import asyncio as aio

    from scrapersky.db.engine import Database
    from scrapersky.flows.batch_scrape import batch_scrape

    monkeypatch.setenv("DATABASE_URL", postgres_url)
    aio.run(Database(postgres_url).init_schema())
    name = f"answers-{uuid.uuid4().hex[:8]}"
    batch_scrape.to_deployment(name=name, enforce_parameter_schema=True).apply()
    yield f"batch-scrape/{name}"


def status(batch_id: uuid.UUID) -> batches.BatchStatusReport:
    return Settings.load().database().run(lambda session: batches.get_batch_status(session, batch_id, TENANT))


def flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(uuid.UUID(flow_run_id))).state.type.value

    return asyncio.run(read())


def run_as_a_worker_would(flow_run_id: str):
    """That flow run, run here, as a worker's process runs it (``prefect.engine``'s
    ``run_flow`` with the run read from the API); its final state."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from scrapersky.flows.batch_scrape import batch_scrape

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(uuid.UUID(flow_run_id))

    flow_run = asyncio.run(read())
    batch = BatchRequest.model_validate(flow_run.parameters["batch"])
    return run_flow(batch_scrape, flow_run=flow_run, parameters={"batch": batch}, return_type="state")


def test_a_submission_answered_503_stays_failed_when_its_run_starts_late(
    deployment: str, farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scrapersky.client
    from scrapersky.client import submit_batch
    from scrapersky.flows.recover_stale_batches import recover_stale_batches
    from scrapersky.flows.runs import request_run

    created: list[str] = []

    async def created_but_the_answer_is_lost(deployment, request, **lane):
        run = await request_run(deployment, request, **lane)  # Prefect made the run ...
        created.append(str(run.id))
        raise TimeoutError  # ... but its answer came too late

    monkeypatch.setattr(scrapersky.client, "_trigger", created_but_the_answer_is_lost)
    batch_id = uuid.uuid4()
    domains = ["ok-answer-1.test", "ok-answer-2.test"]
    with pytest.raises(SubmitFailed, match="did not answer"):
        asyncio.run(submit_batch(domains, TENANT, batch_id=batch_id, options=OPTIONS, deployment=deployment))
    assert status(batch_id).status == "failed"

    late = run_as_a_worker_would(created[0])  # the run Prefect made starts after all
    assert late.is_failed() and isinstance(late.result(raise_on_failure=False), BatchSuperseded), late
    report = status(batch_id)
    assert (report.status, report.completed_domains) == ("failed", 0), report
    assert sum(farm.hits[d] for d in domains) == 0  # it fetched nothing
    assert recover_stale_batches(stale_after=0)["resumed"] == []  # and the recovery leaves it failed
    assert status(batch_id).status == "failed"

    # Submitted again: the decision to try again. It runs, and completes.
    monkeypatch.setattr(scrapersky.client, "_trigger", request_run)
    asyncio.run(submit_batch(domains, TENANT, batch_id=batch_id, options=OPTIONS, deployment=deployment))
    rerun = status(batch_id).metadata["flow_run_id"]
    assert rerun != created[0]
    assert run_as_a_worker_would(rerun).is_completed()
    report = status(batch_id)
    assert (report.status, report.completed_domains, report.error) == ("completed", 2, None), report


def test_a_batch_whose_run_died_unreleased_gets_a_new_run_when_submitted_again(deployment: str, farm) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from scrapersky.client import submit_batch

    batch_id = uuid.uuid4()
    domains = ["ok-died-1.test", "ok-died-2.test", "ok-died-3.test"]
    asyncio.run(submit_batch(domains, TENANT, batch_id=batch_id, options=OPTIONS, deployment=deployment))
    dead = status(batch_id).metadata["flow_run_id"]

    async def crash() -> None:  # its process and its worker died together: nobody ran a hook
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(dead), Crashed(message="killed"), force=True)

    asyncio.run(crash())
    asyncio.run(submit_batch(domains, TENANT, batch_id=batch_id, options=OPTIONS, deployment=deployment))
    report = status(batch_id)
    new = report.metadata["flow_run_id"]
    assert new != dead and report.metadata["generation"] == 1 and report.status == "pending", report
    assert flow_run_state(new) == "SCHEDULED"
    assert dead in report.metadata["recovery"]["dead_flow_runs"]

    late = run_as_a_worker_would(dead)  # the dead generation, started after all: nothing done
    assert isinstance(late.result(raise_on_failure=False), BatchSuperseded)
    assert run_as_a_worker_would(new).is_completed()
    report = status(batch_id)
    assert (report.status, report.completed_domains) == ("completed", 3), report
    assert all(farm.hits[d] == 1 for d in domains)
