"""The per-domain task: fetch the homepage, extract its metadata, say what happened."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import UUID

from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import task_run
from prefect.states import State
from prefect.tasks import exponential_backoff

from scrapersky.batch import BatchOptions, DomainOutcome, DomainStatus, utcnow
from scrapersky.errors import DomainError, TooManyRedirects
from scrapersky.settings import Settings

from .extract import extract_metadata
from .fetch import client_for, fetch_homepage, fetch_url

__all__ = ["scrape_domain", "scrape_domain_for", "outcome_from_error"]


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
    started_at = utcnow()
    clock = time.perf_counter()
    try:
        client = client_for(options, Settings().reach())
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
        error.attempts = task_run.run_count
        error.started_at = started_at
        error.elapsed_ms = round((time.perf_counter() - clock) * 1000)
        if error.retryable and error.retry_after and task_run.run_count <= options.retries:
            # The server said when to come back (429, 503): wait that long, up to a cap,
            # before Prefect's own backoff for the next attempt.
            time.sleep(min(error.retry_after, options.retry_after_max))
        raise
    return DomainOutcome(
        domain=domain,
        status=DomainStatus.COMPLETED,
        attempts=task_run.run_count,
        http_status=page.status_code,
        final_url=page.url,
        elapsed_ms=round((time.perf_counter() - clock) * 1000),
        truncated=page.truncated,
        started_at=started_at,
        finished_at=utcnow(),
        metadata=metadata.model_dump(mode="json"),
    )


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
