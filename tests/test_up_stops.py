"""`scrapersky up` (its Prefect server on PostgreSQL) while things stop under it.

A killed worker: SIGKILL of `up`'s Prefect worker while a batch of slow farm domains
runs; `up` keeps running, says so in one line, stops the flow run the worker left (it
releases its batch), starts a worker under a new name, which comes online within 60 s,
and asks for a recovery run, which resumes the batch to its end: every domain one
outcome.

Then SIGTERM of `up` while a batch runs: its flow run saves what it knows and releases
the batch (``pending``) before the worker and the server stop; `up` started again runs
it to its end without fetching again what was saved.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import asyncpg
import httpx
import psutil
import pytest

from scrapersky.farm import Farm
from up_process import STOP_BOUND, Up, running_up

SLOW_LATENCY = 1.5  # s before each site-<i> page of the farm


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, prefect_postgres_template: str) -> Iterator[Up]:
    # Batches of more than 10 domains go to the worker (smaller ones to the express
    # runner, whose stops tests/test_express.py tries): these tests are the worker's.
    with Farm(latency=SLOW_LATENCY) as farm, running_up(tmp_path_factory.mktemp("up-stops"),
                                                        prefect_postgres_template, farm,
                                                        SCRAPERSKY_EXPRESS_MAX="10") as stack:
        yield stack


def _online_workers(up: Up) -> dict[str, str]:
    """The pool's workers by name, with their status, as the Prefect server says."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        response = client.post(f"{up.ui_url}/api/work_pools/scrapersky/workers/filter", json={})
        response.raise_for_status()
        return {worker["name"]: worker["status"] for worker in response.json()}


def test_a_killed_worker_is_restarted_and_its_batch_completes(up: Up) -> None:
    domains = [f"site-{i}.test" for i in range(1, 25)]  # 1.5 s each, 2 at a time: about 18 s of work
    with up.api() as api:
        created = api.post("/batch", json={"domains": domains, "max_concurrent": 2})
        assert created.status_code == 200, created.text
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + 60
        while True:  # running, with outcomes saved
            body = api.get(f"/batch/{batch_id}/status").json()
            if body["completed_domains"] + body["failed_domains"] >= 2:
                break
            assert time.monotonic() < deadline, f"batch not under way after 60 s: {body}\n{up.logs()}"
            time.sleep(0.5)
        assert body["status"] not in ("completed", "failed"), body

        worker = up.part("worker start")
        before = set(_online_workers(up))
        killed = time.monotonic()
        worker.kill()  # SIGKILL: only the worker; its flow run stays, handed to `up`
        worker.wait(timeout=10)

        deadline = killed + 60
        new: set[str] = set()
        while True:
            assert up.process.poll() is None, f"up exited with {up.process.returncode}:\n{up.output()}"
            workers = _online_workers(up)
            new = {name for name, status in workers.items() if name not in before and status == "ONLINE"}
            health = httpx.get(f"{up.api_url}/health", timeout=10).json()
            if new and health["checks"]["worker"]["status"] == "ok":
                break
            assert time.monotonic() < deadline, f"no new worker online 60 s after the kill: {workers}\n{up.output()}"
            time.sleep(0.5)
        online_after = time.monotonic() - killed
        said = up.err.read_text()
        assert "the worker exited with -9: restarting" in said, said
        assert up.part("worker start").pid != worker.pid
        print(f"\na new worker {sorted(new)} online {online_after:.1f} s after the kill")

        final = up.wait_final(api, batch_id, timeout=120)
        print(f"batch final {time.monotonic() - killed:.1f} s after the kill: {final['status']}, "
              f"{final['completed_domains']} completed, {final['failed_domains']} failed; farm hits "
              f"{sorted(Counter(up.farm.hits[d] for d in domains).items())} (times fetched: domains)\n"
              + "\n".join(line for line in said.splitlines() if "worker" in line or "recover" in line))

    async def outcomes() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(up.admin_url(up.database_name))
        try:
            return await connection.fetch("select domain, outcome is not null as known from domain_results "
                                          "where batch_id = $1", uuid.UUID(batch_id))
        finally:
            await connection.close()

    rows = asyncio.run(outcomes())
    assert final["status"] == "completed", f"{final}\n{up.logs()}"
    assert sorted(row["domain"] for row in rows) == sorted(domains)
    assert all(row["known"] for row in rows), [row["domain"] for row in rows if not row["known"]]
    assert (final["completed_domains"], final["failed_domains"]) == (len(domains), 0), final
    assert psutil.pid_exists(up.process.pid)


def test_stopping_up_while_a_batch_runs_releases_the_batch_and_the_next_up_finishes_it(up: Up) -> None:
    """Defined last: it stops the module's stack, and starts it again. The worker's flow
    run gets SIGTERM and its grace while the server and the database are still up: it
    saves what it knows and releases its batch (``pending``), instead of being killed by
    its own worker as a stopping Prefect worker does. The next `up` runs it to its end,
    without fetching again what was saved."""
    domains = [f"site-{i}.test" for i in range(100, 124)]
    with up.api() as api:
        created = api.post("/batch", json={"domains": domains, "max_concurrent": 2})
        assert created.status_code == 200, created.text
        batch_id = created.json()["batch_id"]
        deadline = time.monotonic() + 60
        while api.get(f"/batch/{batch_id}/status").json()["completed_domains"] < 2:
            assert time.monotonic() < deadline, f"batch not under way after 60 s\n{up.logs()}"
            time.sleep(0.5)
    started = time.monotonic()
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=STOP_BOUND) == 0, up.output()
    stopped = time.monotonic() - started

    async def stored() -> tuple[asyncpg.Record, int]:
        connection = await asyncpg.connect(up.admin_url(up.database_name))
        try:
            row = await connection.fetchrow("select status, batch_metadata from batch_jobs where batch_id = $1",
                                            uuid.UUID(batch_id))
            known = await connection.fetchval("select count(*) from domain_results where batch_id = $1 "
                                              "and outcome is not null", uuid.UUID(batch_id))
            return row, known
        finally:
            await connection.close()

    row, known = asyncio.run(stored())
    said = up.err.read_text()
    print(f"\nup stopped in {stopped:.1f} s with a batch running: {row['status']}, {known} outcomes saved")
    assert "stopping the worker's flow runs (" in said, said
    assert row["status"] == "pending" and "released" in json.loads(row["batch_metadata"]), dict(row)
    assert known >= 2

    saved = asyncio.run(_saved_domains(up, batch_id))
    hits_at_stop = {domain: up.farm.hits[domain] for domain in saved}
    ready = up.start_again()
    with up.api() as api:
        final = up.wait_final(api, batch_id, timeout=120)
    print(f"the next up ready in {ready:.1f} s; batch {final['status']} {time.monotonic() - started:.1f} s "
          f"after the stop")
    assert (final["status"], final["completed_domains"], final["total_domains"]) == ("completed", 24, 24), final
    assert {d: up.farm.hits[d] for d in saved} == hits_at_stop  # nothing saved was fetched again


async def _saved_domains(up: Up, batch_id: str) -> set[str]:
    connection = await asyncpg.connect(up.admin_url(up.database_name))
    try:
        rows = await connection.fetch("select domain from domain_results where batch_id = $1 and outcome is not null",
                                      uuid.UUID(batch_id))
        return {row["domain"] for row in rows}
    finally:
        await connection.close()
