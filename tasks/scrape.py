"""Scraping as Prefect tasks: fetch the homepage, extract its metadata, say what happened.

Two tasks make the same attempts (``tasks.attempt``) under the same retry policy
(``scrapersky.retry``): ``scrape-domain``, one task run per domain of an ordinary
batch (Prefect runs the attempts, the policy decides and waits), and
``scrape-domains``, a sub-batch of a large batch, each domain retried inside it.
Neither writes to the database: outcomes go back to the flow, which records them.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from uuid import UUID

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import task_run
from prefect.states import State

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.retry import is_retryable, retry_delay
from scrapersky.web import Fetcher, Reach

from .attempt import jitter, outcome_from_error, scrape_page, scrape_with_retries
from .workers import WorkerPool

__all__ = ["scrape_domain", "scrape_domain_for", "scrape_domains", "outcome_from_error"]

OutcomeSink = Callable[[DomainOutcome], None]


def _is_transient(task: Task, run: TaskRun, state: State) -> bool:
    """Prefect asks whether to run the task again: the retry policy answers."""
    try:
        state.result()
    except Exception as error:
        return is_retryable(error)
    return False


def _batch_and_domain(context: object, parameters: dict) -> str:
    return f"scrapersky-{parameters['batch_id']}-{parameters['domain']}"


@task(
    name="scrape-domain",
    task_run_name="scrape {domain}",
    retry_condition_fn=_is_transient,
    retry_delay_seconds=0,  # the policy waits (below): Retry-After is the error's to give
    # A completed domain's outcome is kept (Prefect result storage) under batch + domain:
    # a run of the same batch that starts again after a kill does not fetch it again,
    # even when the kill came before the next progress save.
    cache_key_fn=_batch_and_domain,
    persist_result=True,
    cache_expiration=timedelta(days=7),
)
def scrape_domain(domain: str, fetcher: Fetcher, batch_id: UUID) -> DomainOutcome:
    """One domain's outcome; raises a DomainError (with timings) when it fails."""
    attempt = task_run.run_count
    try:
        return scrape_page(domain, fetcher, attempt=attempt)
    except Exception as error:
        delay = retry_delay(error, attempt, fetcher.options, jitter=jitter())
        if delay:
            time.sleep(delay)  # before Prefect's next attempt
        raise


def scrape_domain_for(options: BatchOptions) -> Task:
    """The per-domain task with this batch's number of attempts."""
    return scrape_domain.with_options(retries=options.retries)


@task(name="scrape-domains", task_run_name="scrape {domains[0]} and {extra} more", cache_policy=NO_CACHE)
def scrape_domains(
    domains: list[str],
    options: BatchOptions,
    reach: Reach,
    extra: int,
    pool: WorkerPool | None = None,
    sink: OutcomeSink | None = None,
) -> list[DomainOutcome]:
    """A sub-batch of a large batch: every domain's outcome, each retried on its own.

    ``options.concurrency`` fetches at once: threads of this task, or, given a pool of
    worker processes (``tasks.workers``), the pool's fetch threads, which every
    sub-batch in flight shares. ``sink`` (the flow's progress recorder, in the flow's
    process) hears of each outcome as soon as it is known; all of them are returned.
    """
    outcomes: list[DomainOutcome] = []

    def deliver(found: list[DomainOutcome]) -> None:
        outcomes.extend(found)
        for outcome in found:
            if sink is not None:
                sink(outcome)

    if pool is None:
        with Fetcher(options, reach) as fetcher, ThreadPoolExecutor(
            max_workers=max(1, min(options.concurrency, len(domains)))
        ) as threads:
            pieces = [threads.submit(scrape_with_retries, domain, fetcher) for domain in domains]
            for piece in concurrent.futures.as_completed(pieces):
                deliver([piece.result()])
        return outcomes
    return pool.scrape(domains, deliver=sink if sink is not None else (lambda outcome: None))
