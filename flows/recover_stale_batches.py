"""The recovery flow: every batch whose run is gone is resumed, or ended with the reason.

It looks at every batch still ``pending`` or ``processing`` that may need it (``decide``
says what to do with each, from the row and from what Prefect says of its run):

- a batch a run released (stopped, crashed): resumed now;
- a batch whose run Prefect calls crashed, failed or completed: resumed now, without
  waiting for ``stale_after``; one whose run was cancelled ends ``cancelled`` (someone
  decided so); one whose run waits for a worker, or moves, is left alone;
- a batch with no update for ``stale_after`` whose run Prefect still calls running (its
  process was killed with its worker) or does not know: resumed;
- a row another writer left (ScraperSky's old service) with no update for
  ``stale_after``: resumed when the row says its domains, else ``failed`` with an
  error a person understands (``FOREIGN_ROW_ERROR``).

A resumption takes the batch under its lock only if the row is still as it was seen
(``take_over``): a batch a client was told ended stays ended. Runs that crashed or
vanished are counted; past ``max_attempts`` the batch ends ``failed`` with the reason.
Run from a deployment, a resumed batch is a new run of the ``batch-scrape`` deployment
(the next generation: a late run of a dead one is refused); run in a process of its
own (``scrapersky recover``), the batch is run here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from scrapersky.batch import BatchOptions, BatchRequest, BatchStatus
from scrapersky.db import batches
from scrapersky.db.batches import FOREIGN_ROW_ERROR, Candidate
from scrapersky.db.engine import Database
from scrapersky.settings import current_settings

from .batch_scrape import batch_scrape
from .runs import DEFAULT_DEPLOYMENT, ask_for_run

__all__ = ["recover_stale_batches", "Decision", "decide", "DEFAULT_MAX_ATTEMPTS"]

DEFAULT_MAX_ATTEMPTS = 3

#: Prefect's words for a run that has not started yet (it waits for a worker).
_WAITING = {"SCHEDULED", "PENDING", "PAUSED"}
#: ... for a run that moves, or says it does.
_MOVING = {"RUNNING", "CANCELLING"}
#: ... for a run that is over.
_OVER = {"COMPLETED", "FAILED", "CRASHED"}


@dataclass(frozen=True)
class Decision:
    action: Literal["leave", "resume", "fail", "cancel"]
    reason: str = ""
    crashed: bool = False  # a run died: counted towards max_attempts


def decide(batch: Candidate, run_state: str | None, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Decision:
    """What the recovery does with ``batch``; ``run_state``: Prefect's state type of the
    batch's owner run ("MISSING" when Prefect does not know it; None: no owner)."""
    run = f"flow run {batch.owner}"
    if batch.owner is None:
        if batch.released:
            decision = Decision("resume", f"released: {batch.released.get('reason', 'no reason recorded')}")
        elif not batch.stale:
            return Decision("leave")
        elif batch.foreign and batch.foreign_domains:
            decision = Decision("resume", f"left {batch.status} by an earlier backend; resumed with the "
                                          f"{len(batch.foreign_domains)} domains its row recorded", crashed=True)
        elif batch.foreign:
            return Decision("fail", FOREIGN_ROW_ERROR.format(status=batch.status))
        else:
            decision = Decision("resume", f"{batch.status} with no run for longer than stale_after", crashed=True)
    elif run_state == "CANCELLED":
        return Decision("cancel", f"{run} was cancelled")
    elif run_state in _OVER:
        decision = Decision("resume", f"{run} is {run_state.lower()}", crashed=True)
    elif run_state in _WAITING or not batch.stale:
        return Decision("leave")  # a worker will take it; or it moves
    elif run_state in _MOVING:
        decision = Decision("resume", f"{run} is {run_state.lower()} but saved nothing for longer than "
                                      "stale_after: its process is gone", crashed=True)
    else:
        decision = Decision("resume", f"{run} is unknown to Prefect and saved nothing for longer than "
                                      "stale_after", crashed=True)
    died = batch.attempts + decision.crashed  # a release by a crash was counted when it was made
    if died > max_attempts:
        return Decision("fail", f"recovery gave up after {died} runs of the batch died; {decision.reason}")
    return decision


@task(name="find-batches-to-recover", cache_policy=NO_CACHE)
def find_candidates(database: Database, stale_after: float) -> list[Candidate]:
    return database.run(lambda session: batches.recovery_candidates(session, stale_after=stale_after))


@task(name="read-flow-run-states", cache_policy=NO_CACHE)
def flow_run_states(flow_run_ids: list[str]) -> dict[str, str]:
    """Prefect's state type of each run ("MISSING" when it has none)."""

    async def read() -> dict[str, str]:
        found: dict[str, str] = {}
        async with get_client() as client:
            for flow_run_id in flow_run_ids:
                try:
                    run = await client.read_flow_run(UUID(flow_run_id))
                except (ObjectNotFound, ValueError):
                    found[flow_run_id] = "MISSING"
                    continue
                found[flow_run_id] = run.state.type.value if run.state is not None else "MISSING"
        return found

    return asyncio.run(read())


@task(name="mark-vanished-run-crashed", cache_policy=NO_CACHE)
def mark_crashed(flow_run_id: str) -> None:
    """The UI should not show a run as running when its process is gone."""

    async def mark() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(
                UUID(flow_run_id), Crashed(message="no progress saved for longer than stale_after: the run vanished"),
                force=True)

    asyncio.run(mark())


@task(name="take-over-batch", cache_policy=NO_CACHE)
def take_over(database: Database, batch: Candidate, reason: str, crashed: bool) -> int | None:
    return database.run(lambda session: batches.take_over(session, seen=batch, reason=reason, crashed=crashed))


@task(name="end-batch", cache_policy=NO_CACHE)
def settle(database: Database, batch: Candidate, status: BatchStatus, reason: str) -> bool:
    return database.run(lambda session: batches.settle(session, seen=batch, status=status, error=reason))


@task(name="ask-for-batch-run", cache_policy=NO_CACHE)
def ask_for_batch_run(database: Database, request: BatchRequest) -> str:
    return ask_for_run(database, DEFAULT_DEPLOYMENT, request)


@flow(name="recover-stale-batches")
def recover_stale_batches(
    stale_after: float | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> dict[str, Any]:
    """Resume, or end with the reason, every batch whose run is gone.

    Args:
        stale_after: Seconds without an update after which a pending/running batch whose
            run Prefect cannot vouch for is stale (default: SCRAPERSKY_STALE_AFTER, 900).
        max_attempts: Runs of one batch that may crash or vanish before it is marked failed.
    """
    logger = get_run_logger()
    settings = current_settings()  # read once, here: the edge of a deployment's run
    database = settings.database()
    stale_after = stale_after if stale_after is not None else settings.stale_after
    in_deployment = runtime.deployment.id is not None
    summary: dict[str, Any] = {"resumed": [], "failed": [], "cancelled": []}
    found = find_candidates(database, stale_after)
    states = flow_run_states([batch.owner for batch in found if batch.owner]) if any(b.owner for b in found) else {}
    for batch in found:
        run_state = states.get(batch.owner) if batch.owner else None
        decision = decide(batch, run_state, max_attempts=max_attempts)
        if decision.action == "leave":
            continue
        if decision.action in ("fail", "cancel"):
            status = BatchStatus.FAILED if decision.action == "fail" else BatchStatus.CANCELLED
            if settle(database, batch, status, decision.reason):
                logger.warning("batch %s ended %s: %s", batch.batch_id, status, decision.reason)
                summary["failed" if decision.action == "fail" else "cancelled"].append(str(batch.batch_id))
            continue
        generation = take_over(database, batch, decision.reason, decision.crashed)
        if generation is None:
            logger.info("batch %s changed while the recovery looked at it: left to its new owner", batch.batch_id)
            continue
        if batch.owner and run_state in _MOVING:
            mark_crashed(batch.owner)
        logger.info("resuming batch %s (run %s of it): %s", batch.batch_id, generation, decision.reason)
        request = BatchRequest(
            tenant_id=batch.tenant_id, batch_id=batch.batch_id, generation=generation,
            options=BatchOptions.from_stored(batch.options) if batch.options else None,
        )
        if in_deployment:
            ask_for_batch_run(database, request)  # a run of the batch-scrape deployment: in parallel, as any batch
        else:
            batch_scrape(request, return_state=True)
        summary["resumed"].append(str(batch.batch_id))
    return summary
