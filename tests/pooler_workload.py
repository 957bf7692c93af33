"""A database workload for the pooler tests, run as its own OS process:

    python tests/pooler_workload.py URL --engine project|driver-default [--workers N --rounds N]

Each worker repeats the batch's real database steps (open a batch, record its outcomes,
read its status), each in its own transaction. Prints one JSON line: operations done
and errors by driver exception class. ``driver-default`` is the negative control: the
same engine with the driver's default statement caching, which a transaction-mode
pooler breaks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.exc import DBAPIError  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from scrapersky.db import batches  # noqa: E402
from scrapersky.db.engine import create_engine, database_url, transaction  # noqa: E402
from scrapersky.db.schema import check_schema  # noqa: E402
from scrapersky.batch import DomainOutcome, DomainStatus  # noqa: E402

TENANT = uuid.UUID("44444444-4444-4444-4444-444444444444")


def driver_error(exc: BaseException) -> str:
    """The asyncpg exception class behind SQLAlchemy's wrappers."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__module__.startswith("asyncpg"):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def worker(engine, schema, rounds: int, errors: Counter) -> int:
    done = 0
    for _ in range(rounds):
        batch_id = uuid.uuid4()
        domains = [f"d{i}.test" for i in range(3)]
        try:
            async with transaction(engine) as session:
                await batches.open_batch(
                    session, batches.NewBatch(batch_id, TENANT, domains, {}, {}), flow_run_id=None, schema=schema,
                )
            async with transaction(engine) as session:
                await batches.record_outcomes(
                    session, batch_id=batch_id, tenant_id=TENANT, flow_run_id=None,
                    outcomes=[DomainOutcome(domain=d, status=DomainStatus.COMPLETED, metadata={"title": d}) for d in domains],
                )
            async with transaction(engine) as session:
                report = await batches.get_batch_status(session, batch_id, TENANT)
                assert report.completed_domains == 3
            done += 1
        except DBAPIError as exc:
            errors[driver_error(exc)] += 1
        except Exception as exc:  # noqa: BLE001 - counted, reported
            errors[type(exc).__name__] += 1
    return done


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--engine", choices=["project", "driver-default"], required=True)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    # The schema check is an input of the workload, not part of it: read it safely.
    checker = create_engine(args.url)
    async with checker.connect() as connection:
        schema = await connection.run_sync(check_schema)
    await checker.dispose()
    if args.engine == "project":
        engine = create_engine(args.url)
    else:
        engine = create_async_engine(database_url(args.url), pool_size=args.workers)
    errors: Counter = Counter()
    done = await asyncio.gather(*(worker(engine, schema, args.rounds, errors) for _ in range(args.workers)))
    await engine.dispose()
    print(json.dumps({"engine": args.engine, "operations": sum(done), "errors": {k: v for k, v in errors.items() if v}}))


if __name__ == "__main__":
    asyncio.run(main())
