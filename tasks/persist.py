"""The batch's database steps: open it (create or adopt the row), save its progress,
persist its outcome.

Each task runs one transaction on the batch's ``Database`` and retries, with backoff,
only when the database could not be reached.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from prefect.tasks import exponential_backoff
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from scrapersky.db import batches
from scrapersky.db.engine import Database
from scrapersky.db.batches import NewBatch
from scrapersky.batch import BatchStatus, DomainOutcome

__all__ = [
    "recorded_domains",
    "open_batch",
    "save_progress",
    "persist_batch",
    "DATABASE_RETRIES",
]

DATABASE_RETRIES = 4


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


@task(name="recorded-domains", **_database_task)
def recorded_domains(database: Database, *, batch_id: UUID, tenant_id: UUID) -> list[str]:
    """The entries the batch was registered with (a batch submitted by reference)."""
    return database.run(lambda session: batches.recorded_domains(session, batch_id, tenant_id))


@task(name="open-batch", **_database_task)
def open_batch(database: Database, batch: NewBatch, *, flow_run_id: str | None, stale_after: float) -> set[str]:
    """Mark the batch ``running`` (creating its row if needed); returns domains already done."""

    async def run(session: AsyncSession) -> set[str]:
        schema = await database.checked_schema(session)  # a mismatch stops the batch before any work
        return await batches.open_batch(session, batch, flow_run_id=flow_run_id, schema=schema,
                                        stale_after=stale_after)

    database.prepare_now()
    return database.run(run)


@task(name="save-progress", **_database_task)
def save_progress(
    database: Database, *, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None, outcomes: list[DomainOutcome]
) -> None:
    """Save the outcomes known so far and move the batch's counts and progress (as the
    run ``flow_run_id`` that owns the batch)."""
    database.run(lambda session: batches.save_progress(
        session, batch_id=batch_id, tenant_id=tenant_id, flow_run_id=flow_run_id, outcomes=outcomes))


@task(name="persist-batch", **_database_task)
def persist_batch(
    database: Database, *, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None, outcomes: list[DomainOutcome]
) -> BatchStatus:
    """Write every outcome, the counts, progress, status and timings in one transaction
    (as the run ``flow_run_id`` that owns the batch)."""
    return database.run(lambda session: batches.record_outcomes(
        session, batch_id=batch_id, tenant_id=tenant_id, flow_run_id=flow_run_id, outcomes=outcomes))
