"""One Prefect stack for the whole test session, shared by every module that needs
deployments: a real `prefect server start` on loopback, a process work pool,
`prefect deploy --all` from prefect.yaml (the recovery deployment every 15 s), a real
`prefect worker`, the web farm, and PostgreSQL through PgBouncer in transaction mode.
Starting one costs 20-30 s: tests/conftest.py's session-scoped ``stack`` fixture starts
it once (``running_stack``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import yaml

from scrapersky.batch import DEFAULT_TENANT_ID, BatchStatus, utcnow
from scrapersky.db.batches import BatchStatusReport, get_batch_status
from scrapersky.db.engine import unit_of_work
from scrapersky.farm import Farm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECOVERY_INTERVAL = 15  # seconds, for the test; prefect.yaml says 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Stack:
    api_url: str
    ui_url: str
    env: dict[str, str]  # what a client of this stack runs with (API, database, routing)
    database_url: str
    logs: Path
    farm: Farm
    stale_batch: uuid.UUID  # left running by a dead run before the stack started
    processes: list[subprocess.Popen] = field(default_factory=list)

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def scrapersky(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "scrapersky"), *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def status(self, batch_id: uuid.UUID, tenant_id: uuid.UUID = DEFAULT_TENANT_ID) -> BatchStatusReport:
        async def read() -> BatchStatusReport:
            async with unit_of_work(self.database_url) as session:
                return await get_batch_status(session, batch_id, tenant_id)

        return asyncio.run(read())

    def wait_final(self, batch_id: uuid.UUID, timeout: float = 120) -> BatchStatusReport:
        deadline = time.monotonic() + timeout
        while True:
            try:
                report = self.status(batch_id)
                if BatchStatus(report.status).is_final:
                    return report
            except Exception:  # not created yet
                report = None
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch_id} not final after {timeout} s: {report}\n{self.tail()}")
            time.sleep(0.5)

    def tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.iterdir()))


def wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args} exited with {process.returncode}")
            try:
                if client.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise TimeoutError(url)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def insert_stale_batch(database_url: str, domains: list[str]) -> uuid.UUID:
    """A batch left 'running' ten minutes ago by a flow run Prefect never heard of."""
    from sqlalchemy import insert

    from scrapersky.db.models import BatchJob, DomainResult

    batch_id = uuid.uuid4()
    then = utcnow() - timedelta(minutes=10)

    async def insert_rows() -> None:
        async with unit_of_work(database_url) as session:
            await session.execute(insert(BatchJob).values(
                batch_id=batch_id, tenant_id=DEFAULT_TENANT_ID, processor_type="domain_metadata",
                status=BatchStatus.PROCESSING, total_domains=len(domains), created_at=then, updated_at=then,
                start_time=then, batch_metadata={"flow_run_id": str(uuid.uuid4())}, options={"retries": 0},
            ))
            await session.execute(insert(DomainResult), [
                {"batch_id": batch_id, "domain": d, "updated_at": then} for d in domains
            ])

    asyncio.run(insert_rows())
    return batch_id


def migrated_database(home: Path) -> Path:
    """Prefect's server database in ``home``, migrated to this Prefect's head (as a
    server's first start would); its path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
    }
    upgraded = subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    database = home / "prefect.db"
    assert database.is_file(), sorted(home.iterdir())
    return database


@contextmanager
def running_stack(home: Path, logs: Path, pooled_url: str) -> Iterator[Stack]:
    """Server, work pool, deployments (the recovery one every 15 s) and a worker; every
    process it started is stopped at the end (by its pid)."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    farm = Farm()
    farm.__enter__()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SCRAPERSKY_"))
    } | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "DATABASE_URL": pooled_url,
        "SCRAPERSKY_CONNECT_TO": " ".join(farm.connect_to()),
        "SCRAPERSKY_STALE_AFTER": "60",
        "SCRAPERSKY_RETRY_BACKOFF": "0.2",
        "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "250",  # whole names in the CLI's tables
    }
    stale = insert_stale_batch(pooled_url, ["ok-stale-1.test", "ok-stale-2.test", "ok-stale-3.test"])

    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen([str(BIN / "prefect"), *args], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
        processes.append(process)
        return process

    try:
        server = start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        wait_http(f"{api_url}/health", 120, server)
        stack = Stack(api_url=api_url, ui_url=f"http://127.0.0.1:{port}", env=env,
                      database_url=pooled_url, logs=logs, farm=farm, stale_batch=stale, processes=processes)
        created = stack.prefect("work-pool", "create", "scrapersky", "--type", "process", "--overwrite")
        assert created.returncode == 0, created.stdout + created.stderr

        # prefect.yaml as shipped, but the recovery runs every 15 s for this test.
        config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
        recovery = next(d for d in config["deployments"] if d["name"] == "recover-stale-batches")
        recovery["schedules"][0]["interval"] = RECOVERY_INTERVAL
        test_yaml = logs.parent / "prefect.test.yaml"
        test_yaml.write_text(yaml.safe_dump(config))
        deployed = stack.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(test_yaml))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        start("worker", "worker", "start", "--pool", "scrapersky", "--name", "test-worker", "--limit", "6")
        yield stack
    finally:
        for process in reversed(processes):
            stop(process)
        farm.__exit__(None, None, None)
