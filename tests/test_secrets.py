"""The database password never shows: not in output, logs, Prefect parameters or errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

from scrapersky.farm import Farm

PASSWORD = "Sup3r-s3cret-PW"  # PgBouncer and PostgreSQL trust loopback here: any password is accepted


def scrapersky(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scrapersky.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )


async def prefect_records(flow_run_id: uuid.UUID) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return run.model_dump_json() + "".join(log.model_dump_json() for log in logs)


def test_a_full_run_never_shows_the_password(prefect_api: str, pgbouncer, postgres_url: str, farm: Farm) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    env = dict(
        os.environ,
        PREFECT_API_URL=prefect_api,
        PREFECT_LOGGING_LEVEL="DEBUG",
        DATABASE_URL=pgbouncer.url(database, password=PASSWORD),
        SCRAPERSKY_RETRY_BACKOFF="0.01",
    )
    rules = [arg for rule in farm.connect_to() for arg in ("--connect-to", rule)]
    assert scrapersky(env, "db", "init").returncode == 0
    run = scrapersky(env, "scrape", "ok-1.test", "err500-1.test", "--retries", "1", "--json", *rules)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert "Finished in state" in run.stderr  # the DEBUG logs really were captured

    check = scrapersky(env, "db", "check")
    stored = asyncio.run(prefect_records(uuid.UUID(report["metadata"]["flow_run_id"])))
    assert len(stored) > 1000

    seen = run.stdout + run.stderr + check.stdout + check.stderr + stored
    assert PASSWORD not in seen


def test_an_unreachable_database_error_does_not_show_the_password(tmp_path) -> None:
    import socket

    with socket.socket() as closed:  # bound, never listening: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = dict(os.environ, DATABASE_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/x")
        for args in (["db", "check"], ["status", str(uuid.uuid4())], ["db", "init"]):
            result = scrapersky(env, *args)
            assert result.returncode == 2
            assert PASSWORD not in result.stdout + result.stderr
            assert "Traceback" not in result.stderr
            # a clear error: where (password masked) and why
            assert f"postgres:***@127.0.0.1:{port}" in result.stderr
            assert "Connect call failed" in result.stderr
