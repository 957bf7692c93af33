"""``GET /health``: is the service able to take and run batches? Each part named, ok or
error, with a short reason that holds no secret (never the database URL).

    service      this process answers
    database     a statement runs (through the pooler when there is one)
    prefect_api  the Prefect server answers
    worker       a worker of the work pool is online (someone will run the batch)

Every check is bounded in time; all of them run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from sqlalchemy import text

from scrapersky.db.engine import Database, create_engine

__all__ = ["Check", "HEALTH_CHECK_TIMEOUT", "check_health"]

HEALTH_CHECK_TIMEOUT = 5.0  # seconds, each check


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"status": "ok" if self.ok else "error", "reason": self.reason}


def _why(error: BaseException) -> str:
    """The kind of failure and its first line: what a reader needs, no more."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {HEALTH_CHECK_TIMEOUT:.0f} s"
    reason = getattr(error, "orig", None) or error
    first = str(reason).strip().splitlines()[0][:200] if str(reason).strip() else ""
    return f"{type(reason).__name__}: {first}" if first else type(reason).__name__


async def _bounded(name: str, work: Awaitable[Check]) -> Check:
    try:
        return await asyncio.wait_for(work, HEALTH_CHECK_TIMEOUT)
    except Exception as error:
        return Check(name, False, _why(error))


async def _database(database: Database) -> Check:
    engine = create_engine(database.url)
    try:
        async with engine.connect() as connection:
            await connection.scalar(text("select 1"))
    finally:
        await engine.dispose()
    return Check("database", True, f"{database.url.get_backend_name()} answers")


async def _prefect_api() -> Check:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():  # else the client would start a server of its own
        return Check("prefect_api", False, "PREFECT_API_URL is not set")
    async with get_client() as client:
        failure = await client.api_healthcheck()
        if failure is not None:
            return Check("prefect_api", False, _why(failure))
        return Check("prefect_api", True, f"server {await client.api_version()} answers")


async def _worker(pool: str) -> Check:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return Check("worker", False, "PREFECT_API_URL is not set: no work pool to look at")

    async with get_client() as client:
        workers = await client.read_workers_for_work_pool(pool)
    online = [worker for worker in workers if worker.status == WorkerStatus.ONLINE]
    if not online:
        return Check("worker", False, f"no worker of work pool {pool!r} is online")
    return Check("worker", True, f"{len(online)} worker(s) of work pool {pool!r} online")


async def check_health(database: Database, *, pool: str, secrets: tuple[str, ...] = ()) -> list[Check]:
    """Every part's check, run at once. ``secrets`` are masked in any reason (a driver's
    message should not hold one; this makes sure)."""
    checks = await asyncio.gather(
        _bounded("database", _database(database)),
        _bounded("prefect_api", _prefect_api()),
        _bounded("worker", _worker(pool)),
    )
    service = Check("service", True, "answering")
    return [service, *(_masked(check, secrets) for check in checks)]


def _masked(check: Check, secrets: tuple[str, ...]) -> Check:
    reason = check.reason
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "***")
    return Check(check.name, check.ok, reason)
