"""Fanning a batch out: a task run per domain for an ordinary batch, sub-batch task
runs for a large one, on threads, worker processes or a Dask cluster.

Up to ``SCRAPERSKY_TASK_PER_DOMAIN_MAX`` (250) domains, each domain is a task run of
its own: visible in the UI, retried by Prefect. Above, the batch is cut into
sub-batches (``SUB_BATCHES_PER_WORKER`` per worker, 50 to 500 domains), each one task
run that retries every domain on its own, saves finished outcomes as it goes and
returns them all; at most ``2 x workers`` are in flight. A per-domain task run costs
the flow and the Prefect server tens of milliseconds of CPU each: 10,000 of them
overload a local server, 20 sub-batches do not (README, "Scale").
"""

import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from uuid import UUID

from prefect import unmapped
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.errors import ConfigError
from scrapersky.settings import Settings
from scrapersky.tasks.attempt import exit_with_parent
from scrapersky.tasks.persist import stored_outcomes
from scrapersky.tasks.scrape import SubBatchResult, outcome_from_error, scrape_domain_for, scrape_domains, worker_pool

__all__ = ["fan_out", "sub_batch_size", "PROCESSES_FROM"]


def fan_out(
    domains: list[str], options: BatchOptions, settings: Settings, *, batch_id: UUID
) -> Iterator[tuple[DomainOutcome, bool]]:
    """Every domain's outcome as it is known, with whether it is saved already."""
    if len(domains) <= settings.task_per_domain_max:
        return ((outcome, False) for outcome in _task_per_domain(domains, options, batch_id=batch_id))
    return _sub_batches(domains, options, settings, batch_id=batch_id)


def _task_per_domain(domains: list[str], options: BatchOptions, *, batch_id: UUID) -> Iterator[DomainOutcome]:
    """An ordinary batch: one task run per domain (each visible in the UI, retried by
    Prefect), at most ``options.concurrency`` at a time."""
    scrape_domain = scrape_domain_for(options)
    with ThreadPoolTaskRunner(max_workers=options.concurrency) as runner:
        futures = runner.map(
            scrape_domain, {"domain": domains, "options": unmapped(options), "batch_id": unmapped(batch_id)}
        )
        domain_of = {future.task_run_id: domain for future, domain in zip(futures, domains)}
        for future in as_completed(futures):
            try:
                result = future.result(raise_on_failure=False)
            except Exception as error:  # a crashed or cancelled task run
                result = error
            if not isinstance(result, DomainOutcome):
                result = outcome_from_error(domain_of[future.task_run_id], result)
            yield result


#: Sub-batches per worker a large batch is cut into (bounded below and above in size).
SUB_BATCHES_PER_WORKER = 4
SUB_BATCH_MIN, SUB_BATCH_MAX = 50, 500


def sub_batch_size(total: int, workers: int) -> int:
    return max(SUB_BATCH_MIN, min(SUB_BATCH_MAX, math.ceil(total / (workers * SUB_BATCHES_PER_WORKER))))


def _sub_batches(
    domains: list[str], options: BatchOptions, settings: Settings, *, batch_id: UUID
) -> Iterator[tuple[DomainOutcome, bool]]:
    """A large batch: sub-batch task runs, each scraping its domains with per-domain
    retries and returning every domain's outcome, on threads, on ``settings.workers``
    worker processes or on Dask workers (``_execution``); only ``2 x workers`` are in
    flight, so the Prefect server sees a few dozen task runs, not one per domain."""
    workers = settings.workers
    size = sub_batch_size(len(domains), workers)
    per_task = options.model_copy(update={"concurrency": max(1, math.ceil(options.concurrency / workers))})
    waiting = [domains[start:start + size] for start in range(0, len(domains), size)]
    waiting.reverse()
    in_flight: dict[UUID, tuple[PrefectFuture, list[str]]] = {}
    with _execution(settings, len(domains)) as (runner, pool):
        while waiting or in_flight:
            while waiting and len(in_flight) < 2 * workers:
                chunk = waiting.pop()
                future = runner.submit(scrape_domains, {
                    "domains": chunk, "options": per_task, "batch_id": batch_id, "extra": len(chunk) - 1, "pool": pool,
                })
                in_flight[future.task_run_id] = (future, chunk)
            done = next(as_completed([future for future, _ in in_flight.values()]))
            _, chunk = in_flight.pop(done.task_run_id)
            try:
                result = done.result(raise_on_failure=False)
            except Exception as error:  # a crashed or cancelled task run
                result = error
            if isinstance(result, SubBatchResult) and len(result.outcomes) == len(chunk):
                for position, outcome in enumerate(result.outcomes):
                    yield outcome, position < result.stored
            else:  # the sub-batch itself failed (a dead worker): what it saved stands,
                # every other domain of it says why it has no outcome
                error = result if isinstance(result, BaseException) else RuntimeError(f"sub-batch returned {result!r:.200}")
                saved = stored_outcomes(batch_id, chunk)
                for domain in chunk:
                    if domain in saved:
                        yield saved[domain], True
                    else:
                        yield outcome_from_error(domain, error), False


#: From this many domains, "auto" scrapes sub-batches in worker processes: starting
#: them (a Python each, without Prefect) costs about a second on 2 cores.
PROCESSES_FROM = 500


@contextmanager
def _execution(settings: Settings, total: int) -> Iterator[tuple[TaskRunner, str | None]]:
    """Where sub-batches run: SCRAPERSKY_TASK_RUNNER (auto: worker processes for a
    batch of PROCESSES_FROM domains or more on a machine with several cores, else
    threads), SCRAPERSKY_WORKERS, SCRAPERSKY_DASK_ADDRESS. With worker processes the
    sub-batch task runs are threads of the flow's process, and hand their domains, in
    pieces, to a pool of ``workers`` processes (each its own interpreter: every core)."""
    kind = settings.task_runner
    if kind == "auto":
        kind = "processes" if settings.workers > 1 and total >= PROCESSES_FROM else "threads"
    if kind == "dask":
        with _dask_runner(settings) as runner:
            yield runner, None
        return
    with ThreadPoolTaskRunner(max_workers=settings.workers) as runner:
        if kind == "threads":
            yield runner, None
            return
        processes = ProcessPoolExecutor(
            max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=exit_with_parent, initargs=(os.getpid(),),
        )
        with processes, worker_pool(processes) as pool:
            yield runner, pool


def _dask_runner(settings: Settings) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("SCRAPERSKY_TASK_RUNNER=dask needs prefect-dask: pip install 'scrapersky-batch[dask]'") from None
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1, "processes": True})
