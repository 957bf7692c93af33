"""The worker pool of a large batch (``scrapersky.tasks.workers``), on its own: real
worker processes fetching from the local farm."""

from __future__ import annotations

from scrapersky.batch import BatchOptions, DomainOutcome
from scrapersky.farm import Farm
from scrapersky.settings import Settings
from scrapersky.tasks.workers import WorkerPool


def test_a_retry_waits_behind_the_domains_not_tried_yet(farm: Farm) -> None:
    # One worker, one fetch thread: the order the farm sees is the order of the slots.
    # flaky-* answers 503 once: its retry is due at once (no backoff), yet it must go
    # after every domain still waiting for its first attempt.
    options = BatchOptions(concurrency=1, retries=1, retry_backoff=0)
    fresh = [f"ok-order{i}.test" for i in range(6)]
    domains = ["flaky-order.test", *fresh]
    delivered: list[DomainOutcome] = []
    with WorkerPool(1, options, Settings().reach()) as pool:
        outcomes = pool.scrape(domains, delivered.append)

    assert sorted(o.domain for o in outcomes) == sorted(domains)
    assert all(o.status == "completed" for o in outcomes), [(o.domain, o.error) for o in outcomes]
    flaky = next(o for o in outcomes if o.domain == "flaky-order.test")
    assert flaky.attempts == 2
    order = [host for host in farm.arrivals if "-order" in host]
    assert order == ["flaky-order.test", *fresh, "flaky-order.test"], order
    assert delivered[-1].domain == "flaky-order.test"
