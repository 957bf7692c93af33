"""Large batches: sub-batch task runs on threads, a process pool or Dask, with every
domain still retried on its own and every domain's outcome recorded."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import pytest

from scrapersky.settings import Settings

from scrapersky.db.batches import BatchStatusReport, get_batch_status
from scrapersky.flows.batch_scrape import batch_scrape
from scrapersky.flows.fan_out import SUB_BATCH_MAX, SUB_BATCH_MIN, sub_batch_size
from scrapersky.batch import BatchOptions, BatchRequest
from scrapersky.farm import Farm

pytestmark = pytest.mark.usefixtures("prefect_api")

TENANT = uuid.UUID("33333333-3333-3333-3333-333333333333")


def status_of(batch_id: uuid.UUID) -> BatchStatusReport:
    async def read() -> BatchStatusReport:
        async with Settings().database().session() as session:
            return await get_batch_status(session, batch_id, TENANT)

    return asyncio.run(read())


def task_run_names(flow_run_id: uuid.UUID, expected: int, timeout: float = 30) -> list[str]:
    """The names of the flow run's task runs, once the server has at least ``expected``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return [run.name for run in runs]

    deadline = time.monotonic() + timeout
    while True:
        names = asyncio.run(read())
        if len(names) >= expected or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


@pytest.mark.parametrize("sizes", [(1, 1), (100, 2), (10_000, 2), (10_000, 1), (1_000_000, 8)])
def test_sub_batch_sizes_are_bounded(sizes: tuple[int, int]) -> None:
    total, workers = sizes
    size = sub_batch_size(total, workers)
    assert SUB_BATCH_MIN <= size <= SUB_BATCH_MAX
    assert math.ceil(total / size) <= max(workers * 4, math.ceil(total / SUB_BATCH_MAX))


@pytest.mark.parametrize("runner", ["threads", "processes"])
def test_a_large_batch_runs_in_sub_batches_with_per_domain_retries(
    runner: str, database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "20")
    monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", runner)
    monkeypatch.setenv("SCRAPERSKY_WORKERS", "2")
    good = [f"ok-sb{i}.test" for i in range(90)]
    flaky = [f"flaky-sb{i}.test" for i in range(5)]
    failing = [f"err500-sb{i}.test" for i in range(5)]
    missing = [f"notfound-sb{i}.test" for i in range(5)]
    refused = [f"down-sb{i}.refused.test" for i in range(5)]
    domains = good + flaky + failing + missing + refused + ["not a domain"]
    options = BatchOptions(retries=2, retry_backoff=0.01, concurrency=8)

    state = batch_scrape(BatchRequest(domains=domains, tenant_id=TENANT, options=options), return_state=True)

    assert state.is_completed() and state.result() == "partial"
    batch_id = uuid.UUID(str(state.state_details.flow_run_id))
    report = status_of(batch_id)
    assert (report.total_domains, report.completed_domains, report.failed_domains) == (111, 95, 16)
    statuses = report.domain_statuses
    for domain in good:
        assert statuses[domain]["status"] == "completed" and statuses[domain]["attempts"] == 1
        assert statuses[domain]["metadata"]["title"] == domain.split(".")[0]
    for domain in flaky:  # 503 once, then the page: retried inside the sub-batch
        assert (statuses[domain]["status"], statuses[domain]["attempts"]) == ("completed", 2)
    for domain in failing:
        assert (statuses[domain]["error_type"], statuses[domain]["attempts"]) == ("http_error", 3)
        assert farm.hits[domain] == 3
    for domain in missing:  # a 404 is permanent: never retried
        assert (statuses[domain]["error_type"], statuses[domain]["attempts"]) == ("http_error", 1)
    for domain in refused:
        assert (statuses[domain]["error_type"], statuses[domain]["attempts"]) == ("connect_error", 3)
    assert statuses["not a domain"]["error_type"] == "invalid_domain"
    assert all(farm.hits[domain] == 1 for domain in good)

    # The server saw a handful of sub-batch task runs, not one per domain.
    chunks = math.ceil(110 / sub_batch_size(110, 2))
    names = task_run_names(batch_id, expected=chunks + 2)  # and open-batch, persist-batch
    scraping = [name for name in names if name.startswith("scrape ")]
    assert len(scraping) == chunks, names
    assert all(" more" in name for name in scraping), names


def test_a_broken_sub_batch_fails_its_domains_loudly(
    database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scrapersky.tasks.attempt as attempt_module

    monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "5")
    monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", "threads")

    def defect(domain: str, fetcher, *, attempt: int = 1):
        if domain.startswith("ok-bad"):
            raise ZeroDivisionError("a defect in extraction")
        return real(domain, fetcher, attempt=attempt)

    real = attempt_module.scrape_page
    monkeypatch.setattr(attempt_module, "scrape_page", defect)
    domains = [f"ok-good{i}.test" for i in range(20)] + ["ok-bad1.test", "ok-bad2.test"]
    state = batch_scrape(BatchRequest(domains=domains, tenant_id=TENANT, options=BatchOptions(retries=2)),
                         return_state=True)
    report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
    assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 20, 2)
    bad = report.domain_statuses["ok-bad1.test"]
    assert (bad["error_type"], bad["attempts"]) == ("internal_error", 1)
    assert "ZeroDivisionError" in bad["error"]


def test_sub_batches_run_on_a_dask_cluster(database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster

    monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "10")
    monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", "dask")
    monkeypatch.setenv("SCRAPERSKY_WORKERS", "2")
    # Worker processes inherit this environment: the farm's connect-to rules included.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        monkeypatch.setenv("SCRAPERSKY_DASK_ADDRESS", cluster.scheduler_address)
        domains = [f"ok-dask{i}.test" for i in range(60)] + ["err500-dask.test"]
        state = batch_scrape(
            BatchRequest(domains=domains, tenant_id=TENANT, options=BatchOptions(retries=1, retry_backoff=0.01)),
            return_state=True,
        )
        ran_here = client.run(lambda: "scrapersky.tasks.scrape" in __import__("sys").modules)

    report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
    assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 60, 1)
    assert report.domain_statuses["err500-dask.test"]["attempts"] == 2
    assert any(ran_here.values()), ran_here  # the sub-batches ran in the cluster's workers


def test_a_sub_batch_that_dies_keeps_what_it_delivered(
    database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scrapersky.tasks.scrape as scrape_module

    monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "5")
    monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", "threads")
    real = scrape_module.scrape_with_retries

    def dying(domain: str, fetcher):
        if domain == "ok-slow.test":  # finishes late, but before the sub-batch breaks
            time.sleep(1.0)
        if domain == "ok-dies.test":  # then the sub-batch itself breaks (as a killed worker would)
            time.sleep(2.0)
            raise RuntimeError("the worker went away")
        return real(domain, fetcher)

    monkeypatch.setattr(scrape_module, "scrape_with_retries", dying)
    domains = [f"ok-kept{i}.test" for i in range(10)] + ["ok-slow.test", "ok-dies.test"]
    state = batch_scrape(BatchRequest(domains=domains, tenant_id=TENANT, options=BatchOptions(concurrency=12)),
                         return_state=True)
    report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
    assert (report.completed_domains, report.failed_domains) == (11, 1), report.domain_statuses
    assert report.domain_statuses["ok-slow.test"]["status"] == "completed"
    assert report.domain_statuses["ok-dies.test"]["error_type"] == "internal_error"


def _is_worker(process) -> bool:
    """A worker process of a pool (spawned); a child that ended meanwhile (a zombie, or
    gone: the test process's other children come and go) is not one."""
    import psutil

    try:
        return "spawn_main" in " ".join(process.cmdline())
    except psutil.Error:
        return False


def test_a_killed_worker_process_is_replaced_and_its_domains_run_again(
    database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of one worker process mid-batch: the pool breaks, a new one takes over,
    the dead sub-batches' domains without an outcome run again; every domain completes."""
    import os
    import signal
    import threading

    import psutil

    monkeypatch.setenv("SCRAPERSKY_TASK_PER_DOMAIN_MAX", "5")
    monkeypatch.setenv("SCRAPERSKY_TASK_RUNNER", "processes")
    monkeypatch.setenv("SCRAPERSKY_WORKERS", "2")
    domains = [f"delay-kill{i}.test" for i in range(200)]
    request = BatchRequest(domains=domains, tenant_id=TENANT, options=BatchOptions(concurrency=8))
    ended: dict[str, object] = {}
    runner = threading.Thread(target=lambda: ended.update(state=batch_scrape(request, return_state=True)))
    runner.start()
    deadline = time.monotonic() + 120
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and runner.is_alive():
        workers = [child for child in psutil.Process().children(recursive=True) if _is_worker(child)]
        if workers and sum(farm.hits.values()) >= 40:
            break
        time.sleep(0.1)
    assert workers, "no worker process was seen"
    os.kill(workers[0].pid, signal.SIGKILL)
    killed_at = sum(farm.hits.values())
    runner.join(timeout=180)
    assert not runner.is_alive()
    state = ended["state"]
    report = status_of(uuid.UUID(str(state.state_details.flow_run_id)))
    failed = {d: e["error"] for d, e in report.domain_statuses.items() if e["status"] != "completed"}
    assert (report.status, report.completed_domains, failed) == ("completed", 200, {})
    assert killed_at < 200  # the kill came mid-batch
    assert all(farm.hits[d] >= 1 for d in domains)
