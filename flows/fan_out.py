"""Fanning a batch out: a task run per domain for an ordinary batch, sub-batch task
runs for a large one, on threads, worker processes or a Dask cluster.

Up to ``SCRAPERSKY_TASK_PER_DOMAIN_MAX`` (250) domains, each domain is a task run of
its own: visible in the UI, retried by Prefect. Above, the batch is cut into
sub-batches (``SUB_BATCHES_PER_WORKER`` per worker, 50 to 500 domains), each one task
run that retries every domain on its own. On threads at most ``2 x workers`` are in
flight; on worker processes, as many as keep ``IN_FLIGHT_PER_SLOT`` domains a fetch
slot handed out (and at least ``2 x workers``), so a sub-batch that waits for its
slowest hosts never leaves the others' slots idle. A
per-domain task run costs the flow and the Prefect server tens of milliseconds of CPU
each: 10,000 of them overload a local server, 20 sub-batches do not (README, "Scale").

Either way the flow hears of every outcome as soon as it is known, as plain data
(failures included: a task never receives the futures of failed runs), and is the
only one to record it.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from types import TracebackType
from uuid import UUID

from prefect import unmapped
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.errors import ConfigError
from scrapersky.settings import Settings
from scrapersky.tasks.scrape import outcome_from_error, scrape_domain_for, scrape_domains
from scrapersky.tasks.workers import WorkerPool
from scrapersky.web import Fetcher

__all__ = ["FanOut", "SubBatchExecutor", "sub_batch_size", "PROCESSES_FROM"]


class FanOut:
    """Where a batch's domains run: opened before the batch is, so a large batch's
    worker processes start while its row is written (about half a second each on 2
    cores, off the batch's path), then ``outcomes(domains)`` - every domain's outcome,
    as it is known.

    ``expected``: the batch's planned domains. What runs them is chosen by how many
    are left when the batch is open (a resumed batch may have fewer): a task run per
    domain up to ``SCRAPERSKY_TASK_PER_DOMAIN_MAX``, else sub-batches.
    """

    def __init__(self, options: BatchOptions, settings: Settings, *, expected: int, batch_id: UUID) -> None:
        self.options, self.settings, self.expected, self.batch_id = options, settings, expected, batch_id
        self._stack = ExitStack()
        self._executor: SubBatchExecutor | None = None

    def __enter__(self) -> FanOut:
        if self.expected > self.settings.task_per_domain_max:
            self._executor = self._stack.enter_context(
                SubBatchExecutor(self.settings, self.options, total=self.expected))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def outcomes(self, domains: list[str]) -> Iterator[DomainOutcome]:
        """Every domain's outcome, as it is known."""
        if self._executor is None or len(domains) <= self.settings.task_per_domain_max:
            with Fetcher(self.options, self.settings.reach()) as fetcher:
                yield from _task_per_domain(domains, fetcher, batch_id=self.batch_id)
            return
        yield from self._executor.outcomes(domains)


def _task_per_domain(domains: list[str], fetcher: Fetcher, *, batch_id: UUID) -> Iterator[DomainOutcome]:
    """An ordinary batch: one task run per domain (each visible in the UI, retried by
    Prefect), at most ``concurrency`` at a time, all sharing the batch's fetcher."""
    scrape_domain = scrape_domain_for(fetcher.options)
    with ThreadPoolTaskRunner(max_workers=fetcher.options.concurrency) as runner:
        futures = runner.map(
            scrape_domain, {"domain": domains, "fetcher": unmapped(fetcher), "batch_id": unmapped(batch_id)}
        )
        domain_of = {future.task_run_id: domain for future, domain in zip(futures, domains)}
        for future in as_completed(futures):
            yield _outcome_of(future, domain_of[future.task_run_id])


def _outcome_of(future: PrefectFuture, domain: str) -> DomainOutcome:
    try:
        result = future.result(raise_on_failure=False)
    except Exception as error:  # a crashed or cancelled task run
        result = error
    if isinstance(result, DomainOutcome):
        return result
    return outcome_from_error(domain, result if isinstance(result, BaseException) else RuntimeError(repr(result)))


#: Sub-batches per worker a large batch is cut into (bounded below and above in size).
SUB_BATCHES_PER_WORKER = 4
SUB_BATCH_MIN, SUB_BATCH_MAX = 50, 500
#: Runs of one sub-batch at most, when its task run dies (its domains without an outcome only).
SUB_BATCH_ATTEMPTS = 3
#: On worker processes, sub-batches are started while fewer than this many domains a
#: fetch slot are in flight (queued, fetching or waiting for a retry): the slots never
#: run dry while the last hosts of a sub-batch hang, and what waits stays bounded.
IN_FLIGHT_PER_SLOT = 3
#: Sub-batch task runs in flight at most (each a thread of the flow that waits).
SUB_BATCHES_IN_FLIGHT_MAX = 64
#: From this many domains, "auto" scrapes sub-batches in worker processes: starting
#: them (a Python each, without Prefect) costs about a second on 2 cores.
PROCESSES_FROM = 500


def sub_batch_size(total: int, workers: int) -> int:
    return max(SUB_BATCH_MIN, min(SUB_BATCH_MAX, math.ceil(total / (workers * SUB_BATCHES_PER_WORKER))))


class SubBatchExecutor:
    """Runs a large batch as sub-batch task runs, and owns what they run on.

    Where: ``SCRAPERSKY_TASK_RUNNER`` (auto: worker processes for a batch of
    PROCESSES_FROM domains or more on a machine with several cores, else threads),
    ``SCRAPERSKY_WORKERS``, ``SCRAPERSKY_DASK_ADDRESS``. With worker processes, the
    sub-batch task runs are threads of the flow's process that hand their domains to
    one ``WorkerPool`` of ``workers`` processes (each its own interpreter: every core),
    started with the batch's options and the operator's reach, whose fetch threads
    take the next domain of any sub-batch as soon as one is free.
    """

    def __init__(self, settings: Settings, options: BatchOptions, *, total: int) -> None:
        self.settings = settings
        self.workers = settings.workers
        self.kind = settings.task_runner
        if self.kind == "auto":
            self.kind = "processes" if self.workers > 1 and total >= PROCESSES_FROM else "threads"
        # The batch's concurrency, shared between the sub-batches in flight.
        self.options = options.model_copy(update={"concurrency": max(1, math.ceil(options.concurrency / self.workers))})
        self.reach = settings.reach()
        self._stack = ExitStack()
        self.runner: TaskRunner | None = None
        self.pool: WorkerPool | None = None
        self.slots = self.options.concurrency * self.workers

    def __enter__(self) -> SubBatchExecutor:
        with ExitStack() as stack:
            if self.kind == "dask":
                self.runner = stack.enter_context(_dask_runner(self.settings))
            else:
                threads = SUB_BATCHES_IN_FLIGHT_MAX if self.kind == "processes" else self.workers
                self.runner = stack.enter_context(ThreadPoolTaskRunner(max_workers=threads))
            self._stack = stack.pop_all()
        if self.kind == "processes":
            self.pool = self._start_pool()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self._stack.close()

    def outcomes(self, domains: list[str]) -> Iterator[DomainOutcome]:
        """Every domain's outcome as soon as a sub-batch knows it (with Dask, when its
        sub-batch returns). A sub-batch whose task run dies (a killed worker process, a
        lost Dask worker) is run again for its domains without an outcome, at most
        SUB_BATCH_ATTEMPTS times in all, on a fresh pool when the pool broke; then its
        domains are failed with the reason, never lost."""
        assert self.runner is not None, "use SubBatchExecutor as a context manager"
        size = sub_batch_size(len(domains), self.workers)
        waiting = [(domains[start:start + size], 1) for start in range(0, len(domains), size)]
        waiting.reverse()
        events: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        # Outcomes travel back through the queue as they are known (same process only).
        sink = None if self.kind == "dask" else (lambda outcome: events.put(("outcome", outcome)))
        in_flight: dict[UUID, tuple[list[str], int, WorkerPool | None]] = {}
        delivered: set[str] = set()

        outstanding = 0  # domains of the sub-batches in flight without an outcome yet

        def room() -> bool:
            if len(in_flight) < 2 * self.workers:
                return True
            if self.pool is None or len(in_flight) >= SUB_BATCHES_IN_FLIGHT_MAX:
                return False
            return outstanding < IN_FLIGHT_PER_SLOT * self.slots

        while waiting or in_flight:
            while waiting and room():
                chunk, attempt = waiting.pop()
                future = self.runner.submit(scrape_domains, {
                    "domains": chunk, "options": self.options, "reach": self.reach, "extra": len(chunk) - 1,
                    "pool": self.pool, "sink": sink,
                })
                in_flight[future.task_run_id] = (chunk, attempt, self.pool)
                outstanding += len(chunk)
                future.add_done_callback(lambda done: events.put(("done", done)))
            kind, item = events.get()
            if kind == "outcome":
                assert isinstance(item, DomainOutcome)
                if item.domain not in delivered:
                    outstanding -= 1
                delivered.add(item.domain)
                yield item
                continue
            assert isinstance(item, PrefectFuture)
            chunk, attempt, pool = in_flight.pop(item.task_run_id)
            outstanding -= sum(domain not in delivered for domain in chunk)
            # Its outcomes were queued before its end (one queue, in order): all seen.
            returned, error = _result_of(item)
            for outcome in returned:
                if outcome.domain not in delivered:
                    delivered.add(outcome.domain)
                    yield outcome
            rest = [domain for domain in chunk if domain not in delivered]
            if not rest:
                continue
            if attempt < SUB_BATCH_ATTEMPTS:
                if isinstance(error, BrokenProcessPool) and pool is self.pool:
                    self._replace_pool()
                waiting.append((rest, attempt + 1))
                continue
            error = RuntimeError(f"its sub-batch failed {attempt} times, last: {type(error).__name__}: {error}")
            for domain in rest:
                delivered.add(domain)
                yield outcome_from_error(domain, error)

    def _start_pool(self) -> WorkerPool:
        pool = WorkerPool(self.workers, self.options, self.reach)
        self._stack.callback(pool.close)
        return pool

    def _replace_pool(self) -> None:
        """A worker process died and took the pool with it: the rest runs on a new one."""
        assert self.pool is not None
        self.pool.close()
        self.pool = self._start_pool()


def _result_of(future: PrefectFuture) -> tuple[list[DomainOutcome], BaseException]:
    """A finished sub-batch's outcomes, and why it has no more."""
    try:
        result = future.result(raise_on_failure=False)
    except Exception as error:  # a crashed or cancelled task run
        result = error
    if isinstance(result, list):
        outcomes = [outcome for outcome in result if isinstance(outcome, DomainOutcome)]
        return outcomes, RuntimeError(f"sub-batch returned {len(outcomes)} outcomes for more domains")
    if isinstance(result, BaseException):
        return [], result
    return [], RuntimeError(f"sub-batch returned {result!r:.200}")


def _dask_runner(settings: Settings) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("SCRAPERSKY_TASK_RUNNER=dask needs prefect-dask: pip install 'scrapersky-batch[dask]'") from None
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1, "processes": True})
