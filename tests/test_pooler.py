"""Through a real transaction-mode pooler (PgBouncer, pool size 2), as behind Supavisor."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from scrapersky.farm import Farm

WORKLOAD = Path(__file__).with_name("pooler_workload.py")
PREPARED_STATEMENT_ERRORS = {
    "InvalidSQLStatementNameError",
    "DuplicatePreparedStatementError",
}


def run_workload_in_two_processes(url: str, engine: str) -> list[dict]:
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKLOAD), url, "--engine", engine],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_negative_control_driver_defaults_break_behind_the_pooler(postgres_url: str, pooled_url: str) -> None:
    from pgbouncer import PgBouncer

    # Its own pooler (the same config as the session's): the statements this leaves on
    # the server connections must not be counted against the project's engine below.
    with PgBouncer() as own:
        results = run_workload_in_two_processes(own.url(postgres_url.rsplit("/", 1)[1]), "driver-default")
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
    prepared = sum(count for name, count in errors.items() if name in PREPARED_STATEMENT_ERRORS)
    operations = sum(result["operations"] for result in results)
    # The failure this project guards against, shown to happen with the same workload:
    # a pooler that handles prepared statements itself (PgBouncer >= 1.21 with
    # max_prepared_statements > 0, the default from 1.24) makes this red, because the
    # project engine's clean run below would then prove nothing.
    assert prepared > 0 and operations < 2 * 90, (
        f"driver defaults did not break through PgBouncer {own.version}: the pooler handles prepared "
        f"statements (is max_prepared_statements 0?): {results}"
    )


@pytest.mark.parametrize(("version", "pinned"), [((1, 18, 0), False), ((1, 21, 0), True), ((1, 24, 1), True)])
def test_the_pooler_config_pins_prepared_statements_off(version: tuple[int, ...], pinned: bool) -> None:
    from pgbouncer import config

    written = config(pg_host="127.0.0.1", pg_port=5432, port=6543, dir=Path("/nowhere"), version=version)
    assert ("\nmax_prepared_statements = 0\n" in written) is pinned  # versions before 1.21 refuse the setting
    assert "\npool_mode = transaction\n" in written


def test_project_engine_has_zero_errors_and_leaves_no_statements(pooled_url: str) -> None:
    results = run_workload_in_two_processes(pooled_url, "project")
    assert [r["errors"] for r in results] == [{}, {}]
    assert [r["operations"] for r in results] == [90, 90]

    async def prepared_on_servers() -> list[tuple[int, int]]:
        # Two clients, each inside a transaction: with default_pool_size = 2 they hold
        # both server connections, so both servers are inspected.
        clients = [await asyncpg.connect(pooled_url, statement_cache_size=0) for _ in range(2)]
        try:
            seen = []
            for client in clients:
                await client.execute("BEGIN")
                seen.append(await client.fetchrow(
                    "SELECT pg_backend_pid(), count(*) FROM pg_prepared_statements"
                ))
            return [tuple(row) for row in seen]
        finally:
            for client in clients:
                await client.close()

    servers = asyncio.run(prepared_on_servers())
    assert len({pid for pid, _ in servers}) == 2
    assert [count for _, count in servers] == [0, 0]


def test_application_name_identifies_the_project(postgres_url: str) -> None:
    from scrapersky.db.engine import create_engine

    async def name() -> str:
        engine = create_engine(postgres_url)
        try:
            async with engine.connect() as connection:
                result = await connection.exec_driver_sql(
                    "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                )
                return result.scalar_one()
        finally:
            await engine.dispose()

    assert asyncio.run(name()) == "scrapersky-batch"


def scrape_process(env: dict[str, str], farm: Farm, domains: list[str]) -> subprocess.Popen:
    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    return subprocess.Popen(
        [sys.executable, "-m", "scrapersky.cli", "scrape", *domains, "--json", "--retries", "1", *rules],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def pooled_env(prefect_api: str, pooled_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_API_URL=prefect_api, DATABASE_URL=pooled_url, SCRAPERSKY_RETRY_BACKOFF="0.01")
    return env


def test_two_processes_each_run_a_200_domain_batch_through_the_pooler(pooled_env: dict[str, str], farm: Farm) -> None:
    batches = [
        [f"ok-{p}-{i}.test" for i in range(180)] + [f"err500-{p}-{i}.test" for i in range(20)]
        for p in range(2)
    ]
    processes = [scrape_process(pooled_env, farm, domains) for domains in batches]
    outputs = [process.communicate(timeout=600) for process in processes]

    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
        assert "prepared statement" not in err.lower()
        report = json.loads(out)
        assert (report["status"], report["completed_domains"], report["failed_domains"]) == ("partial", 180, 20)
        assert len(report["domain_statuses"]) == 200


def test_several_batches_at_once_in_one_process(
    prefect_api: str, pooled_url: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scrapersky.flows.batch_scrape import batch_scrape
    from scrapersky.batch import BatchOptions, BatchRequest

    monkeypatch.setenv("DATABASE_URL", pooled_url)
    options = BatchOptions(retries=0, concurrency=8)
    states: dict[int, object] = {}

    def run(n: int) -> None:
        states[n] = batch_scrape(
            BatchRequest(domains=[f"ok-{n}-{i}.test" for i in range(40)] + [f"notfound-{n}.test"], options=options),
            return_state=True,
        )

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert sorted(states) == [0, 1, 2, 3]
    assert all(state.is_completed() and state.result() == "partial" for state in states.values())
