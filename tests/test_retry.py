"""The retry policy, as a table: (error, attempt, options, jitter) -> delay or none."""

from __future__ import annotations

import pytest

from scrapersky.batch import BatchOptions
from scrapersky.errors import ConnectFailed, DNSFailed, FetchTimeout, HTTPStatusFailed
from scrapersky.retry import is_retryable, retry_delay

OPTIONS = BatchOptions(retries=2, retry_backoff=2.0, retry_after_max=30.0)


def http(status: int, retry_after: float | None = None) -> HTTPStatusFailed:
    return HTTPStatusFailed(f"HTTP {status}", http_status=status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "attempt", "options", "jitter", "delay"),
    [
        (ConnectFailed("refused"), 1, OPTIONS, 1.0, 2.0),  # first retry: the backoff
        (ConnectFailed("refused"), 2, OPTIONS, 1.0, 4.0),  # then it doubles
        (ConnectFailed("refused"), 3, OPTIONS, 1.0, None),  # retries used up
        (FetchTimeout("slow"), 1, OPTIONS, 0.5, 1.0),  # jitter scales the backoff
        (FetchTimeout("slow"), 2, OPTIONS, 1.5, 6.0),
        (http(503), 1, OPTIONS, 1.0, 2.0),
        (http(429, retry_after=10.0), 1, OPTIONS, 1.0, 10.0),  # the server's wish wins ...
        (http(429, retry_after=1.0), 2, OPTIONS, 1.0, 4.0),  # ... unless the backoff is longer
        (http(429, retry_after=3600.0), 1, OPTIONS, 1.0, 30.0),  # ... capped
        (http(429, retry_after=3600.0), 1, OPTIONS.model_copy(update={"retry_after_max": 0.0}), 1.0, 2.0),
        (http(404), 1, OPTIONS, 1.0, None),  # permanent
        (DNSFailed("no such name"), 1, OPTIONS, 1.0, None),
        (RuntimeError("a defect"), 1, OPTIONS, 1.0, None),  # never retried
        (ConnectFailed("refused"), 1, OPTIONS.model_copy(update={"retries": 0}), 1.0, None),
        (ConnectFailed("refused"), 1, OPTIONS.model_copy(update={"retry_backoff": 0.0}), 1.0, 0.0),
    ],
)
def test_retry_delay(error: BaseException, attempt: int, options: BatchOptions, jitter: float, delay: float | None) -> None:
    assert retry_delay(error, attempt, options, jitter=jitter) == delay


def test_only_transient_domain_errors_are_retryable() -> None:
    assert is_retryable(http(500)) and is_retryable(http(408)) and is_retryable(ConnectFailed("x"))
    assert not is_retryable(http(403)) and not is_retryable(ValueError("x"))
