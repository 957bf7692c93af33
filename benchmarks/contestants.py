"""Two of the benchmark's contestants, each run as a process of its own (the third is
the Scrapy spider, ``benchmarks.spider``):

    python -m benchmarks.contestants raw --port PORT --n N --concurrency C --results FILE
        [--kind site|real] [--timeout S] [--retries R] [--shard K/M]
    python -m benchmarks.contestants flow --n N --concurrency C --batch-id UUID
        [--kind site|real] [--timeout S] [--retries R]

- ``raw``: asyncio, one ``httpx.AsyncClient`` (limits = concurrency) and the project's
  own ``extract_metadata``, one request a domain (``<kind>-<i>.test`` as the Host header
  at ``http://127.0.0.1:PORT/``), redirects followed the same way, a timeout, 5xx,
  408/429 and connection errors tried again at once ``--retries`` times (as Scrapy
  does); one JSON line a domain in FILE. ``--shard K/M``: only the domains with
  ``i % M == K``, at ``C // M`` (or one more) at a time: one of M processes sharing
  the work (``benchmarks.every_core``);
- ``flow``: the real ``batch_scrape`` flow on ``<kind>-0.test`` .. ``<kind>-<N-1>.test``
  (Prefect API, database and connect-to rules from the environment), ``--retries``
  (default 0) and ``--timeout`` as connect, read and total timeouts, ``--retry-backoff``
  (default the project's).

The last line printed is a JSON summary: the seconds and CPU seconds of the work itself,
imports and interpreter start left out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Answers tried again, as Scrapy's RETRY_HTTP_CODES.
RETRY_STATUSES = frozenset({500, 502, 503, 504, 522, 524, 408, 429})
MAX_REDIRECTS = 5


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def shard_of(text: str | None) -> tuple[int, int]:
    """``"K/M"`` -> (K, M); None -> (0, 1)."""
    if not text:
        return 0, 1
    k, _, m = text.partition("/")
    shard, shards = int(k), int(m)
    if not 0 <= shard < shards:
        raise ValueError(f"--shard {text}: K must be 0..M-1")
    return shard, shards


def shard_share(total: int, shard: int, shards: int) -> int:
    """Shard K's part of ``total`` (concurrency): the parts add up to the total, at least 1 each."""
    return max(1, total // shards + (1 if shard < total % shards else 0))


def shard_indices(n: int, shard: int, shards: int) -> range:
    return range(shard, n, shards)


async def _raw(port: int, indices: range, kind: str, concurrency: int, timeout: float,
               retries: int) -> list[dict[str, Any]]:
    import httpx

    from scrapersky.metadata.extract import extract_metadata

    url, records, pending = f"http://127.0.0.1:{port}/", [], iter(indices)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout), trust_env=False,
                                 headers={"User-Agent": "ScraperSkyBench/0.1 (raw baseline)"}) as client:

        async def get(host: str) -> httpx.Response:
            authority = f"{host}:{port}"
            for _ in range(MAX_REDIRECTS + 1):
                response = await asyncio.wait_for(client.get(url, headers={"Host": authority}), timeout)
                if response.status_code not in (301, 302, 303, 307, 308):
                    return response
                authority = urlsplit(response.headers["location"]).netloc
            raise RuntimeError("too many redirects")

        async def worker() -> None:
            for i in pending:  # one shared iterator: each index taken once
                host = f"{kind}-{i}.test"
                for attempt in range(1 + retries):
                    try:
                        response = await get(host)
                        if response.status_code in RETRY_STATUSES and attempt < retries:
                            continue
                        if response.status_code != 200:
                            records.append({"domain": host, "error": f"HTTP {response.status_code}"})
                            break
                        metadata = extract_metadata(response.content, response.headers, f"http://{host}/")
                        records.append({"domain": host, "status": 200, **metadata.model_dump(mode="json")})
                        break
                    except (httpx.TransportError, TimeoutError) as error:
                        if attempt < retries:
                            continue
                        records.append({"domain": host, "error": f"{type(error).__name__}: {error}"})
                    except Exception as error:  # recorded, counted by the harness
                        records.append({"domain": host, "error": f"{type(error).__name__}: {error}"})
                        break

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def _flow(n: int, kind: str, concurrency: int, batch_id: str, timeout: float | None, retries: int,
          retry_backoff: float | None = None) -> dict[str, Any]:
    from scrapersky.batch import BatchOptions, BatchRequest
    from scrapersky.flows.batch_scrape import batch_scrape

    times: dict[str, float] = {} if timeout is None else {
        "connect_timeout": timeout, "read_timeout": timeout, "total_timeout": timeout}
    if retry_backoff is not None:
        times["retry_backoff"] = retry_backoff
    request = BatchRequest(domains=[f"{kind}-{i}.test" for i in range(n)], batch_id=uuid.UUID(batch_id),
                           options=BatchOptions(concurrency=concurrency, retries=retries, **times))
    state = batch_scrape(request, return_state=True)
    return {"state": getattr(state, "name", None), "message": getattr(state, "message", None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.contestants")
    parser.add_argument("contestant", choices=("raw", "flow"))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--kind", choices=("site", "real"), default="site", help="the farm's hosts: <kind>-<i>.test")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=None, help="seconds a request may take (raw default 60)")
    parser.add_argument("--retries", type=int, default=0, help="extra attempts after a transient failure")
    parser.add_argument("--port", type=int, help="raw: the farm's port")
    parser.add_argument("--results", type=Path, help="raw: the JSON lines file")
    parser.add_argument("--shard", default=None, help="raw: K/M, this process's share of the domains")
    parser.add_argument("--batch-id", help="flow: the batch's id")
    parser.add_argument("--retry-backoff", type=float, default=None,
                        help="flow: its first retry's delay (default the project's; 0 retries at once, as the peers)")
    args = parser.parse_args(argv)
    # Imports before the clock starts, for every contestant alike.
    if args.contestant == "raw":
        import httpx  # noqa: F401

        import scrapersky.metadata.extract  # noqa: F401
    else:
        import scrapersky.flows.batch_scrape  # noqa: F401

    cpu, started = _cpu_self(), time.perf_counter()
    if args.contestant == "raw":
        shard, shards = shard_of(args.shard)
        records = asyncio.run(_raw(args.port, shard_indices(args.n, shard, shards), args.kind,
                                   shard_share(args.concurrency, shard, shards), args.timeout or 60.0, args.retries))
        with args.results.open("w") as out:  # as Scrapy's feed: inside the work
            out.writelines(json.dumps(record) + "\n" for record in records)
        summary: dict[str, Any] = {"records": len(records)}
    else:
        summary = _flow(args.n, args.kind, args.concurrency, args.batch_id, args.timeout, args.retries,
                        args.retry_backoff)
    summary.update(work_seconds=time.perf_counter() - started, work_cpu_seconds=_cpu_self() - cpu)
    print(json.dumps(summary), flush=True)
    gc.freeze()  # no last garbage collections at exit, for every contestant alike (as the CLI)
    return 0


if __name__ == "__main__":
    sys.exit(main())
