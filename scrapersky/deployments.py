"""The deployments of ``prefect.yaml``, built from the installed package.

``prefect deploy --all`` needs the checkout (``prefect.yaml`` and its working-directory
pull step); ``scrapersky up`` runs from an installed wheel as well, so it creates the same
three deployments here, with module entrypoints (``scrapersky.flows.batch_scrape.batch_scrape``)
and no pull step: a process worker with this package installed runs them from any
directory. ``tests/test_up.py`` checks that these and ``prefect.yaml`` say the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = ["WORK_POOL", "deployments", "apply_deployments", "ensure_work_pool"]

#: The process work pool the deployments run on (prefect.yaml's ``work_pools.process``).
WORK_POOL = "scrapersky"


def deployments(work_pool: str = WORK_POOL) -> list[RunnerDeployment]:
    """``batch-scrape``, ``recover-stale-batches`` (every 5 minutes) and
    ``nightly-watchlist`` (a cron example, inactive), as prefect.yaml defines them."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron, Interval

    from scrapersky.flows.batch_scrape import batch_scrape
    from scrapersky.flows.recover_stale_batches import recover_stale_batches

    common: dict[str, Any] = dict(
        work_pool_name=work_pool, work_queue_name="default", entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return [
        batch_scrape.to_deployment(
            name="batch-scrape",
            description="Scrape the homepages of a batch of domains into batch_jobs.",
            tags=["scrapersky"],
            concurrency_limit=ConcurrencyLimitConfig(limit=4, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            enforce_parameter_schema=True,
            parameters={"batch": {"domains": ["ok-1.test"]}},
            **common,
        ),
        recover_stale_batches.to_deployment(
            name="recover-stale-batches",
            description="Resume or fail batches whose flow run is gone (no update for SCRAPERSKY_STALE_AFTER).",
            tags=["scrapersky", "maintenance"],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            parameters={},
            schedules=[Interval(300, slug="every-5-minutes")],
            **common,
        ),
        batch_scrape.to_deployment(
            name="nightly-watchlist",
            description="An example scheduled batch - a fixed list of domains every night.",
            tags=["scrapersky", "scheduled"],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            parameters={"batch": {"domains": ["ok-1.test", "ok-2.test", "notfound-1.test"],
                                  "options": {"concurrency": 8, "retries": 3}}},
            schedules=[Cron("0 3 * * *", timezone="UTC", slug="nightly", active=False)],
            **common,
        ),
    ]


async def ensure_work_pool(client, name: str = WORK_POOL) -> bool:
    """Create the process work pool unless it exists (an operator's edits to an existing
    pool are kept), and its express queue (scrapersky/express.py); True when the pool
    was created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from scrapersky.flows.runs import EXPRESS_QUEUE

    created = False
    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(
            name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
        ))
        created = True
    try:
        await client.create_work_queue(name=EXPRESS_QUEUE, work_pool_name=name)
    except ObjectAlreadyExists:
        pass
    return created


async def apply_deployments(built: list[RunnerDeployment]) -> dict[str, UUID]:
    """Create or update ``built`` (from ``deployments()``, called outside an event loop)
    on the current Prefect API; their ids by ``flow/deployment`` name."""
    applied: dict[str, UUID] = {}
    for deployment in built:
        applied[f"{deployment.flow_name}/{deployment.name}"] = await deployment.aapply()
    return applied
