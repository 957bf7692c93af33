"""Worker processes that keep every fetch slot busy: a large batch's domains flow
through them continuously, without Prefect.

``WorkerPool(workers, options, reach)`` starts ``workers`` processes (``spawn``), each
with ``options.concurrency`` fetch threads and one ``Fetcher``; they all pull domains
from one inbox, so a process that has a free slot takes the next domain whichever
sub-batch it belongs to, and a slow host holds one slot, never a whole piece of the
batch. ``WorkerPool.scrape(domains, deliver)`` (any number of callers, threads of the
flow's process: the sub-batch task runs) puts its domains in the inbox and returns
their outcomes once all are known, handing each to ``deliver`` as soon as it arrives.

Inside a worker (``serve``), a retry's backoff does not hold a fetch slot: the domain
waits in a heap and goes to a free thread once its time is up and no fresh domain is
waiting in the inbox (``scrapersky.retry`` decides whether and how long, as
everywhere). A worker takes a domain from the inbox only when one of its threads is
about to be free, so what it holds is bounded (its threads, its retries waiting, one
more).

A worker process that dies breaks the pool, as a ``ProcessPoolExecutor`` breaks:
every caller still waiting gets ``BrokenProcessPool`` (its outcomes delivered so far
stay delivered), the other workers are stopped, and the caller runs what is left on a
new pool. Workers exit on their own when the flow's process is gone.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.retry import retry_delay
from scrapersky.web.fetch import Fetcher
from scrapersky.web.guard import Reach

from .attempt import jitter, outcome_from_error, scrape_page, start_worker

__all__ = ["WorkerPool", "serve"]

#: How often the flow's side looks whether a worker process is still alive (seconds).
_WATCH_INTERVAL = 0.2
#: How often a worker with no fresh domain looks whether a retry is due (seconds).
_RETRY_POLL = 0.05


# --------------------------------------------------------------------------- a worker


class _Retries:
    """Domains waiting for their next attempt, the earliest due first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, tuple[str, int]]] = []
        self._lock = threading.Lock()
        self._count = itertools.count()

    def later(self, delay: float, item: tuple[str, int]) -> None:
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._count), item))

    def due(self) -> tuple[str, int] | None:
        """The next retry whose time is up, if any (taken out)."""
        with self._lock:
            if self._heap and self._heap[0][0] <= time.monotonic():
                return heapq.heappop(self._heap)[2]
        return None

    def wait(self) -> float:
        """How long to wait for a fresh domain before looking here again: none while a
        retry is due, else until the next one is, at most ``_RETRY_POLL``."""
        with self._lock:
            if not self._heap:
                return _RETRY_POLL
            return min(_RETRY_POLL, max(0.0, self._heap[0][0] - time.monotonic()))


def _attempt(fetcher: Fetcher, domain: str, attempt: int, outbox: Any, retries: _Retries) -> None:
    """One attempt at a domain: its outcome to the outbox, or its retry to the waiting."""
    try:
        outcome = scrape_page(domain, fetcher, attempt=attempt)
    except Exception as error:  # a DomainError is recorded; a defect too, never retried
        delay = retry_delay(error, attempt, fetcher.options, jitter=jitter())
        if delay is not None:
            retries.later(delay, (domain, attempt + 1))
            return
        outcome = outcome_from_error(domain, error)
    outbox.put(outcome)


def serve(parent: int, options: BatchOptions, reach: Reach, inbox: Any, outbox: Any) -> None:
    """A worker process: ``options.concurrency`` threads fetch the domains of the inbox
    (a None ends it) and put each outcome in the outbox.

    A free thread gets a fresh domain from the inbox while there is one, and a retry
    that is due only when there is none: a retry goes behind the domains not tried yet
    (as Scrapy's retries, at a lower priority). So the hosts that hang are all found
    early, and the batch's tail - the last of them, hanging through every attempt - is
    as short as it can be (a 2,000-host simulation of the realistic web: 18.3 s against
    20.5 s with retries first; README, "Scale")."""
    fetcher = start_worker(parent, options, reach)  # few malloc arenas, exit with the parent
    # The next domain for a free thread: put there only when one is about to be free.
    ready: queue.Queue[tuple[str, int] | None] = queue.Queue(maxsize=1)
    retries = _Retries()

    def fetch() -> None:
        while (item := ready.get()) is not None:
            _attempt(fetcher, item[0], item[1], outbox, retries)

    threads = [threading.Thread(target=fetch, name=f"fetch-{k}", daemon=True) for k in range(options.concurrency)]
    for thread in threads:
        thread.start()
    while True:
        try:
            domain = inbox.get(timeout=retries.wait())
        except queue.Empty:
            if (item := retries.due()) is not None:
                ready.put(item)
            continue
        if domain is None:
            os._exit(0)  # told to stop: nothing in flight is wanted any more
        ready.put((domain, 1))


# --------------------------------------------------------------------------- the pool


@dataclass
class _Job:
    """One caller's domains: what is still to come, and where each outcome goes."""

    deliver: Callable[[DomainOutcome], None]
    left: int
    outcomes: list[DomainOutcome] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@contextmanager
def _main_not_imported() -> Iterator[None]:
    """Processes started inside do not import this process's ``__main__``: ``spawn`` runs
    it again in every child, and under a Prefect worker it is ``prefect.engine`` - all of
    Prefect, about 80 MB in each worker process that needs none of it."""
    main = sys.modules["__main__"]
    spec, file = main.__dict__.get("__spec__"), main.__dict__.get("__file__")
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__spec__ = spec
        if file is not None:
            main.__file__ = file


class WorkerPool:
    """``workers`` worker processes fed from one inbox (see the module's docstring).
    Close it (or use it as a context manager) to stop them."""

    def __init__(self, workers: int, options: BatchOptions, reach: Reach) -> None:
        context = multiprocessing.get_context("spawn")
        self._inbox = context.Queue()
        self._outbox = context.Queue()
        self._jobs: dict[str, _Job] = {}  # a batch's domains are distinct
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.broken: BaseException | None = None
        self.processes = [
            context.Process(target=serve, args=(os.getpid(), options, reach, self._inbox, self._outbox),
                            name=f"scrapersky-worker-{k}", daemon=True)
            for k in range(workers)
        ]
        with _main_not_imported():
            for process in self.processes:
                process.start()
        self._reader = threading.Thread(target=self._read, name="worker-outcomes", daemon=True)
        self._reader.start()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def in_flight(self) -> int:
        """Domains handed to the workers whose outcome is not known yet."""
        with self._lock:
            return len(self._jobs)

    def scrape(self, domains: list[str], deliver: Callable[[DomainOutcome], None]) -> list[DomainOutcome]:
        """Every domain's outcome, each handed to ``deliver`` as soon as it is known;
        ``BrokenProcessPool`` when a worker process died first."""
        job = _Job(deliver=deliver, left=len(domains))
        with self._lock:
            if self.broken is not None:
                raise BrokenProcessPool(f"the worker pool is broken: {self.broken}")
            for domain in domains:
                self._jobs[domain] = job
        if not domains:
            job.done.set()
        for domain in domains:
            self._inbox.put(domain)
        job.done.wait()
        if job.left:
            raise BrokenProcessPool(f"a worker process died: {self.broken}")
        return job.outcomes

    def _read(self) -> None:
        """Outcomes to their callers; a worker's death breaks the pool."""
        watched = time.monotonic()
        while not self._closed.is_set():
            if time.monotonic() - watched >= _WATCH_INTERVAL:  # outcomes flowing or not
                watched = time.monotonic()
                dead = [p for p in self.processes if not p.is_alive()]
                if dead and not self._closed.is_set():
                    self._break(f"{dead[0].name} exited with {dead[0].exitcode}")
                    return
            try:
                outcome = self._outbox.get(timeout=_WATCH_INTERVAL)
            except queue.Empty:
                continue
            except (EOFError, OSError) as error:
                self._break(f"{type(error).__name__}: {error}")
                return
            if outcome is None:  # close() wakes the reader up: it is done
                continue
            with self._lock:
                job = self._jobs.pop(outcome.domain, None)
            if job is None:
                continue
            job.outcomes.append(outcome)
            try:
                job.deliver(outcome)
            finally:
                job.left -= 1  # only this thread counts down
                if not job.left:
                    job.done.set()

    def _break(self, reason: str) -> None:
        with self._lock:
            self.broken = RuntimeError(reason)
            waiting = list({id(job): job for job in self._jobs.values()}.values())
            self._jobs = {}
        self._stop_processes()
        for job in waiting:
            job.done.set()

    def _stop_processes(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
        for process in self.processes:
            process.join(timeout=5)

    def close(self) -> None:
        """Stop the workers (what they have in flight is dropped) and release the queues."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._outbox.put(None)  # the reader stops now, not at its next look
        self._stop_processes()
        self._reader.join(timeout=5)
        for channel in (self._inbox, self._outbox):
            channel.close()
            channel.cancel_join_thread()
        with self._lock:
            waiting = list({id(job): job for job in self._jobs.values()}.values())
            self._jobs = {}
            self.broken = self.broken or RuntimeError("the worker pool was closed")
        for job in waiting:
            job.done.set()
