"""The batch-scrape flow: every domain's homepage fetched, its metadata extracted,
the batch's progress and every domain's outcome stored in ``batch_jobs``."""


import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import Flow, FlowRun
from prefect import runtime
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.asyncutils import run_coro_as_sync

from scrapersky.db import batches
from scrapersky.db.engine import unit_of_work
from scrapersky.flows import progress
from scrapersky.batch import BatchOptions, BatchRequest, BatchStatus, DomainOutcome
from scrapersky.domains import DomainPlan, plan_domains
from scrapersky.settings import Settings
from scrapersky.tasks.persist import open_batch, persist_batch, save_progress
from scrapersky.tasks.scrape import outcome_from_error

from .fan_out import fan_out

__all__ = ["batch_scrape"]


def _end_batch(status: BatchStatus):
    """A flow-state hook: a batch whose run failed, crashed or was cancelled says so."""

    # Prefect's runner passes these by keyword: the names matter.
    def hook(flow: Flow, flow_run: FlowRun, state: State) -> None:
        batch_id = _batch_id_of(flow_run)
        error = f"flow run {flow_run.id} ended {state.name}: {state.message or 'no message'}"

        async def end() -> None:
            async with unit_of_work() as session:
                await batches.end_batch(
                    session, batch_id=UUID(str(batch_id)), status=status, error=error, flow_run_id=str(flow_run.id)
                )

        run_coro_as_sync(end())

    return hook


def _batch_id_of(flow_run: FlowRun) -> UUID:
    batch = flow_run.parameters.get("batch")
    if isinstance(batch, BatchRequest):
        batch_id = batch.batch_id
    else:
        batch_id = (batch or {}).get("batch_id") if isinstance(batch, dict) else None
    return UUID(str(batch_id or flow_run.id))


@flow(
    name="batch-scrape",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    on_failure=[_end_batch(BatchStatus.FAILED)],
    on_crashed=[_end_batch(BatchStatus.FAILED)],
    on_cancellation=[_end_batch(BatchStatus.CANCELLED)],
)
def batch_scrape(batch: BatchRequest) -> BatchStatus | State:
    """Scrape the homepages of a batch of domains and record every outcome.

    Args:
        batch: The domains, the tenant, an optional batch id to adopt or resume, and
            how to fetch (see BatchRequest).
    """
    settings = Settings()
    batch_id = batch.batch_id or UUID(runtime.flow_run.id)
    tenant_id = batch.tenant_id
    options = batch.options or settings.batch_options()
    plan = plan_domains(batch.domains, max_batch_size=settings.max_batch_size)

    already_done = open_batch(
        batch_id=batch_id,
        tenant_id=tenant_id,
        domains=plan.domains + list(plan.invalid),
        input_summary=plan.summary(),
        options=options.model_dump(mode="json"),
        flow_run_id=runtime.flow_run.id,
    )
    to_fetch = [domain for domain in plan.domains if domain not in already_done]
    tally = _Tally(total=len(to_fetch), progress=create_progress_artifact(0.0, description=f"batch {batch_id}"))

    def save(outcomes: list[DomainOutcome]) -> bool:
        return _save_progress(batch_id, tenant_id, outcomes, tally)

    unsaved = _scrape_all(to_fetch, options, batch_id=batch_id, settings=settings, save=save, tally=tally)
    status = persist_batch(batch_id=batch_id, tenant_id=tenant_id, outcomes=_rejected(plan) + unsaved)
    _publish_summary(batch_id, status, tally, skipped=len(already_done))

    if status == BatchStatus.FAILED:
        return Failed(message=f"batch {batch_id}: every domain failed", data=status)
    return status


def _rejected(plan: DomainPlan) -> list[DomainOutcome]:
    return [outcome_from_error(entry, error) for entry, error in plan.invalid.items()]


#: Seconds between two progress saves: a small write every few seconds, never one a domain.
PROGRESS_INTERVAL = 3.0
_SUMMARY_ROWS = 500


@dataclass
class _Tally:
    """What the batch's artifacts show: counts, failures, the progress artifact."""

    total: int
    progress: UUID | None = None
    done: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, object]] = field(default_factory=list)

    def add(self, outcome: DomainOutcome) -> None:
        self.done += 1
        self.by_type[outcome.error_type or "completed"] += 1
        if outcome.error_type and len(self.failures) < _SUMMARY_ROWS:
            self.failures.append({"domain": outcome.domain, "error_type": outcome.error_type,
                                  "attempts": outcome.attempts, "error": outcome.error})


def _save_progress(batch_id: UUID, tenant_id: UUID, outcomes: list[DomainOutcome], tally: _Tally) -> bool:
    # Best effort: when the database is away, the outcomes stay for the final persist,
    # which has its own retries.
    state = save_progress.with_options(retries=0)(
        batch_id=batch_id, tenant_id=tenant_id, outcomes=outcomes, return_state=True
    )
    if tally.progress is not None and tally.total:
        update_progress_artifact(tally.progress, 100.0 * tally.done / tally.total)
    return state.is_completed()


def _publish_summary(batch_id: UUID, status: BatchStatus, tally: _Tally, *, skipped: int) -> None:
    if tally.progress is not None:
        update_progress_artifact(tally.progress, 100.0)
    counts = "\n".join(f"| {kind} | {count} |" for kind, count in tally.by_type.most_common())
    create_markdown_artifact(
        f"# Batch {batch_id}: {status}\n\n{tally.done} domains fetched by this run"
        f" ({skipped} already completed by an earlier run).\n\n| outcome | domains |\n|---|---|\n{counts}\n",
        description="batch summary",
    )
    if tally.failures:
        create_table_artifact(tally.failures, description=f"failed domains (first {_SUMMARY_ROWS})")


def _scrape_all(
    domains: list[str],
    options: BatchOptions,
    *,
    batch_id: UUID,
    settings: Settings,
    save: Callable[[list[DomainOutcome]], bool],
    tally: _Tally,
) -> list[DomainOutcome]:
    """Scrape every domain (see flows/fan_out.py); outcomes are saved every
    PROGRESS_INTERVAL seconds, so a run that dies loses at most the last few seconds.
    Returns the ones not saved yet.

    Outcomes are collected as plain data, failures included: a downstream task never
    receives the futures of failed runs (Prefect would skip it silently).
    """
    if not domains:
        return []
    outcomes = fan_out(domains, options, settings, batch_id=batch_id)
    unsaved: list[DomainOutcome] = []
    last_save = time.monotonic()
    for outcome, stored in outcomes:
        if not stored:
            unsaved.append(outcome)
        tally.add(outcome)
        progress.report(tally.done, len(domains))
        if time.monotonic() - last_save >= PROGRESS_INTERVAL:
            if save(unsaved):
                unsaved = []
            last_save = time.monotonic()
    return unsaved
