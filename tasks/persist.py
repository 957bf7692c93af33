"""The batch's database steps: open it (create or adopt the row) and persist its outcome.

Each task owns its transaction through ``db.engine.unit_of_work`` and retries, with
backoff, only when the database could not be reached.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from uuid import UUID

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from scrapersky.db import batches
from scrapersky.db.engine import prepare_embedded_database, unit_of_work
from scrapersky.db.schema import check_schema
from scrapersky.batch import BatchStatus, DomainOutcome
from scrapersky.settings import Settings

__all__ = [
    "open_batch",
    "save_progress",
    "persist_batch",
    "store_outcomes",
    "stored_outcomes",
    "DATABASE_RETRIES",
]

DATABASE_RETRIES = 4
logger = logging.getLogger("scrapersky.persist")


def _database_unreachable(task: Task, run: TaskRun, state: State) -> bool:
    try:
        state.result()
    except (OSError, asyncio.TimeoutError, OperationalError, InterfaceError):
        return True
    except DBAPIError as error:
        return bool(error.connection_invalidated)
    except Exception:
        return False
    return False


_database_task = dict(
    retries=DATABASE_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=1.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=_database_unreachable,
    cache_policy=NO_CACHE,
)


@task(name="open-batch", **_database_task)
def open_batch(
    *,
    batch_id: UUID,
    tenant_id: UUID,
    domains: list[str],
    input_summary: dict[str, int],
    options: dict[str, Any],
    flow_run_id: str | None,
) -> set[str]:
    """Mark the batch ``running`` (creating its row if needed); returns domains already done."""

    async def run() -> set[str]:
        await prepare_embedded_database()
        async with unit_of_work() as session:
            # The start-up schema check: a mismatch stops the batch before any work.
            schema = await session.run_sync(lambda sync: check_schema(sync.connection()))
            schema.raise_for_errors()
            return await batches.open_batch(
                session,
                batch_id=batch_id,
                tenant_id=tenant_id,
                domains=domains,
                input_summary=input_summary,
                options=options,
                flow_run_id=flow_run_id,
                schema=schema,
                stale_after=Settings().stale_after,
            )

    # Sync tasks with a short-lived loop each: an async task called from a sync flow
    # hands back a coroutine, and asyncpg connections must not cross event loops.
    return asyncio.run(run())


@task(name="save-progress", **_database_task)
def save_progress(*, batch_id: UUID, tenant_id: UUID, outcomes: list[DomainOutcome]) -> None:
    """Save the outcomes known so far and move the batch's counts and progress."""

    async def run() -> None:
        async with unit_of_work() as session:
            await batches.save_progress(session, batch_id=batch_id, tenant_id=tenant_id, outcomes=outcomes)

    asyncio.run(run())


@task(name="persist-batch", **_database_task)
def persist_batch(*, batch_id: UUID, tenant_id: UUID, outcomes: list[DomainOutcome]) -> BatchStatus:
    """Write every outcome, the counts, progress, status and timings in one transaction."""

    async def run() -> BatchStatus:
        async with unit_of_work() as session:
            return await batches.record_outcomes(
                session, batch_id=batch_id, tenant_id=tenant_id, outcomes=outcomes
            )

    return asyncio.run(run())


def store_outcomes(batch_id: UUID, outcomes: list[DomainOutcome]) -> int:
    """Save a sub-batch's finished outcomes; how many were saved (0 when the database
    could not take them: the flow saves them then, with its own retries)."""
    if not outcomes:
        return 0

    async def run() -> None:
        async with unit_of_work() as session:
            await batches.store_outcomes(session, batch_id=batch_id, outcomes=outcomes)

    try:
        asyncio.run(run())
    except Exception as error:
        logger.warning("sub-batch outcomes not saved yet (%s: %s); the flow will save them",
                       type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
        return 0
    return len(outcomes)


def stored_outcomes(batch_id: UUID, domains: list[str]) -> dict[str, DomainOutcome]:
    """The saved outcomes of these domains of the batch (none when the database cannot
    be read: the domains are then recorded as failed by the caller, never lost)."""

    async def run() -> dict[str, DomainOutcome]:
        async with unit_of_work() as session:
            saved = await batches.stored_outcomes(session, batch_id=batch_id, domains=domains)
        return {domain: DomainOutcome(domain=domain, **entry) for domain, entry in saved.items()}

    try:
        return asyncio.run(run())
    except Exception as error:
        logger.warning("saved outcomes could not be read (%s)", type(error).__name__)
        return {}
