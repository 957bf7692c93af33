"""One domain, without Prefect: an attempt (fetch the homepage, follow meta refreshes,
extract), the retry loop around it, and the failed outcome of an error.

Kept free of Prefect so a worker process that scrapes a large batch's domains starts
in under a second (a Python with Prefect imported takes about 2.5 s). A worker
process gets what it needs once, when it starts (``start_worker``): the
batch's options and the operator's reach; it reads no setting itself.
"""

from __future__ import annotations

import os
import random
import threading
import time

from scrapersky.batch import BatchOptions, DomainOutcome, DomainStatus, utcnow
from scrapersky.errors import DomainError
from scrapersky.metadata.extract import extract_metadata
from scrapersky.retry import retry_delay
from scrapersky.web.fetch import Fetcher
from scrapersky.web.guard import Reach

__all__ = ["scrape_page", "scrape_with_retries", "outcome_from_error", "start_worker", "jitter"]


#: Extractions at once in one process. Extraction is CPU work under the GIL: more threads
#: at it finish no sooner and only add their parse trees (several times a page's size)
#: to memory, so a process's fetch threads take turns at it (one process a core).
EXTRACTIONS_AT_ONCE = 1
_extracting = threading.BoundedSemaphore(EXTRACTIONS_AT_ONCE)
#: After a page this large, the memory its parse freed is handed back to the system.
_TRIM_AFTER_BYTES = 1_000_000


def _extract(page):
    with _extracting:
        metadata = extract_metadata(page.body, page.headers, page.url)
        if len(page.body) >= _TRIM_AFTER_BYTES and _libc is not None:
            _libc.malloc_trim(0)
        return metadata


def scrape_page(domain: str, fetcher: Fetcher, *, attempt: int = 1) -> DomainOutcome:
    """One attempt at a domain: fetch its homepage (meta refreshes followed), extract."""
    started_at = utcnow()
    clock = time.perf_counter()
    try:
        fetch = fetcher.start(domain)  # one deadline, one redirect budget for the chain
        page = fetch.homepage()
        metadata = _extract(page)
        # A <meta http-equiv=refresh> is a redirect too: followed within the same fetch
        # (fetch.follow raises TooManyRedirects when the budget is spent).
        while metadata.refresh_url and metadata.refresh_url != page.url:
            page = fetch.follow(metadata.refresh_url)
            metadata = _extract(page)
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


def jitter() -> float:
    """The random factor of a retry's backoff (0.5-1.5)."""
    return random.uniform(0.5, 1.5)


def scrape_with_retries(domain: str, fetcher: Fetcher) -> DomainOutcome:
    """A domain's outcome after at most ``1 + retries`` attempts, waiting between them
    as ``scrapersky.retry`` says (the per-domain task follows the same policy)."""
    attempt = 1
    while True:
        try:
            return scrape_page(domain, fetcher, attempt=attempt)
        except Exception as error:  # a DomainError is recorded; a defect too, never retried
            delay = retry_delay(error, attempt, fetcher.options, jitter=jitter())
            if delay is None:
                return outcome_from_error(domain, error)
            time.sleep(delay)
            attempt += 1


def start_worker(parent: int, options: BatchOptions, reach: Reach) -> Fetcher:
    """A worker process's start: few malloc arenas, an exit when the flow's process is
    gone (a SIGKILL leaves a pool's workers orphaned, idle or still fetching, for good),
    and its fetcher for the batch."""
    _few_malloc_arenas()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    return Fetcher(options, reach)


def _glibc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both there: glibc
        return libc
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None


_libc = _glibc()


def _few_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core),
    and freed memory stays in them: a worker's fetch threads held 3x the memory they use
    (the soak test: 760-920 MB a worker process, 272-286 MB with two arenas). Two serve
    them as well (MALLOC_ARENA_MAX, set from inside the process)."""
    if _libc is not None:
        _libc.mallopt(-8, arenas)  # M_ARENA_MAX


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
