"""Scraping a domain: fetch the homepage, extract its metadata, say what happened.

Two tasks: ``scrape-domain``, one task run per domain (Prefect retries it), and
``scrape-domains``, a sub-batch of a large batch with each domain retried inside it.
Both make the same attempts (``scrape_page``) under the same retry policy."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID, uuid4

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import task_run
from prefect.states import State
from prefect.tasks import exponential_backoff

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.errors import DomainError
from scrapersky.settings import Settings
from scrapersky.web import Fetcher

from .attempt import outcome_from_error, scrape_many, scrape_page, scrape_with_retries
from .persist import store_outcomes

__all__ = [
    "scrape_domain",
    "scrape_domain_for",
    "scrape_domains",
    "SubBatchResult",
    "worker_pool",
    "scrape_page",
    "scrape_with_retries",
    "outcome_from_error",
]


def _is_transient(task: Task, run: TaskRun, state: State) -> bool:
    """Retry only what may succeed next time; the decision is the error class's."""
    try:
        state.result()
    except DomainError as error:
        return error.retryable
    except Exception:
        return False  # a bug does not get better by trying again
    return False


def _batch_and_domain(context: object, parameters: dict) -> str:
    return f"scrapersky-{parameters['batch_id']}-{parameters['domain']}"


@task(
    name="scrape-domain",
    task_run_name="scrape {domain}",
    retry_condition_fn=_is_transient,
    # A completed domain's outcome is kept (Prefect result storage) under batch + domain:
    # a run of the same batch that starts again after a kill does not fetch it again,
    # even when the kill came before the next progress save.
    cache_key_fn=_batch_and_domain,
    persist_result=True,
    cache_expiration=timedelta(days=7),
)
def scrape_domain(domain: str, options: BatchOptions, batch_id: UUID) -> DomainOutcome:
    """One domain's outcome; raises a DomainError (with timings) when it fails."""
    attempt = task_run.run_count
    try:
        # The operator's reach, read here for now (a Fetcher per task run: one domain).
        with Fetcher(options, Settings().reach()) as fetcher:
            return scrape_page(domain, options, fetcher=fetcher, attempt=attempt)
    except DomainError as error:
        if error.retryable and error.retry_after and attempt <= options.retries:
            # The server said when to come back (429, 503): wait that long, up to a cap,
            # before Prefect's own backoff for the next attempt.
            time.sleep(min(error.retry_after, options.retry_after_max))
        raise


@dataclass
class SubBatchResult:
    """Every domain's outcome, in the order they finished; the first ``stored`` of them
    are in domain_results already (the sub-batch saves as it goes)."""

    outcomes: list[DomainOutcome]
    stored: int


#: Seconds between two saves of a sub-batch's finished outcomes.
SAVE_INTERVAL = 3.0


#: Worker-process pools of running batches, by key. A sub-batch task (a thread of the
#: flow's process) hands its domains to one; the pool is not a task parameter, which
#: Prefect would record.
_POOLS: dict[str, concurrent.futures.Executor] = {}


@contextmanager
def worker_pool(pool: concurrent.futures.Executor) -> Iterator[str]:
    """Make ``pool`` available to sub-batch tasks under the key this yields."""
    key = uuid4().hex
    _POOLS[key] = pool
    try:
        yield key
    finally:
        del _POOLS[key]


@task(name="scrape-domains", task_run_name="scrape {domains[0]} and {extra} more", cache_policy=NO_CACHE)
def scrape_domains(
    domains: list[str], options: BatchOptions, batch_id: UUID, extra: int, pool: str | None = None
) -> SubBatchResult:
    """A sub-batch of a large batch: every domain's outcome, each retried on its own.

    ``options.concurrency`` fetches at once: threads of this task, or, given a worker
    pool, threads of one worker process per piece of the sub-batch. Finished outcomes
    are saved every few seconds, so a batch resumed after a kill fetches again only
    what was in flight.
    """
    executor = _POOLS.get(pool) if pool else None
    reach = Settings().reach()  # the operator's, read here for now
    outcomes: list[DomainOutcome] = []
    stored = 0
    last_save = time.monotonic()
    with contextlib.ExitStack() as stack:
        if executor is None:
            fetcher = stack.enter_context(Fetcher(options, reach))  # closed after the threads are done
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, min(options.concurrency, len(domains)))))
            pieces = [executor.submit(scrape_with_retries, domain, options, fetcher=fetcher) for domain in domains]
        else:
            size = 4 * options.concurrency  # a worker process's share, a few rounds of its threads
            pieces = [executor.submit(scrape_many, domains[start:start + size], options, reach)
                      for start in range(0, len(domains), size)]
        stack.callback(lambda: [piece.cancel() for piece in pieces])  # after a failure
        for piece in concurrent.futures.as_completed(pieces):
            result = piece.result()
            outcomes.extend(result if isinstance(result, list) else [result])
            if time.monotonic() - last_save >= SAVE_INTERVAL:
                stored += store_outcomes(batch_id, outcomes[stored:])
                last_save = time.monotonic()
    stored += store_outcomes(batch_id, outcomes[stored:])
    return SubBatchResult(outcomes=outcomes, stored=stored)


def scrape_domain_for(options: BatchOptions) -> Task:
    """The task with this batch's retry policy: exponential backoff with jitter."""
    return scrape_domain.with_options(
        retries=options.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=options.retry_backoff),
        retry_jitter_factor=0.5 if options.retry_backoff else None,
    )


