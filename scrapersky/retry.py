"""The retry policy: one pure function, used by the per-domain task and by sub-batches.

Only what may succeed next time is tried again (the error class decides:
``DomainError.retryable``); a defect never is. The delay doubles from
``retry_backoff`` with jitter, and a server that said when to come back
(``Retry-After`` on a 429 or 503) is waited for, up to ``retry_after_max``.
"""

from __future__ import annotations

from .batch import BatchOptions
from .errors import DomainError

__all__ = ["is_retryable", "retry_delay"]


def is_retryable(error: BaseException) -> bool:
    """Whether another attempt may succeed: a transient scraping failure, not a defect."""
    return isinstance(error, DomainError) and error.retryable


def retry_delay(error: BaseException, attempt: int, options: BatchOptions, *, jitter: float = 1.0) -> float | None:
    """Seconds to wait before the attempt after ``attempt`` (1 is the first), or None
    when there is none: the error is final, or ``options.retries`` are used up.

    ``jitter`` scales the backoff (callers draw it from 0.5-1.5); a Retry-After is
    honoured as the server gave it, capped at ``options.retry_after_max``.
    """
    if not is_retryable(error) or attempt > options.retries:
        return None
    delay = options.retry_backoff * 2 ** (attempt - 1) * jitter
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        delay = max(delay, min(retry_after, options.retry_after_max))
    return delay
