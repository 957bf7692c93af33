"""``scrapersky doctor``: is everything a batch needs there? One line per check.

The database (reachable through ``DATABASE_URL`` - the pooler's address when one is
configured - with statements repeated across transactions, as a pooler in
transaction mode would break them; then the schema check), the Prefect API, the
work pool, a live worker, the deployment, and, when asked, a one-domain canary batch
submitted like any other and awaited until it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import text

from scrapersky.db.engine import Database, create_engine
from scrapersky.db.schema import check_schema

from .batch import BatchStatus
from .client import DEFAULT_DEPLOYMENT, get_status, submit_batch
from .settings import Settings, current_settings

__all__ = ["Check", "run_checks"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _why(error: BaseException) -> str:
    reason = getattr(error, "orig", None) or error
    text_ = str(reason).strip().splitlines()[0] if str(reason).strip() else ""
    return f"{type(reason).__name__}: {text_}" if text_ else type(reason).__name__


async def _database(database: Database) -> AsyncIterator[Check]:
    where = database.where
    engine = create_engine(database.url)
    # The server's version: PostgreSQL's version(), SQLite's sqlite_version().
    version_of = "'SQLite ' || sqlite_version()" if database.is_sqlite else "version()"
    try:
        try:
            for attempt in range(3):  # separate transactions: what a pooler may interleave
                async with engine.begin() as connection:
                    # A parameterised statement: what a pooler in transaction mode
                    # breaks when the driver keeps prepared statements.
                    version = await connection.scalar(
                        text(f"select {version_of} where :probe = :probe"), {"probe": f"doctor-{attempt}"}
                    )
        except Exception as error:
            yield Check("database", False, f"{where}: {_why(error)}")
            return
        yield Check("database", True, f"{where} ({str(version).split(',')[0]})")
        try:
            async with engine.connect() as connection:
                report = await connection.run_sync(check_schema)
        except Exception as error:
            yield Check("schema", False, _why(error))
            return
        yield Check("schema", report.ok, "tables fit the code" if report.ok else report.message())
    finally:
        await engine.dispose()


async def _prefect(pool: str, deployment: str) -> AsyncIterator[Check]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.settings import PREFECT_API_URL

    where = PREFECT_API_URL.value()
    if not where:  # a temporary server would have no pool, worker or deployment to check
        yield Check("prefect api", False, "PREFECT_API_URL is not set: deployments need a Prefect server "
                    "(`scrapersky up`, or see the README's Running on Prefect); `scrape` needs none")
        return
    async with get_client() as client:
        failure = await client.api_healthcheck()
        if failure is not None:
            yield Check("prefect api", False, f"{where}: {_why(failure)}")
            return
        yield Check("prefect api", True, f"{where} (server {await client.api_version()})")

        try:
            work_pool = await client.read_work_pool(pool)
        except Exception as error:
            yield Check("work pool", False, f"{pool}: {_why(error)} (prefect work-pool create {pool} --type process)")
            work_pool = None
        if work_pool is not None:
            paused = " - PAUSED" if work_pool.is_paused else ""
            yield Check("work pool", not work_pool.is_paused, f"{pool} ({work_pool.type}){paused}")
            workers = await client.read_workers_for_work_pool(pool)
            online = [w.name for w in workers if w.status == WorkerStatus.ONLINE]
            yield Check(
                "worker", bool(online),
                f"{len(online)} online: {', '.join(online)}" if online
                else f"none online (prefect worker start --pool {pool})",
            )

        try:
            found = await client.read_deployment_by_name(deployment)
        except Exception as error:
            yield Check("deployment", False, f"{deployment}: {_why(error)} (prefect deploy --all)")
            return
        problems = []
        if found.paused:
            problems.append("paused")
        if found.work_pool_name != pool:
            problems.append(f"runs on work pool {found.work_pool_name!r}, not {pool!r}")
        yield Check("deployment", not problems, f"{deployment}" + (f": {'; '.join(problems)}" if problems else ""))


async def _canary(domain: str, deployment: str, timeout: float, settings: Settings) -> Check:
    tenant_id = settings.tenant_id
    started = time.monotonic()
    try:
        batch_id: UUID = await submit_batch([domain], tenant_id, deployment=deployment, settings=settings)
    except Exception as error:
        return Check("canary", False, f"{domain}: not submitted: {_why(error)}")
    while time.monotonic() - started < timeout:
        report = await get_status(batch_id, tenant_id, settings=settings)
        if BatchStatus(report.status).is_final:
            entry = next(iter(report.domain_statuses.values()), {})
            detail = f"{domain}: batch {batch_id} {report.status} in {time.monotonic() - started:.1f} s"
            if report.status != BatchStatus.COMPLETED:
                detail += f" ({entry.get('error_type') or report.error})"
            return Check("canary", report.status == BatchStatus.COMPLETED, detail)
        await asyncio.sleep(1.0)
    return Check("canary", False, f"{domain}: batch {batch_id} not finished after {timeout:.0f} s (is a worker running?)")


async def run_checks(
    *, pool: str = "scrapersky", deployment: str = DEFAULT_DEPLOYMENT,
    canary: str | None = None, canary_timeout: float = 180.0, settings: Settings | None = None,
) -> AsyncIterator[Check]:
    """Every check, in order; later checks still run when an earlier one fails."""
    settings = settings or current_settings()
    async for check in _database(settings.database()):
        yield check
    async for check in _prefect(pool, deployment):
        yield check
    if canary is not None:
        yield await _canary(canary, deployment, canary_timeout, settings)
