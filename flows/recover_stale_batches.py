"""The recovery flow: batches whose run is gone are finished, or failed with a reason.

A batch is stale when it is pending or running and its row has not moved for
``stale_after`` seconds (a running batch's heartbeat moves its row every few seconds
while its run lives, however slow its fetches). A resumed batch belongs to the new run:
the old run's writes and hooks are refused from the moment ``note_recovery`` takes it. For each stale batch the flow reads its flow run from Prefect:

- a run still moving (Prefect says pending/running and the row is fresh) is never
  touched - stale rows only are looked at, so such a run is not even seen;
- a run that is finished, crashed, cancelled or missing - or that Prefect still calls
  running though nothing moved for ``stale_after`` (its process was killed) - has its
  batch run again, in-process, at most ``max_attempts`` times (counted in
  ``batch_metadata.recovery``); the run again skips what was already saved;
- past ``max_attempts``, the batch is marked ``failed`` with the reason.
"""


import asyncio
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from scrapersky.db import batches
from scrapersky.db.engine import Database
from scrapersky.batch import BatchOptions, BatchRequest, BatchStatus
from scrapersky.settings import current_settings

from .batch_scrape import batch_scrape

__all__ = ["recover_stale_batches"]

DEFAULT_MAX_ATTEMPTS = 3


@task(name="find-stale-batches", cache_policy=NO_CACHE)
def find_stale_batches(database: Database, stale_after: float) -> list[batches.StaleBatch]:
    return database.run(lambda session: batches.stale_batches(session, stale_after=stale_after))


@task(name="read-flow-run-state", cache_policy=NO_CACHE)
def flow_run_state(flow_run_id: str | None) -> tuple[str, str | None]:
    """(state type, message) of the batch's flow run; ("MISSING", None) when Prefect has none."""
    if not flow_run_id:
        return "MISSING", None

    async def read() -> tuple[str, str | None]:
        async with get_client() as client:
            try:
                run = await client.read_flow_run(UUID(flow_run_id))
            except ObjectNotFound:
                return "MISSING", None
            if run.state is None:
                return "MISSING", None
            if not run.state.is_final():
                # Nothing moved for stale_after: the process that ran it is gone. Say so
                # in Prefect too, so the UI does not show a run that is not running.
                await client.set_flow_run_state(
                    run.id, Crashed(message="no progress saved for longer than stale_after: the run vanished"),
                    force=True,
                )
                return "CRASHED", "vanished"
            return run.state.type.value, run.state.message

    return asyncio.run(read())


@task(name="note-recovery", cache_policy=NO_CACHE)
def note_recovery(database: Database, batch_id: UUID, reason: str) -> int:
    return database.run(lambda session: batches.note_recovery(session, batch_id=batch_id, reason=reason))


@task(name="give-up-batch", cache_policy=NO_CACHE)
def give_up(database: Database, batch_id: UUID, tenant_id: UUID, reason: str) -> None:
    database.run(lambda session: batches.end_batch(
        session, batch_id=batch_id, tenant_id=tenant_id, status=BatchStatus.FAILED, error=reason))


@flow(name="recover-stale-batches")
def recover_stale_batches(
    stale_after: float | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> dict[str, Any]:
    """Finish or fail every batch whose run is gone.

    Args:
        stale_after: Seconds without an update after which a pending/running batch is
            stale (default: SCRAPERSKY_STALE_AFTER, 900).
        max_attempts: Recoveries of one batch before it is marked failed.
    """
    logger = get_run_logger()
    settings = current_settings()  # read once, here: the edge of a deployment's run
    database = settings.database()
    stale_after = stale_after if stale_after is not None else settings.stale_after
    summary: dict[str, Any] = {"resumed": [], "failed": []}
    for batch in find_stale_batches(database, stale_after):
        state, message = flow_run_state(batch.flow_run_id)
        reason = f"flow run {batch.flow_run_id or '(none)'} is {state.lower()}" + (f": {message}" if message else "")
        if batch.attempts >= max_attempts:
            give_up(database, batch.batch_id, batch.tenant_id, f"recovery gave up after {batch.attempts} attempts; {reason}")
            summary["failed"].append(str(batch.batch_id))
            continue
        attempt = note_recovery(database, batch.batch_id, reason)
        logger.info("resuming batch %s (attempt %s): %s", batch.batch_id, attempt, reason)
        request = BatchRequest(
            domains=batch.domains,
            tenant_id=batch.tenant_id,
            batch_id=batch.batch_id,
            options=BatchOptions.from_stored(batch.options) if batch.options else None,
        )
        batch_scrape(request, return_state=True)
        summary["resumed"].append(str(batch.batch_id))
    return summary
