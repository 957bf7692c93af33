"""Submitting batches from another service: the successor of ``POST /batch`` and
``GET /batch/{id}``.

    batch_id = await submit_batch(["ok-1.test", "ok-2.test"], tenant_id)
    report = await get_status(batch_id, tenant_id)

``submit_batch`` records the batch ``pending`` (its domains with it), then asks
Prefect to run the ``batch-scrape`` deployment with the batch id and the run's
generation as idempotency key and the batch by reference (the run reads the recorded
domains, so a batch of any allowed size fits in Prefect's 512 KiB of parameters): the
same submission twice is one batch and one flow run. A batch whose run died is given a
new run when it is submitted again; one that ended ``failed`` or ``cancelled`` is run
again; one that ended with its outcomes is left as it is.

When Prefect cannot be asked within ``RUN_REQUEST_TIMEOUT`` seconds, ``SubmitFailed``
is raised, and the batch this submission created (or opened again) is marked ``failed``
with the reason: no batch stays pending because nobody was told to run it, and a run
that Prefect still starts for this submission later is refused (an answer given stays
given). A resubmission of a batch that runs is never failed: its run is responsible.

Both need the database (``DATABASE_URL``) and ``submit_batch`` the Prefect API
(``PREFECT_API_URL``), as a worker does.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from prefect.exceptions import ObjectNotFound

from scrapersky.db import batches
from scrapersky.db.batches import BatchStatusReport, NewBatch, Registration
from scrapersky.db.engine import Database
from scrapersky.flows.runs import DEFAULT_DEPLOYMENT, RUN_REQUEST_TIMEOUT, request_run

from .batch import DEFAULT_TENANT_ID, BatchOptions, BatchRequest
from .domains import plan_domains_in_turns
from .errors import ConfigError, SubmitFailed
from .settings import Settings, current_settings

__all__ = ["DEFAULT_DEPLOYMENT", "submit_batch", "register_batch", "get_status", "BatchStatusReport"]


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
    database: Database | None = None,
) -> UUID:
    """Create the batch ``pending`` and have the deployment run it; returns the batch id.

    ``created_by`` (the user who asked, when known) is recorded on the row, and
    ``extra_options`` with its options (fields no fetch reads, e.g. the old API's
    ``max_pages``).

    Raises EmptyBatch / BatchTooLarge before anything is created, SubmitFailed when
    the deployment cannot be asked to run it (the batch is then ``failed`` if this call
    created it or opened it again, and no run has claimed it; one that runs is left as
    it is). ``database``: the caller's (the API's, with its short timeouts).
    """
    settings = settings or current_settings()
    database = database or settings.database()
    _refuse_split_state(database)
    batch_id = batch_id or uuid4()
    registration = await register_batch(domains, tenant_id, batch_id=batch_id, options=options, settings=settings,
                                        created_by=created_by, extra_options=extra_options, database=database)
    if registration.generation is None:
        return batch_id  # it ended with its outcomes: the same submission again, nothing to run
    # By reference: the run reads the domains registered above (any number of them fits
    # in the flow-run parameters, which Prefect caps at 512 KiB).
    request = BatchRequest(tenant_id=tenant_id, batch_id=batch_id, options=options,
                           generation=registration.generation)
    express = len(domains) <= settings.express_max  # a small batch: its run starts at once
    try:
        run = await _trigger(deployment, request, express=express)
        if run.state is not None and run.state.is_final():
            # Prefect handed back this generation's run, and it is over while the batch is
            # not: it died. The batch gets the next generation and a new run.
            generation = await database.call(lambda session: batches.retire_run(
                session, batch_id=batch_id, generation=request.generation or 0, flow_run_id=str(run.id),
                reason=f"submitted again: its flow run {run.id} is {run.state.type.value.lower()}"))
            if generation is not None:
                request = request.model_copy(update={"generation": generation})
                run = await _trigger(deployment, request, express=express)
    except Exception as error:
        reason = f"could not start deployment {deployment}: {_reason(error)}"
        if registration.created or registration.reopened:  # this submission answers for the batch
            await database.call(lambda session: batches.fail_submission(
                session, batch_id=batch_id, tenant_id=tenant_id, error=reason))
        else:
            reason += f" (batch {batch_id} existed already and is left as it is)"
        raise SubmitFailed(reason, batch_id=batch_id) from None

    await database.call(lambda session: batches.note_flow_run(
        session, batch_id=batch_id, flow_run_id=str(run.id), generation=request.generation or 0))
    return batch_id


#: How a run is asked for (a name tests replace with a Prefect that fails).
_trigger = request_run


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
    database: Database | None = None,
) -> Registration:
    """Record the batch ``pending`` with its domains, for a run to pick up by reference
    (``BatchRequest(batch_id=...)`` without domains), and each invalid entry failed with
    its reason; what was found (``scrapersky.db.batches.register_batch``);
    SubmitFailed for another tenant's id. The entries are normalised a few at a time
    (``plan_domains_in_turns``): a large batch does not hold up the caller's event loop."""
    settings = settings or current_settings()
    database = database or settings.database()
    plan = await plan_domains_in_turns(domains, max_batch_size=settings.max_batch_size)
    await database.prepare()
    batch = NewBatch.of(batch_id, tenant_id, plan, options or settings.batch_options(),
                        created_by=created_by, extra_options=extra_options)

    async def register(session):
        return await batches.register_batch(session, batch, schema=await database.checked_schema(session),
                                            rejected=plan.rejected())

    return await database.call(register)


def _reason(error: Exception) -> str:
    if isinstance(error, ObjectNotFound):
        return "no such deployment (run `prefect deploy --all`)"
    if isinstance(error, TimeoutError):
        return f"the Prefect API did not answer within {RUN_REQUEST_TIMEOUT:.0f} s"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def get_status(
    batch_id: UUID, tenant_id: UUID = DEFAULT_TENANT_ID, *, settings: Settings | None = None,
    database: Database | None = None,
) -> BatchStatusReport:
    """The batch as users read it; BatchNotFound for an unknown id or another tenant's."""
    database = database or (settings or current_settings()).database()
    return await database.call(lambda session: batches.get_batch_status(session, batch_id, tenant_id))
