"""The batch-scrape flow: every domain's homepage fetched, its metadata extracted,
the batch's progress and every domain's outcome stored in ``batch_jobs``."""

from __future__ import annotations

from uuid import UUID

from prefect import flow, unmapped
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.asyncutils import run_coro_as_sync

from db import batches
from db.engine import unit_of_work
from scrapersky import progress
from scrapersky.batch import DEFAULT_TENANT_ID, BatchOptions, BatchStatus, DomainOutcome
from scrapersky.domains import DomainPlan, plan_domains
from scrapersky.settings import Settings
from tasks.persist import open_batch, persist_batch
from tasks.scrape import outcome_from_error, scrape_domain_for

__all__ = ["batch_scrape"]


def _end_batch(status: BatchStatus):
    """A flow-state hook: a batch whose run failed, crashed or was cancelled says so."""

    def hook(flow: Flow, run: FlowRun, state: State) -> None:
        batch_id = run.parameters.get("batch_id") or run.id
        error = f"flow run {run.id} ended {state.name}: {state.message or 'no message'}"

        async def end() -> None:
            async with unit_of_work() as session:
                await batches.end_batch(
                    session, batch_id=UUID(str(batch_id)), status=status, error=error
                )

        run_coro_as_sync(end())

    return hook


@flow(
    name="batch-scrape",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    on_failure=[_end_batch(BatchStatus.FAILED)],
    on_crashed=[_end_batch(BatchStatus.FAILED)],
    on_cancellation=[_end_batch(BatchStatus.CANCELLED)],
)
def batch_scrape(
    domains: list[str],
    tenant_id: UUID = DEFAULT_TENANT_ID,
    batch_id: UUID | None = None,
    options: BatchOptions | None = None,
) -> BatchStatus | State:
    """Scrape the homepages of a batch of domains and record every outcome.

    Args:
        domains: Domains or URLs; normalised and de-duplicated, invalid ones recorded as failed.
        tenant_id: The tenant that owns the batch.
        batch_id: Adopt (or resume) this batch; by default the flow run id is the batch id.
        options: How to fetch; by default from the SCRAPERSKY_* environment.
    """
    settings = Settings()
    batch_id = batch_id or UUID(flow_run.id)
    options = options or settings.batch_options()
    plan = plan_domains(domains, max_batch_size=settings.max_batch_size)

    already_done = open_batch(
        batch_id=batch_id,
        tenant_id=tenant_id,
        domains=plan.domains + list(plan.invalid),
        input_summary=plan.summary(),
        options=options.model_dump(mode="json"),
        flow_run_id=flow_run.id,
    )
    outcomes = _rejected(plan) + _scrape_all(
        [domain for domain in plan.domains if domain not in already_done], options
    )
    status = persist_batch(batch_id=batch_id, tenant_id=tenant_id, outcomes=outcomes)

    if status == BatchStatus.FAILED:
        return Failed(message=f"batch {batch_id}: every domain failed", data=status)
    return status


def _rejected(plan: DomainPlan) -> list[DomainOutcome]:
    return [outcome_from_error(entry, error) for entry, error in plan.invalid.items()]


def _scrape_all(domains: list[str], options: BatchOptions) -> list[DomainOutcome]:
    """Fan out one task run per domain, at most ``options.concurrency`` at a time.

    Outcomes are collected as plain data, failures included: a downstream task never
    receives the futures of failed runs (Prefect would skip it silently).
    """
    if not domains:
        return []
    scrape_domain = scrape_domain_for(options)
    outcomes: list[DomainOutcome] = []
    with ThreadPoolTaskRunner(max_workers=options.concurrency) as runner:
        futures = runner.map(scrape_domain, {"domain": domains, "options": unmapped(options)})
        domain_of = {future.task_run_id: domain for future, domain in zip(futures, domains)}
        for future in as_completed(futures):
            try:
                result = future.result(raise_on_failure=False)
            except Exception as error:  # a crashed or cancelled task run
                result = error
            domain = domain_of[future.task_run_id]
            if isinstance(result, DomainOutcome):
                outcomes.append(result)
            else:
                outcomes.append(outcome_from_error(domain, result))
            progress.report(len(outcomes), len(domains))
    return outcomes
