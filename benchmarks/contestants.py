"""Two of the benchmark's contestants, each run as a process of its own (the third is
the Scrapy spider, ``benchmarks.spider``):

    python -m benchmarks.contestants raw --port PORT --n N --concurrency C --results FILE
    python -m benchmarks.contestants flow --n N --concurrency C --batch-id UUID

- ``raw``: asyncio, one ``httpx.AsyncClient`` (limits = concurrency) and the project's
  own ``extract_metadata``, one request a domain (``site-<i>.test`` as the Host header at
  ``http://127.0.0.1:PORT/``); one JSON line a domain in FILE;
- ``flow``: the real ``batch_scrape`` flow on ``site-0.test`` .. ``site-<N-1>.test``
  (Prefect API, database and connect-to rules from the environment), retries off.

The last line printed is a JSON summary: the seconds and CPU seconds of the work itself,
imports and interpreter start left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _raw(port: int, n: int, concurrency: int) -> list[dict[str, Any]]:
    import httpx

    from scrapersky.metadata.extract import extract_metadata

    url, records, pending = f"http://127.0.0.1:{port}/", [], iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0), trust_env=False,
                                 headers={"User-Agent": "ScraperSkyBench/0.1 (raw baseline)"}) as client:

        async def worker() -> None:
            for i in pending:  # one shared iterator: each index taken once
                host = f"site-{i}.test"
                try:
                    response = await client.get(url, headers={"Host": host})
                    if response.status_code != 200:
                        records.append({"domain": host, "error": f"HTTP {response.status_code}"})
                        continue
                    metadata = extract_metadata(response.content, response.headers, f"http://{host}/")
                    records.append({"domain": host, "status": 200, **metadata.model_dump(mode="json")})
                except Exception as error:  # recorded, counted by the harness
                    records.append({"domain": host, "error": f"{type(error).__name__}: {error}"})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def _flow(n: int, concurrency: int, batch_id: str) -> dict[str, Any]:
    from scrapersky.batch import BatchOptions, BatchRequest
    from scrapersky.flows.batch_scrape import batch_scrape

    request = BatchRequest(domains=[f"site-{i}.test" for i in range(n)], batch_id=uuid.UUID(batch_id),
                           options=BatchOptions(concurrency=concurrency, retries=0))
    state = batch_scrape(request, return_state=True)
    return {"state": getattr(state, "name", None), "message": getattr(state, "message", None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contestants")
    parser.add_argument("contestant", choices=("raw", "flow"))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--port", type=int, help="raw: the farm's port")
    parser.add_argument("--results", type=Path, help="raw: the JSON lines file")
    parser.add_argument("--batch-id", help="flow: the batch's id")
    args = parser.parse_args(argv)
    # Imports before the clock starts, for every contestant alike.
    if args.contestant == "raw":
        import httpx  # noqa: F401

        import scrapersky.metadata.extract  # noqa: F401
    else:
        import scrapersky.flows.batch_scrape  # noqa: F401

    cpu, started = _cpu_self(), time.perf_counter()
    if args.contestant == "raw":
        records = asyncio.run(_raw(args.port, args.n, args.concurrency))
        with args.results.open("w") as out:  # as Scrapy's feed: inside the work
            out.writelines(json.dumps(record) + "\n" for record in records)
        summary: dict[str, Any] = {"records": len(records)}
    else:
        summary = _flow(args.n, args.concurrency, args.batch_id)
    summary.update(work_seconds=time.perf_counter() - started, work_cpu_seconds=_cpu_self() - cpu)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
