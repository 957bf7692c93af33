"""Reading and writing batches. Every function takes the session of its caller's
transaction; ``db.engine.transaction`` / ``unit_of_work`` own the boundaries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import case, exists, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from scrapersky.batch import (
    ACTIVE_STATUS_WORDS,
    BatchOptions,
    BatchStatus,
    DomainOutcome,
    DomainStatus,
    batch_status_for,
    utcnow,
)
from scrapersky.domains import DomainPlan
from scrapersky.errors import (
    BatchAlreadyRunning,
    BatchFinished,
    BatchIdTaken,
    BatchNotFound,
    BatchSuperseded,
    InvalidDomain,
)

from .models import BatchJob, DomainResult
from .schema import LEGACY_FILLS, SchemaReport

__all__ = [
    "PROCESSOR_TYPE",
    "BatchStatusReport",
    "NewBatch",
    "Registration",
    "register_batch",
    "note_flow_run",
    "recorded_domains",
    "fail_submission",
    "heartbeat",
    "open_batch",
    "save_progress",
    "record_outcomes",
    "end_batch",
    "release_batch",
    "retire_run",
    "Candidate",
    "recovery_candidates",
    "take_over",
    "settle",
    "FOREIGN_ROW_ERROR",
    "generation_of",
    "run_key",
    "get_batch_status",
    "batch_progress",
]

#: ScraperSky's word for a batch of domains (its readers filter on it).
PROCESSOR_TYPE = "domain_batch"
#: Where each domain's compact entry is kept in batch_metadata: ScraperSky's key, read
#: by its status endpoint; earlier versions of ours wrote "domain_statuses".
ENTRIES_KEY = "domain_results"
_OUR_OLDER_ENTRIES_KEY = "domain_statuses"


class BatchStatusReport(BaseModel):
    """A batch as users read it (the fields of the old BatchStatusResponse)."""

    batch_id: UUID
    status: str
    total_domains: int
    completed_domains: int
    failed_domains: int
    progress: float  # a fraction, 0-1 (as ScraperSky stores it)
    processor_type: str | None = None
    created_by: UUID | None = None
    created_at: datetime | None
    updated_at: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    processing_time: float | None
    domain_statuses: dict[str, dict[str, Any]]
    error: str | None
    metadata: dict[str, Any]


async def _lock(session: AsyncSession, batch_id: UUID) -> BatchJob | None:
    """The batch row, locked until the transaction ends (a row lock: pooler-safe)."""
    return await session.scalar(select(BatchJob).where(BatchJob.batch_id == batch_id).with_for_update())


def _advisory_key(batch_id: UUID) -> int:
    """The batch id as a signed bigint: the key of its PostgreSQL advisory lock."""
    return int.from_bytes(batch_id.bytes[:8], "big", signed=True) ^ int.from_bytes(
        batch_id.bytes[8:], "big", signed=True)


async def _claim(session: AsyncSession, batch_id: UUID) -> None:
    """Serialise every creator of this batch id until the transaction ends.

    ``SELECT ... FOR UPDATE`` locks nothing when the row does not exist yet, and
    ScraperSky's batch_jobs.batch_id is not unique: two submits of one id would both
    insert. On PostgreSQL a transaction-scoped advisory lock keyed on the batch id is
    taken before the check (released at commit or rollback, so it is safe behind a
    transaction-mode pooler); SQLite has one writer at a time, and a no-op write takes
    its write lock now, before the check (BEGIN IMMEDIATE's effect).
    """
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _advisory_key(batch_id)})
    else:
        await session.execute(
            update(BatchJob).where(BatchJob.batch_id == batch_id).values(updated_at=BatchJob.updated_at)
            .execution_options(synchronize_session=False)
        )


async def _locked_batch(session: AsyncSession, batch_id: UUID, tenant_id: UUID) -> BatchJob:
    row = await _lock(session, batch_id)
    if row is None or row.tenant_id != tenant_id:
        raise BatchNotFound(f"batch {batch_id} not found")
    return row


async def _owned_batch(session: AsyncSession, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None) -> BatchJob:
    """The batch row, locked, when ``flow_run_id`` owns it; BatchAlreadyRunning (nothing
    written) when another run does, or nobody (a recovery took it away from this run)."""
    row = await _locked_batch(session, batch_id, tenant_id)
    owner = _owner(row)
    if owner != flow_run_id:
        raise BatchAlreadyRunning(
            f"batch {batch_id} is owned by flow run {owner or '(none: a recovery took it over)'}, "
            f"not by {flow_run_id}: nothing written"
        )
    return row


def _status(row: BatchJob) -> BatchStatus | None:
    return BatchStatus.read(row.status)


def _entries(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The domains' entries kept in batch_metadata (ScraperSky's key, or ours of old)."""
    found = metadata.get(ENTRIES_KEY) or metadata.get(_OUR_OLDER_ENTRIES_KEY) or {}
    return {str(domain): entry for domain, entry in found.items() if isinstance(entry, dict)} if isinstance(found, dict) else {}


def _progress(done: int, total: int) -> float:
    """Progress as ScraperSky stores it: the fraction of domains done, 0-1."""
    return round(done / total, 4) if total else 1.0


def _finish(row: BatchJob, status: BatchStatus) -> None:
    now = utcnow()
    row.status = status
    row.end_time = now
    if row.start_time is not None:
        row.processing_time = (now - _aware(row.start_time)).total_seconds()
    row.updated_at = now


@dataclass(frozen=True)
class NewBatch:
    """A batch as it is recorded when it is registered or opened: its owner, every
    entry it was given (valid domains and invalid ones) and its options."""

    batch_id: UUID
    tenant_id: UUID
    domains: list[str]
    input_summary: dict[str, int] | None  # None: keep what the registration recorded
    options: dict[str, Any]
    created_by: UUID | None = None
    #: Which run of the batch asks (``BatchRequest.generation``); None: a person's own start.
    generation: int | None = None

    @classmethod
    def of(
        cls,
        batch_id: UUID,
        tenant_id: UUID,
        plan: DomainPlan,
        options: BatchOptions,
        *,
        created_by: UUID | None = None,
        extra_options: dict[str, Any] | None = None,
        recorded: bool = False,
        generation: int | None = None,
    ) -> NewBatch:
        """``extra_options``: recorded with the options though no fetch reads them (the old
        API's ``max_pages``). ``recorded``: the plan was made from the domains the batch
        recorded at registration (its input counts are kept)."""
        return cls(batch_id, tenant_id, plan.domains + list(plan.invalid), None if recorded else plan.summary(),
                   {**(extra_options or {}), **options.model_dump(mode="json")}, created_by, generation)


#: batch_metadata keys of a batch's runs: the run that owns it, which of its runs may
#: run it now, and why its last run let it go.
OWNER_KEY, GENERATION_KEY, RELEASED_KEY = "flow_run_id", "generation", "released"


def _owner(row: BatchJob) -> str | None:
    return (row.batch_metadata or {}).get(OWNER_KEY)


def generation_of(row: BatchJob) -> int:
    """Which run of the batch may run it now: 0 for its first submission, one more each
    time a run of it died, or a final answer was given (a refusal, a resubmission)."""
    return int((row.batch_metadata or {}).get(GENERATION_KEY) or 0)


def run_key(batch_id: UUID, generation: int) -> str:
    """The idempotency key of the batch's run of ``generation``: the same submission twice
    is one flow run; a batch whose run died gets a new one."""
    return str(batch_id) if generation == 0 else f"{batch_id}:{generation}"


async def open_batch(
    session: AsyncSession,
    batch: NewBatch,
    *,
    flow_run_id: str | None,
    schema: SchemaReport,
    stale_after: float = 900.0,
) -> set[str]:
    """Create the batch row, or adopt an existing one of the same tenant, as ``processing``.

    ``schema`` is the live table's check: legacy columns it names are filled on insert.
    A batch that another run is still moving (updated within ``stale_after`` seconds)
    is refused: one batch, one run. The batch's domains are recorded (a row each in
    domain_results), so a recovery knows them. Returns the domains this run does not
    fetch: every one with an outcome when the batch is taken up where an earlier run
    left it (its failures used their retries already); only the completed ones (and the
    invalid entries) when a batch that had ended is run again (its failures are tried again).
    """
    batch_id, tenant_id, domains = batch.batch_id, batch.tenant_id, batch.domains
    await _claim(session, batch_id)
    now = utcnow()
    row = await _lock(session, batch_id)
    if row is None:
        row = await _insert_pending(session, batch_id, tenant_id, schema, batch.created_by)
    elif row.tenant_id != tenant_id:
        raise BatchNotFound(f"batch {batch_id} not found")
    elif batch.generation is not None and batch.generation != generation_of(row):
        raise BatchSuperseded(
            f"batch {batch_id}: this run (of its run {batch.generation}) was superseded by run "
            f"{generation_of(row)} (a refused submission, a resubmission or a recovery): nothing done"
        )
    elif batch.generation is not None and (_status(row) or BatchStatus.PENDING).is_final:
        raise BatchSuperseded(
            f"batch {batch_id} ended {_status(row)} before this run started: submit it again to run it again"
        )
    elif _alive_elsewhere(row, flow_run_id, stale_after):
        raise BatchAlreadyRunning(
            f"batch {batch_id} is being run by flow run {(row.batch_metadata or {}).get('flow_run_id')} "
            f"(updated {int((now - _aware(row.updated_at)).total_seconds())} s ago): one batch, one run"
        )
    metadata = dict(row.batch_metadata or {})
    # Statuses of earlier runs: the final ones, and those saved by a run that died.
    statuses = _entries(metadata)
    statuses.update(await _saved_outcomes(session, batch_id))
    ended = _status(row)
    recorded = set(statuses) | set(await session.scalars(
        select(DomainResult.domain).where(DomainResult.batch_id == batch_id)))
    new = [domain for domain in domains if domain not in recorded]
    if ended is not None and ended.is_final and statuses and new:
        shown = ", ".join(new[:3]) + (f" (+{len(new) - 3} more)" if len(new) > 3 else "")
        raise BatchFinished(
            f"batch {batch_id} ended {ended} with {len(statuses)} domains; {shown} not among them: "
            "run them as a new batch (no --batch-id); resuming it with its own domains (or none) is allowed"
        )
    keys = recorded | set(domains)
    metadata[OWNER_KEY] = flow_run_id
    metadata.pop(RELEASED_KEY, None)
    if batch.input_summary is not None:
        metadata["input"] = batch.input_summary
    row.batch_metadata = metadata
    row.options = {**(row.options or {}), **batch.options}  # what a submission recorded stays
    row.total_domains = len(keys)
    row.status = BatchStatus.PROCESSING
    row.start_time = now
    row.end_time = None
    row.processing_time = None
    row.error = None
    row.updated_at = now
    await _record_domains(session, batch_id, keys - recorded)
    if ended is None or not ended.is_final:
        return set(statuses)
    # An invalid entry stays invalid: its outcome, with the reason found in it as sent, stays too.
    return {d for d, entry in statuses.items()
            if entry.get("status") == DomainStatus.COMPLETED or entry.get("error_type") == InvalidDomain.error_type}


async def _insert_pending(
    session: AsyncSession, batch_id: UUID, tenant_id: UUID, schema: SchemaReport, created_by: UUID | None = None
) -> BatchJob:
    now = utcnow()
    values = dict(
        batch_id=batch_id,
        tenant_id=tenant_id,
        processor_type=PROCESSOR_TYPE,
        status=BatchStatus.PENDING,
        created_by=created_by,
        progress=0.0,
        batch_metadata={},
        options={},
        created_at=now,
        updated_at=now,
    )
    values.update({name: LEGACY_FILLS[name](batch_id) for name in schema.legacy_fills})
    await session.execute(insert(schema.batch_table()).values(**values))
    row = await _lock(session, batch_id)
    assert row is not None
    return row


@dataclass(frozen=True)
class Registration:
    """What a submission found: whether it created the batch, and which run of it to ask
    Prefect for (None: the batch ended with outcomes, nothing to run)."""

    created: bool
    generation: int | None
    reopened: bool = False  # it had ended failed or cancelled: this submission runs it again


async def register_batch(
    session: AsyncSession, batch: NewBatch, *, schema: SchemaReport, rejected: Iterable[DomainOutcome] = ()
) -> Registration:
    """Create a batch ``pending``, its domains recorded, before any run picks it up;
    ``rejected``, the outcomes of its invalid entries (failed with the reason found in
    each entry as it was sent), are recorded with it.

    The tenant's batch submitted again with its own domains (or some of them): one that
    runs or waits to is the same batch (and the same run); one that ended ``failed`` or
    ``cancelled`` is opened again (``pending``, a new run: a resubmission is the decision
    to try again); one that ended with its outcomes (``completed``, ``partial``) is left as
    it is. With domains it does not have, it is refused (BatchFinished when it ended,
    BatchAlreadyRunning while it waits or runs): a batch is not grown once submitted.
    Another tenant's batch id is refused. Concurrent registrations of one id make one row.
    """
    await _claim(session, batch.batch_id)
    row = await _lock(session, batch.batch_id)
    if row is not None:
        if row.tenant_id != batch.tenant_id:
            raise BatchIdTaken(f"batch id {batch.batch_id} is taken: choose another one")
        status = _status(row)
        await _refuse_new_domains(session, row, batch.domains)
        if status in (BatchStatus.FAILED, BatchStatus.CANCELLED):
            metadata = dict(row.batch_metadata or {})
            metadata.pop(OWNER_KEY, None)
            metadata[GENERATION_KEY] = generation_of(row) + 1
            metadata.setdefault("reopened", []).append({"at": utcnow().isoformat(), "was": str(status),
                                                        "error": row.error})
            row.batch_metadata = metadata
            row.status, row.error, row.end_time, row.processing_time = BatchStatus.PENDING, None, None, None
            row.updated_at = utcnow()
            return Registration(False, metadata[GENERATION_KEY], reopened=True)
        return Registration(False, None if status is not None and status.is_final else generation_of(row))
    row = await _insert_pending(session, batch.batch_id, batch.tenant_id, schema, batch.created_by)
    row.batch_metadata = {"input": batch.input_summary, GENERATION_KEY: 0}
    row.options = batch.options
    row.total_domains = len(batch.domains)
    await _record_domains(session, batch.batch_id, batch.domains)
    rejected = list(rejected)
    await _upsert_results(session, batch.batch_id, rejected)
    row.failed_domains = len(rejected)
    row.progress = _progress(len(rejected), row.total_domains)
    return Registration(True, 0)


async def _refuse_new_domains(session: AsyncSession, row: BatchJob, domains: Iterable[str]) -> None:
    """BatchFinished (it ended) or BatchAlreadyRunning (it waits or runs) when ``domains``
    names one the batch does not have."""
    known = set(_entries(row.batch_metadata or {})) | set(await session.scalars(
        select(DomainResult.domain).where(DomainResult.batch_id == row.batch_id)))
    new = [domain for domain in domains if domain not in known]
    if not new:
        return
    status = _status(row) or row.status
    shown = ", ".join(new[:3]) + (f" (+{len(new) - 3} more)" if len(new) > 3 else "")
    refusal = BatchFinished if isinstance(status, BatchStatus) and status.is_final else BatchAlreadyRunning
    raise refusal(
        f"batch {row.batch_id} is {status} with {len(known)} domains; {shown} not among them: a batch is not "
        "grown once submitted, submit them as a new batch (the same domains again, or some of them, are the "
        "same batch)"
    )


async def recorded_domains(session: AsyncSession, batch_id: UUID, tenant_id: UUID) -> list[str]:
    """The entries a batch was registered with (its domain_results keys): how a run of a
    batch submitted by reference learns its domains. BatchNotFound for an unknown id or
    another tenant's."""
    row = await session.scalar(select(BatchJob.id).where(BatchJob.batch_id == batch_id, BatchJob.tenant_id == tenant_id))
    if row is None:
        raise BatchNotFound(f"batch {batch_id} not found")
    found = await session.scalars(
        select(DomainResult.domain).where(DomainResult.batch_id == batch_id).order_by(DomainResult.domain))
    return list(found)


async def note_flow_run(session: AsyncSession, *, batch_id: UUID, flow_run_id: str, generation: int = 0) -> None:
    """Name the flow run that will run a pending batch (unless one has adopted it already,
    or the batch has moved on to a later run)."""
    row = await _lock(session, batch_id)
    if row is None or row.status != BatchStatus.PENDING or generation_of(row) != generation:
        return
    metadata = dict(row.batch_metadata or {})
    if metadata.get(OWNER_KEY) is None:
        metadata[OWNER_KEY] = flow_run_id
        row.batch_metadata = metadata
        row.updated_at = utcnow()


def _alive_elsewhere(row: BatchJob, flow_run_id: str | None, stale_after: float) -> bool:
    if _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING) or row.updated_at is None:
        return False
    owner = _owner(row)
    if owner is None or owner == flow_run_id:
        return False  # pending, never started; or this very run again (a flow retry)
    return (utcnow() - _aware(row.updated_at)).total_seconds() < stale_after


async def _record_domains(session: AsyncSession, batch_id: UUID, domains: Iterable[str]) -> None:
    rows = [{"batch_id": batch_id, "domain": d, "updated_at": utcnow()} for d in domains]
    if rows:
        dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
        await session.execute(dialect.insert(DomainResult).on_conflict_do_nothing(), rows)


async def _saved_outcomes(session: AsyncSession, batch_id: UUID) -> dict[str, dict[str, Any]]:
    found = await session.execute(
        select(DomainResult.domain, DomainResult.outcome).where(
            DomainResult.batch_id == batch_id, DomainResult.outcome.is_not(None)
        )
    )
    return dict(found.all())


def _count(row: BatchJob, statuses: dict[str, dict[str, Any]]) -> tuple[int, int]:
    completed = sum(1 for e in statuses.values() if e.get("status") == DomainStatus.COMPLETED)
    failed = sum(1 for e in statuses.values() if e.get("status") == DomainStatus.FAILED)
    row.total_domains = max(row.total_domains or 0, len(statuses))
    row.completed_domains = completed
    row.failed_domains = failed
    row.progress = _progress(completed + failed, row.total_domains)
    return completed, failed


async def heartbeat(session: AsyncSession, *, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None) -> bool:
    """The run that owns a running batch says it is alive: the row's updated_at moves,
    so no recovery declares it stale. False (nothing written) when the batch is not
    running any more or another run owns it now."""
    row = await _lock(session, batch_id)
    if row is None or row.tenant_id != tenant_id or _status(row) != BatchStatus.PROCESSING:
        return False
    if _owner(row) != flow_run_id:
        return False
    row.updated_at = utcnow()
    return True


async def save_progress(
    session: AsyncSession,
    *,
    batch_id: UUID,
    tenant_id: UUID,
    flow_run_id: str | None,
    outcomes: Iterable[DomainOutcome],
) -> None:
    """Save outcomes as they come (one row each in domain_results) and move the batch's
    counts and progress; the row's status stays ``processing``. Called every few seconds,
    by the run that owns the batch only (BatchAlreadyRunning otherwise)."""
    row = await _owned_batch(session, batch_id, tenant_id, flow_run_id)
    await _upsert_results(session, batch_id, list(outcomes))
    await _count_saved(session, row)


async def _count_saved(session: AsyncSession, row: BatchJob) -> None:
    """The batch's counts and progress from its saved outcomes. Counted by the database:
    a large batch's outcomes are not read back every save."""
    status = DomainResult.outcome["status"].as_string()
    total, completed, failed = (await session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((status == DomainStatus.COMPLETED.value, 1), else_=0)), 0),
            func.coalesce(func.sum(case((status == DomainStatus.FAILED.value, 1), else_=0)), 0),
        ).where(DomainResult.batch_id == row.batch_id)
    )).one()
    row.total_domains = max(row.total_domains or 0, total)
    row.completed_domains, row.failed_domains = completed, failed
    row.progress = _progress(completed + failed, row.total_domains)
    row.updated_at = utcnow()


async def record_outcomes(
    session: AsyncSession,
    *,
    batch_id: UUID,
    tenant_id: UUID,
    flow_run_id: str | None,
    outcomes: Iterable[DomainOutcome],
) -> BatchStatus:
    """Store the last outcomes and the batch's final statuses, counts, progress and status.

    ``outcomes`` are those not saved yet; the ones save_progress saved are read back, so
    batch_metadata["domain_results"] is written once, at the end. Only the run that
    owns the batch may (BatchAlreadyRunning otherwise, nothing written)."""
    row = await _owned_batch(session, batch_id, tenant_id, flow_run_id)
    outcomes = list(outcomes)
    await _upsert_results(session, batch_id, outcomes)
    metadata = dict(row.batch_metadata or {})
    statuses = _entries(metadata)
    statuses.update(await _saved_outcomes(session, batch_id))
    completed, failed = _count(row, statuses)
    status = batch_status_for(completed=completed, failed=failed)
    metadata.pop(_OUR_OLDER_ENTRIES_KEY, None)
    metadata[ENTRIES_KEY] = statuses
    row.batch_metadata = metadata
    _finish(row, status)
    return status


async def _upsert_results(session: AsyncSession, batch_id: UUID, outcomes: list[DomainOutcome]) -> None:
    if not outcomes:
        return
    now = utcnow()
    rows = [
        {
            "batch_id": batch_id,
            "domain": outcome.domain,
            "final_url": outcome.final_url,
            "outcome": outcome.status_entry(),
            "site_metadata": outcome.metadata,
            "updated_at": now,
        }
        for outcome in outcomes
    ]
    upsert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statement = upsert(DomainResult)
    statement = statement.on_conflict_do_update(
        index_elements=[DomainResult.batch_id, DomainResult.domain],
        set_={
            "final_url": statement.excluded.final_url,
            "outcome": statement.excluded.outcome,
            "site_metadata": statement.excluded.site_metadata,
            "updated_at": statement.excluded.updated_at,
        },
    )
    await session.execute(statement, rows)


async def end_batch(
    session: AsyncSession,
    *,
    batch_id: UUID,
    tenant_id: UUID,
    status: BatchStatus,
    error: str,
    flow_run_id: str | None = None,
    generation: int | None = None,
) -> bool:
    """Mark a batch of ``tenant_id`` that is still pending or running as ended (failed
    or cancelled).

    Another tenant's batch is never touched; a batch that already has a final status
    keeps it. Given ``flow_run_id`` (a run's hook), only that run's batch ends: one
    another run owns, or one a recovery or a stop took away from it (released), is left
    alone; a pending batch no run has claimed yet ends when the run is of its current
    generation (``generation``: the run's; None, a person's own start). Returns whether
    the row changed.
    """
    row = await _lock(session, batch_id)
    if row is None or row.tenant_id != tenant_id or _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING):
        return False
    if flow_run_id is not None and _owner(row) != flow_run_id:
        metadata = row.batch_metadata or {}
        unclaimed = (_owner(row) is None and _status(row) == BatchStatus.PENDING and not metadata.get(RELEASED_KEY)
                     and flow_run_id not in (metadata.get("recovery") or {}).get("dead_flow_runs", []))
        if not unclaimed or generation not in (None, generation_of(row)):
            return False
    row.error = error
    _finish(row, status)
    return True


async def fail_submission(session: AsyncSession, *, batch_id: UUID, tenant_id: UUID, error: str) -> bool:
    """Fail a batch whose submission could not start a flow run: only while it is still
    ``pending`` and no run has claimed it (a run that adopted it meanwhile keeps it).
    Called only by the submission that created the row. Returns whether it changed."""
    row = await _lock(session, batch_id)
    if row is None or row.tenant_id != tenant_id or _status(row) != BatchStatus.PENDING:
        return False
    if _owner(row) is not None:
        return False
    row.error = error
    # The run Prefect may still start for this submission is refused when it does.
    row.batch_metadata = {**(row.batch_metadata or {}), GENERATION_KEY: generation_of(row) + 1}
    _finish(row, BatchStatus.FAILED)
    return True


async def release_batch(
    session: AsyncSession,
    *,
    batch_id: UUID,
    tenant_id: UUID,
    flow_run_id: str | None,
    reason: str,
    crashed: bool,
    outcomes: Iterable[DomainOutcome] = (),
) -> int | None:
    """The run ``flow_run_id`` lets its batch go without ending it: its last outcomes are
    saved, the batch waits (``pending``) for a run of the next generation, which skips
    what is saved, and ``batch_metadata.released`` says why. A run stopped (SIGTERM) or
    crashed never ends a batch: nobody decided so.

    ``crashed`` counts towards the recovery's attempts (a stop by an operator does not).
    Returns the generation to run next, or None (nothing written) when the run does not
    own the batch any more, or the batch has ended."""
    row = await _lock(session, batch_id)
    if row is None or row.tenant_id != tenant_id or _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING):
        return None
    if _owner(row) != flow_run_id:
        return None
    outcomes = list(outcomes)
    if outcomes:
        await _upsert_results(session, batch_id, outcomes)
        await _count_saved(session, row)
    metadata = dict(row.batch_metadata or {})
    metadata.pop(OWNER_KEY, None)
    metadata[GENERATION_KEY] = generation_of(row) + 1
    metadata[RELEASED_KEY] = {"reason": reason, "at": utcnow().isoformat(), "flow_run_id": flow_run_id,
                              "crashed": crashed}
    if crashed:
        recovery = dict(metadata.get("recovery") or {})
        recovery["attempts"] = int(recovery.get("attempts", 0)) + 1
        metadata["recovery"] = recovery
    row.batch_metadata = metadata
    row.status = BatchStatus.PENDING
    row.updated_at = utcnow()
    return metadata[GENERATION_KEY]


async def retire_run(
    session: AsyncSession, *, batch_id: UUID, generation: int, flow_run_id: str, reason: str
) -> int | None:
    """A submission found the run of ``generation`` over while the batch is not: that run
    died without releasing it. The batch moves to the next generation (its run is asked
    for next); None when the batch has moved on or ended meanwhile."""
    row = await _lock(session, batch_id)
    if row is None or _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING):
        return None
    if generation_of(row) != generation or _owner(row) not in (None, flow_run_id):
        return None
    metadata = dict(row.batch_metadata or {})
    metadata.pop(OWNER_KEY, None)
    metadata[GENERATION_KEY] = generation + 1
    recovery = dict(metadata.get("recovery") or {})
    recovery["attempts"] = int(recovery.get("attempts", 0)) + 1
    recovery.setdefault("dead_flow_runs", []).append(flow_run_id)
    recovery["last_reason"] = reason
    metadata["recovery"] = recovery
    row.batch_metadata = metadata
    row.status = BatchStatus.PENDING
    row.updated_at = utcnow()
    return generation + 1


#: The error of a row another writer left pending or running whose domains it never
#: recorded (ScraperSky's old service kept only their count).
FOREIGN_ROW_ERROR = (
    "left {status} by an earlier backend; its domains were never recorded: submit them again"
)


@dataclass(frozen=True)
class Candidate:
    """A batch still to be worked on, as the recovery sees it (the row may change before
    the recovery acts: ``take_over`` and ``end_batch`` check it again under its lock)."""

    batch_id: UUID
    tenant_id: UUID
    status: str
    owner: str | None
    generation: int
    stale: bool  # no update for stale_after
    released: dict[str, Any] | None  # a run let it go (batch_metadata.released)
    attempts: int  # runs of it that crashed or vanished
    options: dict[str, Any]
    #: A row another writer left (no domain of it in domain_results); its domains when the
    #: row says them, else None.
    foreign: bool = False
    foreign_domains: list[str] | None = None


async def recovery_candidates(session: AsyncSession, *, stale_after: float) -> list[Candidate]:
    """Every batch pending or running that a recovery should look at: one a run released,
    one with an owner (its run may be dead: Prefect tells), and one with no update for
    ``stale_after`` seconds (ours, or another writer's)."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    ours = exists().where(DomainResult.batch_id == BatchJob.batch_id)
    rows = (await session.execute(select(BatchJob, ours).where(BatchJob.status.in_(ACTIVE_STATUS_WORDS)))).all()
    found = []
    for row, recorded in rows:
        metadata = row.batch_metadata if isinstance(row.batch_metadata, dict) else {}
        stale = row.updated_at is None or _aware(row.updated_at) < cutoff
        released = metadata.get(RELEASED_KEY) if _owner(row) is None else None
        if not (stale or released or _owner(row)):
            continue
        found.append(Candidate(
            batch_id=row.batch_id, tenant_id=row.tenant_id, status=row.status, owner=_owner(row),
            generation=generation_of(row), stale=stale, released=released,
            attempts=int((metadata.get("recovery") or {}).get("attempts", 0)), options=row.options or {},
            foreign=not recorded, foreign_domains=None if recorded else _domains_in_row(row),
        ))
    return found


def _domains_in_row(row: BatchJob) -> list[str] | None:
    """The domains of a row another writer left, when it says them all: a ``domains`` list
    in batch_metadata, or the keys of its ``domain_results`` when there are as many as the
    row's ``total_domains``."""
    metadata = row.batch_metadata if isinstance(row.batch_metadata, dict) else {}
    listed = metadata.get("domains")
    if isinstance(listed, list) and listed and all(isinstance(d, str) for d in listed):
        return listed
    entries = _entries(metadata)
    if entries and len(entries) >= (row.total_domains or 0):
        return list(entries)
    return None


async def take_over(
    session: AsyncSession, *, seen: Candidate, reason: str, crashed: bool
) -> int | None:
    """The recovery takes the batch away from its dead run (or from nobody) so that a run
    of the returned generation may adopt it; None when the row changed since ``seen``
    (another run took it, it ended, a client was given a final answer): nothing written.

    A dead run's generation is closed (a late run of it is refused); a released batch
    keeps the generation its release opened. ``crashed`` counts one more attempt. A row
    another writer left gets its domains recorded (ours from now on)."""
    row = await _lock(session, seen.batch_id)
    if row is None or _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING):
        return None
    if _owner(row) != seen.owner or generation_of(row) != seen.generation:
        return None
    metadata = dict(row.batch_metadata or {})
    recovery = dict(metadata.get("recovery") or {})
    if crashed:
        recovery["attempts"] = int(recovery.get("attempts", 0)) + 1
    recovery["last_at"] = utcnow().isoformat()
    recovery["last_reason"] = reason
    if seen.owner is not None:
        recovery.setdefault("dead_flow_runs", []).append(metadata.pop(OWNER_KEY))
    if not metadata.get(RELEASED_KEY):
        metadata[GENERATION_KEY] = generation_of(row) + 1
    metadata.pop(RELEASED_KEY, None)
    metadata["recovery"] = recovery
    row.batch_metadata = metadata
    row.status = BatchStatus.PENDING
    row.updated_at = utcnow()
    if seen.foreign and seen.foreign_domains:
        await _record_domains(session, seen.batch_id, seen.foreign_domains)
    return metadata[GENERATION_KEY]


async def settle(session: AsyncSession, *, seen: Candidate, status: BatchStatus, error: str) -> bool:
    """The recovery ends a batch (``failed``: it gave up, or nothing can run it;
    ``cancelled``: someone cancelled its run) when the row is still as it saw it."""
    row = await _lock(session, seen.batch_id)
    if row is None or _status(row) not in (BatchStatus.PENDING, BatchStatus.PROCESSING):
        return False
    if _owner(row) != seen.owner or generation_of(row) != seen.generation:
        return False
    row.error = error
    _finish(row, status)
    return True


async def get_batch_status(
    session: AsyncSession, batch_id: UUID, tenant_id: UUID
) -> BatchStatusReport:
    """The batch as users read it; another tenant's batch is not found."""
    row = await session.scalar(
        select(BatchJob).where(BatchJob.batch_id == batch_id, BatchJob.tenant_id == tenant_id)
    )
    if row is None:
        raise BatchNotFound(f"batch {batch_id} not found")
    metadata = dict(row.batch_metadata or {})
    statuses = _entries(metadata)
    metadata.pop(ENTRIES_KEY, None)
    metadata.pop(_OUR_OLDER_ENTRIES_KEY, None)
    found = await session.execute(
        select(DomainResult.domain, DomainResult.outcome, DomainResult.site_metadata).where(
            DomainResult.batch_id == batch_id
        )
    )
    site_metadata: dict[str, Any] = {}
    for domain, outcome, metadata_of_domain in found:
        site_metadata[domain] = metadata_of_domain
        if outcome is not None:
            statuses[domain] = outcome  # saved while the batch runs (or by a run that died)
    domain_statuses = {
        domain: {**entry, "metadata": site_metadata.get(domain)}
        for domain, entry in statuses.items()
    }
    total, completed, failed = row.total_domains or 0, row.completed_domains or 0, row.failed_domains or 0
    return BatchStatusReport(
        batch_id=row.batch_id,
        status=_status(row) or row.status,  # a word no one defined is shown as it is
        total_domains=total,
        completed_domains=completed,
        failed_domains=failed,
        # Counted, not read: rows of older writers kept a percentage here.
        progress=_progress(completed + failed, total) if total else 0.0,
        processor_type=row.processor_type,
        created_by=row.created_by,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        start_time=_aware(row.start_time),
        end_time=_aware(row.end_time),
        processing_time=row.processing_time,
        domain_statuses=domain_statuses,
        error=row.error,
        metadata=metadata,
    )


async def batch_progress(session: AsyncSession, batch_id: UUID) -> tuple[int, int] | None:
    """(domains done, domains in all) as last saved; None before the batch has a row."""
    found = (await session.execute(
        select(BatchJob.completed_domains, BatchJob.failed_domains, BatchJob.total_domains)
        .where(BatchJob.batch_id == batch_id)
    )).first()
    if found is None:
        return None
    completed, failed, total = found
    return (completed or 0) + (failed or 0), total or 0


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
