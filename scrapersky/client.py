"""Submitting batches from another service: the successor of ``POST /batch`` and
``GET /batch/{id}``.

    batch_id = await submit_batch(["ok-1.test", "ok-2.test"], tenant_id)
    report = await get_status(batch_id, tenant_id)

``submit_batch`` records the batch ``pending`` (its domains with it), then asks
Prefect to run the ``batch-scrape`` deployment with the batch id as idempotency key
and the batch by reference (the run reads the recorded domains, so a batch of any
allowed size fits in Prefect's 512 KiB of parameters): the same submission twice is one batch and one flow run. When Prefect cannot be
asked, ``SubmitFailed`` is raised, and the batch this submission created is marked
``failed`` with the reason (no batch stays pending because nobody was told to run
it) - unless a run picked it up meanwhile. A resubmission of an existing batch never
fails it: another submission or run is responsible for it.

Both need the database (``DATABASE_URL``) and ``submit_batch`` the Prefect API
(``PREFECT_API_URL``), as a worker does.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from scrapersky.db import batches
from scrapersky.db.batches import BatchStatusReport, NewBatch
from scrapersky.db.engine import Database
from scrapersky.db.schema import checked_schema

from .batch import DEFAULT_TENANT_ID, BatchOptions, BatchRequest
from .domains import plan_domains
from .errors import ConfigError, SubmitFailed
from .settings import Settings, current_settings

__all__ = ["DEFAULT_DEPLOYMENT", "submit_batch", "register_batch", "get_status", "BatchStatusReport"]

#: flow name / deployment name, as in prefect.yaml.
DEFAULT_DEPLOYMENT = "batch-scrape/batch-scrape"


async def submit_batch(
    domains: list[str],
    tenant_id: UUID = DEFAULT_TENANT_ID,
    *,
    options: BatchOptions | None = None,
    batch_id: UUID | None = None,
    deployment: str = DEFAULT_DEPLOYMENT,
    settings: Settings | None = None,
    created_by: UUID | None = None,
    extra_options: dict[str, Any] | None = None,
) -> UUID:
    """Create the batch ``pending`` and have the deployment run it; returns the batch id.

    ``created_by`` (the user who asked, when known) is recorded on the row, and
    ``extra_options`` with its options (fields no fetch reads, e.g. the old API's
    ``max_pages``).

    Raises EmptyBatch / BatchTooLarge before anything is created, SubmitFailed when
    the deployment cannot be asked to run it (the batch is then ``failed`` if this call
    created it and no run has claimed it; an existing batch is left as it is).
    """
    settings = settings or current_settings()
    database = settings.database()
    _refuse_split_state(database)
    # By reference: the run reads the domains registered below (any number of them fits
    # in the flow-run parameters, which Prefect caps at 512 KiB).
    request = BatchRequest(tenant_id=tenant_id, batch_id=batch_id or uuid4(), options=options)
    assert request.batch_id is not None
    created = await register_batch(domains, tenant_id, batch_id=request.batch_id, options=options,
                                   settings=settings, created_by=created_by, extra_options=extra_options)

    try:
        flow_run_id = await _trigger(deployment, request)
    except Exception as error:
        reason = f"could not start deployment {deployment}: {_reason(error)}"
        if created:  # only the submission that created the batch may fail it
            await database.call(lambda session: batches.fail_submission(
                session, batch_id=request.batch_id, tenant_id=tenant_id, error=reason))
        else:
            reason += f" (batch {request.batch_id} existed already and is left as it is)"
        raise SubmitFailed(reason) from None

    await database.call(lambda session: batches.note_flow_run(
        session, batch_id=request.batch_id, flow_run_id=str(flow_run_id)))
    return request.batch_id


def _refuse_split_state(database: Database) -> None:
    """A SQLite file is on this machine: the worker of a Prefect API elsewhere would
    record the batch in its own database, and this one's row would stay pending for ever."""
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    host = urlsplit(api).hostname if api else None
    if database.is_sqlite and host is not None and not _is_loopback(host):
        raise ConfigError(
            f"DATABASE_URL is the SQLite file {database.where} on this machine, but the batch would run on a "
            f"worker of the Prefect API at {api}, which cannot see it: set DATABASE_URL to the database "
            "the workers use"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def register_batch(
    domains: list[str],
    tenant_id: UUID,
    *,
    batch_id: UUID,
    options: BatchOptions | None = None,
    settings: Settings | None = None,
    created_by: UUID | None = None,
    extra_options: dict[str, Any] | None = None,
) -> bool:
    """Record the batch ``pending`` with its domains, for a run to pick up by reference
    (``BatchRequest(batch_id=...)`` without domains). False when the tenant's batch
    exists already; SubmitFailed for another tenant's id."""
    settings = settings or current_settings()
    database = settings.database()
    plan = plan_domains(domains, max_batch_size=settings.max_batch_size)
    await database.prepare()
    async with database.session() as session:
        batch = NewBatch.of(batch_id, tenant_id, plan, options or settings.batch_options(),
                            created_by=created_by, extra_options=extra_options)
        return await batches.register_batch(session, batch, schema=await checked_schema(session))


async def _trigger(deployment: str, request: BatchRequest) -> UUID:
    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(
            found.id,
            parameters={"batch": request.model_dump(mode="json", exclude={"domains"})},
            # The same batch submitted again is the same flow run (Prefect keeps the key).
            idempotency_key=str(request.batch_id),
            tags=[f"tenant:{request.tenant_id}"],
        )
        return run.id


def _reason(error: Exception) -> str:
    if isinstance(error, ObjectNotFound):
        return "no such deployment (run `prefect deploy --all`)"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def get_status(
    batch_id: UUID, tenant_id: UUID = DEFAULT_TENANT_ID, *, settings: Settings | None = None
) -> BatchStatusReport:
    """The batch as users read it; BatchNotFound for an unknown id or another tenant's."""
    database = (settings or current_settings()).database()
    return await database.call(lambda session: batches.get_batch_status(session, batch_id, tenant_id))
