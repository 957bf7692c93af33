"""The batch-scrape flow: every domain's homepage fetched, its metadata extracted,
the batch's progress and every domain's outcome stored in ``batch_jobs``.

How a run ends its batch (README, "When a run stops"):

- it finishes: ``completed``, ``partial`` or ``failed`` (every domain failed);
- it is refused for good (another tenant's batch, a schema that does not fit, a
  submission answered already): ``failed`` with the reason, when the batch is its own;
- it is cancelled by someone (the UI, the API): ``cancelled``;
- it is stopped (SIGTERM, Ctrl-C) or crashes (its process killed, its database gone
  for longer than the retries): the batch is never ended. Every outcome already known is
  saved, the batch is released (``pending``, ``batch_metadata.released`` says why) and
  the next run of it is asked for at once when the run came from a deployment; the
  recovery flow resumes it otherwise. A run that ``scrapersky scrape`` started in the
  foreground is stopped by its user: it saves what it knows and ends ``cancelled``.
"""


import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from prefect import flow, get_run_logger, runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from prefect.utilities.asyncutils import run_coro_as_sync

from scrapersky.batch import DEFAULT_TENANT_ID, BatchRequest, BatchStatus, DomainOutcome
from scrapersky.db import batches
from scrapersky.db.batches import NewBatch
from scrapersky.db.engine import Database
from scrapersky.domains import DomainPlan, plan_domains
from scrapersky.errors import BatchError, ConfigError, SchemaMismatch
from scrapersky.settings import current_settings
from scrapersky.tasks.persist import open_batch, persist_batch, recorded_domains
from scrapersky.tasks.scrape import outcome_from_error

from .fan_out import FanOut
from .heartbeat import Heartbeat, heartbeat_interval
from .progress import ProgressRecorder
from .runs import ask_for_run

__all__ = ["batch_scrape", "stopping_cancels"]

#: Errors that end a batch ``failed`` for good: a refusal that no later run would change.
_REFUSALS = (BatchError, SchemaMismatch, ConfigError)

_stopping_cancels: ContextVar[bool] = ContextVar("scrapersky_stopping_cancels", default=False)


@contextmanager
def stopping_cancels() -> Iterator[None]:
    """Runs started inside are their user's (``scrapersky scrape`` in the foreground): a
    stop (Ctrl-C, SIGTERM) ends the batch ``cancelled`` instead of releasing it."""
    token = _stopping_cancels.set(True)
    try:
        yield
    finally:
        _stopping_cancels.reset(token)


def _end_batch(status: BatchStatus):
    """A flow-state hook for the ends someone decided: a refusal, a cancellation."""

    # Prefect's runner passes these by keyword: the names matter.
    def hook(flow: Flow, flow_run: FlowRun, state: State) -> None:
        batch = _batch_of(flow_run)
        error = f"flow run {flow_run.id} ended {state.name}: {state.message or 'no message'}"
        # Only this run's tenant's batch, and only while this run owns it (or, pending, no run does).
        run_coro_as_sync(current_settings().database().call(lambda session: batches.end_batch(
            session, batch_id=batch.batch_id, tenant_id=batch.tenant_id, status=status, error=error,
            flow_run_id=str(flow_run.id), generation=batch.generation)))

    return hook


def _failed(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """A failed run: a refusal ends its batch ``failed``; anything else (the database gone
    for longer than the retries, a bug) releases it for the recovery, which gives up
    after its attempts."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result could not be read: not a refusal we know of
        error = None
    if isinstance(error, _REFUSALS) or isinstance(error, BatchStatus):  # BatchStatus: every domain failed
        _end_batch(BatchStatus.FAILED)(flow=flow, flow_run=flow_run, state=state)
    else:
        _crashed(flow=flow, flow_run=flow_run, state=state)


def _crashed(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """A crashed run (its process killed, its infrastructure gone) releases its batch and
    asks for the batch's next run; the run that came from no deployment leaves it to the
    recovery."""
    batch = _batch_of(flow_run)
    database = current_settings().database()
    reason = f"flow run {flow_run.id} ended {state.name}: {state.message or 'no message'}"
    generation = database.run(lambda session: batches.release_batch(
        session, batch_id=batch.batch_id, tenant_id=batch.tenant_id, flow_run_id=str(flow_run.id), reason=reason,
        crashed=True))
    if generation is not None and flow_run.deployment_id is not None:
        _ask_next_run(database, flow_run.deployment_id, BatchRequest(
            batch_id=batch.batch_id, tenant_id=batch.tenant_id, options=batch.options, generation=generation))


def _ask_next_run(database: Database, deployment_id: UUID, request: BatchRequest) -> None:
    """Best effort: when Prefect cannot be asked, the recovery resumes the batch."""
    try:
        ask_for_run(database, deployment_id, request)
    except Exception as error:
        get_run_logger().warning("batch %s: its next run could not be asked for (%s): the recovery will resume it",
                                 request.batch_id, type(error).__name__)


def _batch_of(flow_run: FlowRun) -> BatchRequest:
    """The run's batch, from its parameters (as the flow reads them), its id resolved."""
    batch = flow_run.parameters.get("batch")
    try:
        batch = batch if isinstance(batch, BatchRequest) else BatchRequest.model_validate(batch)
    except ValueError:  # a run refused for its parameters: what can be read of them
        found = batch if isinstance(batch, dict) else {}
        batch = BatchRequest(batch_id=found.get("batch_id") or flow_run.id,
                             tenant_id=found.get("tenant_id") or DEFAULT_TENANT_ID)
    return batch.model_copy(update={"batch_id": batch.batch_id or flow_run.id})


@flow(
    name="batch-scrape",
    task_runner=ThreadPoolTaskRunner(max_workers=4),
    on_failure=[_failed],
    on_crashed=[_crashed],
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
            database,
            NewBatch.of(batch_id, batch.tenant_id, plan, options, recorded=batch.by_reference,
                        generation=batch.generation),
            flow_run_id=flow_run_id, stale_after=settings.stale_after,
        )
        to_fetch = [domain for domain in plan.domains if domain not in already_done]
        progress = ProgressRecorder(
            database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id, total=len(to_fetch)
        )
        outcomes = fan_out.outcomes(to_fetch)  # held here: a stop is handled before the fan-out closes
        try:
            with Heartbeat(database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id,
                           interval=heartbeat_interval(settings.stale_after), flush=progress.flush):
                for outcome in outcomes:
                    progress(outcome)
        except (TerminationSignal, KeyboardInterrupt) as stop:
            _stopped(database, batch, batch_id, flow_run_id, _rejected(plan, already_done) + progress.unsaved(), stop)
            raise
    status = persist_batch(
        database, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id,
        # Plain data, thousands of nested dicts: quoted, Prefect does not walk it looking
        # for futures (that walk cost about 1 ms of CPU a domain, each save included).
        outcomes=quote(_rejected(plan, already_done) + progress.unsaved()),
    )
    progress.publish_summary(status, skipped=len(already_done))

    if status == BatchStatus.FAILED:
        return Failed(message=f"batch {batch_id}: every domain failed", data=status)
    return status


def _stopped(database: Database, batch: BatchRequest, batch_id: UUID, flow_run_id: str,
             known: list[DomainOutcome], stop: BaseException) -> None:
    """A stop (SIGTERM, Ctrl-C): every outcome known is saved; the batch is released for
    its next run, or, in its user's foreground, ends ``cancelled``. A second Ctrl-C
    interrupts this at once."""
    signal_name = "SIGINT" if isinstance(stop, KeyboardInterrupt) else signal.Signals(
        getattr(stop, "signal", signal.SIGTERM)).name
    logger = get_run_logger()
    if _stopping_cancels.get():
        cancelled = f"stopped by its user ({signal_name}) in flow run {flow_run_id}: resume it with --batch-id"
    elif _cancel_asked(flow_run_id):  # the runner's SIGTERM of a cancellation: someone decided
        cancelled = f"flow run {flow_run_id} was cancelled"
    else:
        cancelled = None
    if cancelled:
        database.run(lambda session: batches.save_progress(
            session, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id, outcomes=known))
        database.run(lambda session: batches.end_batch(
            session, batch_id=batch_id, tenant_id=batch.tenant_id, status=BatchStatus.CANCELLED, error=cancelled,
            flow_run_id=flow_run_id))
        logger.warning("batch %s cancelled (%s); %d outcomes saved", batch_id, signal_name, len(known))
        return
    generation = database.run(lambda session: batches.release_batch(
        session, batch_id=batch_id, tenant_id=batch.tenant_id, flow_run_id=flow_run_id, crashed=False,
        reason=f"flow run {flow_run_id} was stopped ({signal_name}): the batch waits for its next run",
        outcomes=known))
    logger.warning("batch %s released (%s); %d outcomes saved", batch_id, signal_name, len(known))
    context = FlowRunContext.get()
    deployment_id = context.flow_run.deployment_id if context and context.flow_run else None  # this run's own
    if generation is not None and deployment_id is not None:
        _ask_next_run(database, deployment_id, BatchRequest(
            batch_id=batch_id, tenant_id=batch.tenant_id, options=batch.options, generation=generation))


def _cancel_asked(flow_run_id: str) -> bool:
    """Whether the SIGTERM that stopped the run is a cancellation (its runner's control
    channel says so, or Prefect shows the run cancelling), not a stop."""
    from prefect._internal import control_listener  # how Prefect's own engine tells them apart

    if control_listener.get_intent() == "cancel":
        return True

    async def state() -> str | None:
        async with get_client() as client:
            run = await client.read_flow_run(UUID(flow_run_id))
            return run.state.type.value if run.state else None

    try:
        return run_coro_as_sync(asyncio.wait_for(state(), 5.0)) in ("CANCELLING", "CANCELLED")
    except Exception:  # Prefect away: a stop
        return False


def _rejected(plan: DomainPlan, recorded: set[str]) -> list[DomainOutcome]:
    """The invalid entries' outcomes, but those recorded already (at registration, with
    the reason found in the entry as it was sent)."""
    return [outcome_from_error(entry, error) for entry, error in plan.invalid.items() if entry not in recorded]
