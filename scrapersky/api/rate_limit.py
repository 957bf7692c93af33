"""How often a caller may ask: a token bucket per caller, kept in memory.

Every authenticated request takes one request from its caller's bucket (the key is
``Caller.rate_key``: a static token's digest, a JWT's user, or the JWT's digest when it
names no user). A bucket holds ``burst`` requests and refills at ``rate`` per second; a
request that finds it empty is refused with ``RateLimited`` (429, with Retry-After: the
whole seconds until one request is back). The requests of an unknown token never reach
a bucket: they are refused before, by the authenticator.

The default, 50 requests/s with a burst of 100 (``SCRAPERSKY_RATE_LIMIT``,
``SCRAPERSKY_RATE_BURST``; a rate of 0 turns the limit off): the old dashboard polls its
batch every 2 s, and one static token is shared by everyone who opens it, so one token
serves a hundred open dashboards at their pace, and the burst lets them all load at the
same moment. A caller past that is a loop, not a page.

Memory is bounded: a bucket left alone long enough to be full again is the same as no
bucket and is dropped, and at most ``max_callers`` buckets are kept (the caller seen
least recently goes first). Each API process counts on its own: behind N processes a
caller may send N times the rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from scrapersky.errors import RateLimited

from ..settings import Settings

__all__ = ["RateLimit", "MAX_CALLERS"]

#: Buckets kept at most: callers seen within the last refill time, past this many.
MAX_CALLERS = 100_000


@dataclass
class _Bucket:
    requests: float
    seen: float  # when ``requests`` was counted (the clock's seconds)


class RateLimit:
    """Token buckets per caller: ``take(key)`` admits one request or raises RateLimited.

    Thread-safe: FastAPI runs the caller dependency in its thread pool."""

    def __init__(self, rate: float, burst: int, *, max_callers: int = MAX_CALLERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimit:
        return cls(settings.rate_limit, settings.rate_burst)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> None:
        """One request of this caller; RateLimited when its bucket is empty."""
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            self._forget_idle(now)
            bucket = self._buckets.pop(key, None)
            requests = self.burst if bucket is None else min(self.burst,
                                                             bucket.requests + (now - bucket.seen) * self.rate)
            admitted = requests >= 1
            self._buckets[key] = _Bucket(requests - 1 if admitted else requests, now)
            while len(self._buckets) > self._max_callers:
                self._buckets.popitem(last=False)
        if not admitted:
            retry_after = max(1, math.ceil((1 - requests) / self.rate))
            raise RateLimited(f"more than {self.rate:g} requests/s (bursts of {self.burst}) with this token:"
                              f" try again in {retry_after} s", retry_after=retry_after)

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets full again (seen longer ago than a whole refill): oldest first."""
        refilled = now - self.burst / self.rate
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if oldest.seen > refilled:
                return
            self._buckets.popitem(last=False)
