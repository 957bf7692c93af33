"""Asking Prefect for a run of a batch: a submission's first run, and the next run of a
batch whose run died or was stopped.

Every run of a batch has a generation (``batch_metadata.generation``): the idempotency
key of its flow run is the batch id and that generation, so the same submission twice
is one flow run, and a batch whose run died gets a new one instead of the dead run
Prefect would hand back for the same key. A run of an older generation is refused by
``open_batch``: an answer given (a 503, a failure) stays given.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.utilities.asyncutils import run_coro_as_sync

from scrapersky.batch import BatchRequest
from scrapersky.db import batches
from scrapersky.db.batches import run_key
from scrapersky.db.engine import Database

#: The work queue (and tag) of a run for the express runner (scrapersky/express.py): a
#: queue of the deployment's pool that ``up``'s worker leaves to it (a worker started on
#: the whole pool takes these runs too, when no express runner is up).
EXPRESS_QUEUE = EXPRESS_TAG = "express"

__all__ = ["DEFAULT_DEPLOYMENT", "EXPRESS_QUEUE", "EXPRESS_TAG", "RUN_REQUEST_TIMEOUT", "request_run", "ask_for_run"]

#: flow name / deployment name, as in prefect.yaml.
DEFAULT_DEPLOYMENT = "batch-scrape/batch-scrape"
#: Seconds the Prefect API has to answer a request for a run (it may accept connections
#: and never answer): past it the request has failed, whatever it may still do.
RUN_REQUEST_TIMEOUT = 10.0


async def request_run(
    deployment: str | UUID, request: BatchRequest, *, timeout: float = RUN_REQUEST_TIMEOUT, express: bool = False
) -> FlowRun:
    """A flow run of ``deployment`` (its name or id) for the batch of ``request``, which
    travels by reference (the run reads the batch's recorded domains); ``express``: in the
    express runner's queue (scrapersky/express.py), which starts it at once. Raises what
    the Prefect client raised, or TimeoutError after ``timeout`` seconds."""
    assert request.batch_id is not None

    async def ask() -> FlowRun:
        async with get_client() as client:
            if isinstance(deployment, UUID):
                deployment_id, pooled = deployment, False
            else:
                found = await client.read_deployment_by_name(deployment)
                deployment_id, pooled = found.id, found.work_pool_name is not None
            lane = express and pooled  # a queue is a work pool's: a deployment served otherwise has none
            return await client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"batch": request.model_dump(mode="json", exclude={"domains"})},
                idempotency_key=run_key(request.batch_id, request.generation or 0),
                tags=[f"tenant:{request.tenant_id}", *([EXPRESS_TAG] if lane else [])],
                work_queue_name=EXPRESS_QUEUE if lane else None,
            )

    return await asyncio.wait_for(ask(), timeout)


def ask_for_run(database: Database, deployment: str | UUID, request: BatchRequest) -> str:
    """From synchronous code (a hook, a task): a run of the batch asked for, and named on
    the pending batch as the run that will take it (``note_flow_run``); its id."""
    assert request.batch_id is not None
    run = run_coro_as_sync(request_run(deployment, request))
    database.run(lambda session: batches.note_flow_run(
        session, batch_id=request.batch_id, flow_run_id=str(run.id), generation=request.generation or 0))
    return str(run.id)
