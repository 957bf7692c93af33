"""The worker pool alone, without Prefect: how close its fetching comes to the in-order floor.

    python -m benchmarks.pool_only --n 2000 --workers 2 --concurrency 200

Serves the farm's realistic web in a process of its own, runs one
``scrapersky.tasks.workers.WorkerPool`` over ``real-0.test`` .. ``real-<N-1>.test``
(5 s timeouts, one retry at once, as ``scrapersky bench --realistic``), and prints one
JSON line: wall seconds from the pool's start to the last outcome, pages fetched, the
workers' CPU, when the k-th outcome arrived, and the in-order floor of the same hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pool_only")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--concurrency", type=int, default=200, help="fetch threads in all")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)

    from benchmarks.bench import in_order_floor
    from benchmarks.processes import FarmProcess
    from scrapersky.batch import BatchOptions, DomainStatus
    from scrapersky.farm_pages import real_attempt_seconds
    from scrapersky.tasks.workers import WorkerPool
    from scrapersky.web.guard import Reach

    with tempfile.TemporaryDirectory() as logs:
        farm = FarmProcess(latency=0.1, logs=Path(logs))
        try:
            reach = Reach(connect_to=tuple(farm.connect_to))
            options = BatchOptions(concurrency=max(1, args.concurrency // args.workers), retries=1, retry_backoff=0,
                                   connect_timeout=args.timeout, read_timeout=args.timeout,
                                   total_timeout=args.timeout)
            domains = [f"real-{i}.test" for i in range(args.n)]
            marks = {k: None for k in (1, args.n // 4, args.n // 2, 9 * args.n // 10, args.n)}
            arrived = 0
            started = time.perf_counter()

            def deliver(_outcome: object) -> None:
                nonlocal arrived
                arrived += 1
                if arrived in marks:
                    marks[arrived] = round(time.perf_counter() - started, 2)

            with WorkerPool(args.workers, options, reach) as pool:
                outcomes = pool.scrape(domains, deliver)
                wall = time.perf_counter() - started
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            farm.stop()
    attempts = [real_attempt_seconds(domain, timeout=args.timeout, retries=1) for domain in domains]
    print(json.dumps({
        "wall_seconds": round(wall, 2),
        "pages": sum(outcome.status == DomainStatus.COMPLETED for outcome in outcomes),
        "workers_cpu_seconds": round(children.ru_utime + children.ru_stime, 2),
        "outcome_at_seconds": marks,
        "in_order_floor_seconds": round(in_order_floor(attempts, args.concurrency), 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
