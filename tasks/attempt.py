"""One domain, without Prefect: an attempt (fetch the homepage, follow meta refreshes,
extract), the retry loop around it, and the failed outcome of an error.

Kept free of Prefect so a worker process that scrapes a large batch's domains starts
in under a second (a Python with Prefect imported takes about 2.5 s).
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from scrapersky.batch import BatchOptions, DomainOutcome, DomainStatus, utcnow
from scrapersky.errors import DomainError, TooManyRedirects
from scrapersky.metadata.extract import extract_metadata
from scrapersky.web import Fetcher, Reach

__all__ = ["scrape_page", "scrape_with_retries", "scrape_many", "outcome_from_error", "exit_with_parent"]


def scrape_page(domain: str, options: BatchOptions, *, fetcher: Fetcher, attempt: int = 1) -> DomainOutcome:
    """One attempt at a domain: fetch its homepage (meta refreshes followed), extract."""
    started_at = utcnow()
    clock = time.perf_counter()
    try:
        page = fetcher.homepage(domain)
        metadata = extract_metadata(page.body, page.headers, page.url)
        # A <meta http-equiv=refresh> is a redirect too: followed, within the same limit.
        hops = 0
        while metadata.refresh_url and metadata.refresh_url != page.url:
            hops += 1
            if hops > options.max_redirects:
                raise TooManyRedirects(
                    f"meta refresh chain longer than {options.max_redirects}", final_url=page.url
                )
            page = fetcher.follow(metadata.refresh_url)
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


def scrape_with_retries(domain: str, options: BatchOptions, *, fetcher: Fetcher) -> DomainOutcome:
    """A domain's outcome after at most ``1 + options.retries`` attempts, with the
    per-domain task's policy (transient errors only, exponential backoff with jitter,
    Retry-After honoured up to a cap), for domains scraped inside a sub-batch task."""
    for attempt in range(1, options.retries + 2):
        try:
            return scrape_page(domain, options, fetcher=fetcher, attempt=attempt)
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


def scrape_many(domains: list[str], options: BatchOptions, reach: Reach) -> list[DomainOutcome]:
    """Every domain's outcome, ``options.concurrency`` at a time (in a worker process),
    through one Fetcher for ``reach`` (the operator's, handed over by the flow)."""
    with Fetcher(options, reach) as fetcher, ThreadPoolExecutor(
        max_workers=max(1, min(options.concurrency, len(domains)))
    ) as pool:
        return list(pool.map(lambda domain: scrape_with_retries(domain, options, fetcher=fetcher), domains))


def exit_with_parent(parent: int) -> None:
    """In a worker process: exit when the flow's process is gone (a SIGKILL leaves a
    pool's workers orphaned, idle or still fetching, for good)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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
