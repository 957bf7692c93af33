"""The batch-scrape flow: every domain's homepage fetched, its metadata extracted,
the batch's progress and every domain's outcome stored in ``batch_jobs``."""


from uuid import UUID

from prefect import flow, runtime
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from prefect.utilities.asyncutils import run_coro_as_sync

from scrapersky.batch import DEFAULT_TENANT_ID, BatchRequest, BatchStatus, DomainOutcome
from scrapersky.db import batches
from scrapersky.db.batches import NewBatch
from scrapersky.domains import DomainPlan, plan_domains
from scrapersky.settings import current_settings
from scrapersky.tasks.persist import open_batch, persist_batch, recorded_domains
from scrapersky.tasks.scrape import outcome_from_error

from .fan_out import FanOut
from .heartbeat import Heartbeat, heartbeat_interval
from .progress import ProgressRecorder

__all__ = ["batch_scrape"]


def _end_batch(status: BatchStatus):
    """A flow-state hook: a batch whose run failed, crashed or was cancelled says so."""

    # Prefect's runner passes these by keyword: the names matter.
    def hook(flow: Flow, flow_run: FlowRun, state: State) -> None:
        batch_id, tenant_id = _batch_of(flow_run)
        error = f"flow run {flow_run.id} ended {state.name}: {state.message or 'no message'}"

        # Only this run's tenant's batch, and only while no other run owns it.
        run_coro_as_sync(current_settings().database().call(lambda session: batches.end_batch(
            session, batch_id=batch_id, tenant_id=tenant_id, status=status, error=error,
            flow_run_id=str(flow_run.id))))

    return hook


def _batch_of(flow_run: FlowRun) -> tuple[UUID, UUID]:
    """(batch id, tenant id) of a run, from its parameters (as the flow reads them)."""
    batch = flow_run.parameters.get("batch")
    if isinstance(batch, BatchRequest):
        batch_id, tenant_id = batch.batch_id, batch.tenant_id
    elif isinstance(batch, dict):
        batch_id, tenant_id = batch.get("batch_id"), batch.get("tenant_id")
    else:
        batch_id, tenant_id = None, None
    return UUID(str(batch_id or flow_run.id)), UUID(str(tenant_id or DEFAULT_TENANT_ID))


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
    settings = current_settings()  # read once, here: the edge of a deployment's run
    database = settings.database()
    batch_id = batch.batch_id or UUID(runtime.flow_run.id)
    options = batch.options or settings.batch_options()
    # A large batch travels by reference: registered with its domains, its run reads them.
    entries = batch.domains or recorded_domains(database, batch_id=batch_id, tenant_id=batch.tenant_id)
    plan = plan_domains(entries, max_batch_size=settings.max_batch_size, recorded=batch.by_reference)

    flow_run_id = runtime.flow_run.id  # the batch's owner: every write below names it
    with FanOut(options, settings, expected=len(plan.domains), batch_id=batch_id) as fan_out:
        already_done = open_batch(
            database, NewBatch.of(batch_id, batch.tenant_id, plan, options, recorded=batch.by_reference),
            flow_run_id=flow_run_id, stale_after=settings.stale_after,
        )
        to_fetch = [domain for domain in plan.domains if domain not in already_done]
        progress = ProgressRecorder(
            database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id, total=len(to_fetch)
        )
        with Heartbeat(database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id,
                       interval=heartbeat_interval(settings.stale_after)):
            for outcome in fan_out.outcomes(to_fetch):
                progress(outcome)
    status = persist_batch(
        database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id,
        # Plain data, thousands of nested dicts: quoted, Prefect does not walk it looking
        # for futures (that walk cost about 1 ms of CPU a domain, each save included).
        outcomes=quote(_rejected(plan) + progress.unsaved()),
    )
    progress.publish_summary(status, skipped=len(already_done))

    if status == BatchStatus.FAILED:
        return Failed(message=f"batch {batch_id}: every domain failed", data=status)
    return status


def _rejected(plan: DomainPlan) -> list[DomainOutcome]:
    return [outcome_from_error(entry, error) for entry, error in plan.invalid.items()]
