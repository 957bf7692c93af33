"""Scraping a domain: fetch the homepage, extract its metadata, say what happened.

Two tasks: ``scrape-domain``, one task run per domain (Prefect retries it), and
``scrape-domains``, a sub-batch of a large batch with each domain retried inside it.
Both make the same attempts (``scrape_page``) under the same retry policy."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import task_run
from prefect.states import State
from prefect.tasks import exponential_backoff

from scrapersky.batch import BatchOptions, DomainOutcome, DomainStatus, utcnow
from scrapersky.errors import DomainError, TooManyRedirects
from scrapersky.settings import Reach, Settings

from .extract import extract_metadata
from .fetch import client_for, fetch_homepage, fetch_url
from .persist import store_outcomes

__all__ = [
    "scrape_domain",
    "scrape_domain_for",
    "scrape_domains",
    "SubBatchResult",
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
        return scrape_page(domain, options, attempt=attempt)
    except DomainError as error:
        if error.retryable and error.retry_after and attempt <= options.retries:
            # The server said when to come back (429, 503): wait that long, up to a cap,
            # before Prefect's own backoff for the next attempt.
            time.sleep(min(error.retry_after, options.retry_after_max))
        raise


def scrape_page(domain: str, options: BatchOptions, *, attempt: int = 1) -> DomainOutcome:
    """One attempt at a domain: fetch its homepage (meta refreshes followed), extract."""
    started_at = utcnow()
    clock = time.perf_counter()
    try:
        client = client_for(options, _reach())
        page = fetch_homepage(client, domain, options=options)
        metadata = extract_metadata(page.body, page.headers, page.url)
        # A <meta http-equiv=refresh> is a redirect too: followed, within the same limit.
        hops = 0
        while metadata.refresh_url and metadata.refresh_url != page.url:
            hops += 1
            if hops > options.max_redirects:
                raise TooManyRedirects(
                    f"meta refresh chain longer than {options.max_redirects}", final_url=page.url
                )
            page = fetch_url(client, metadata.refresh_url, options=options)
            metadata = extract_metadata(page.body, page.headers, page.url)
    except DomainError as error:
        error.attempts = attempt
        error.started_at = started_at
        error.elapsed_ms = round((time.perf_counter() - clock) * 1000)
        raise
    return DomainOutcome(
        domain=domain,
        status=DomainStatus.COMPLETED,
        attempts=attempt,
        http_status=page.status_code,
        final_url=page.url,
        elapsed_ms=round((time.perf_counter() - clock) * 1000),
        truncated=page.truncated,
        started_at=started_at,
        finished_at=utcnow(),
        metadata=metadata.model_dump(mode="json"),
    )


def _reach() -> Reach:
    """The operator's reach (SCRAPERSKY_CONNECT_TO, SCRAPERSKY_ALLOW_NETWORKS)."""
    return _reach_from(os.environ.get("SCRAPERSKY_CONNECT_TO"), os.environ.get("SCRAPERSKY_ALLOW_NETWORKS"))


@functools.lru_cache(maxsize=8)
def _reach_from(connect_to: str | None, allow_networks: str | None) -> Reach:
    return Settings().reach()


def scrape_with_retries(domain: str, options: BatchOptions) -> DomainOutcome:
    """A domain's outcome after at most ``1 + options.retries`` attempts, with the
    per-domain task's policy (transient errors only, exponential backoff with jitter,
    Retry-After honoured up to a cap), for domains scraped inside a sub-batch task."""
    for attempt in range(1, options.retries + 2):
        try:
            return scrape_page(domain, options, attempt=attempt)
        except DomainError as error:
            if not error.retryable or attempt > options.retries:
                return outcome_from_error(domain, error)
            delay = options.retry_backoff * 2 ** (attempt - 1)
            delay *= random.uniform(0.5, 1.5) if delay else 1
            if error.retry_after:
                delay = max(delay, min(error.retry_after, options.retry_after_max))
            time.sleep(delay)
        except Exception as error:  # a defect: recorded, never retried
            return outcome_from_error(domain, error)
    raise AssertionError("unreachable")


@dataclass
class SubBatchResult:
    """Every domain's outcome, in the order they finished; the first ``stored`` of them
    are in domain_results already (the sub-batch saves as it goes)."""

    outcomes: list[DomainOutcome]
    stored: int


#: Seconds between two saves of a sub-batch's finished outcomes.
SAVE_INTERVAL = 3.0


@task(name="scrape-domains", task_run_name="scrape {domains[0]} and {extra} more", cache_policy=NO_CACHE)
def scrape_domains(domains: list[str], options: BatchOptions, batch_id: UUID, extra: int) -> SubBatchResult:
    """A sub-batch of a large batch: every domain's outcome, each retried on its own.

    ``options.concurrency`` threads fetch at once in this task (one process of a
    process pool, a Dask worker, or a thread of the flow's). Finished outcomes are saved
    every few seconds, so a batch resumed after a kill fetches again only what was in
    flight.
    """
    def scrape(domain: str) -> DomainOutcome:
        return scrape_with_retries(domain, options)

    outcomes: list[DomainOutcome] = []
    stored = 0
    last_save = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, min(options.concurrency, len(domains)))) as pool:
        for future in concurrent.futures.as_completed([pool.submit(scrape, domain) for domain in domains]):
            outcomes.append(future.result())
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


def outcome_from_error(domain: str, error: BaseException) -> DomainOutcome:
    """The failed outcome for a domain whose task ended with ``error``."""
    if isinstance(error, DomainError):
        return DomainOutcome(
            domain=domain,
            status=DomainStatus.FAILED,
            attempts=getattr(error, "attempts", 1),
            http_status=error.http_status,
            final_url=error.final_url,
            elapsed_ms=getattr(error, "elapsed_ms", None),
            error_type=error.error_type,
            error=str(error),
            started_at=getattr(error, "started_at", None),
            finished_at=utcnow(),
        )
    # Not a scraping failure but a defect or a crash: recorded, visible, not hidden.
    return DomainOutcome(
        domain=domain,
        status=DomainStatus.FAILED,
        attempts=1,
        error_type="internal_error",
        error=f"{type(error).__name__}: {error}",
        finished_at=utcnow(),
    )
