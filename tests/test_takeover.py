"""Beyond one machine: two Prefect workers on the `scrapersky` pool, the one running a
batch SIGKILLed mid-batch together with its flow run's process group; the
`recover-stale-batches` deployment, on its (shortened) schedule, declares the batch
stale and finishes it through the other worker.

Proved here: the batch ends with every domain's outcome; no domain recorded completed
before the kill is fetched again (the farm counts requests per host); the dead run
writes nothing after the takeover (it owns the batch no more: batch_metadata.recovery
names it, every row written after the takeover was fetched by the new run).

Real parts only: `prefect server start` on loopback with its own PREFECT_HOME, the
deployments of prefect.yaml (`prefect deploy --all`), two `prefect worker start`
processes, PostgreSQL through PgBouncer in transaction mode, the loopback web farm.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from scrapersky.batch import utcnow
from scrapersky.db.engine import unit_of_work
from scrapersky.farm import Farm
from stack import BIN, ROOT, Stack, free_port, stop, wait_http

#: The test's schedule and staleness (prefect.yaml: every 300 s; the default: 900 s).
RECOVERY_INTERVAL = 5
STALE_AFTER = 20
#: Domains of the batch: each page is served after LATENCY s, CONCURRENCY at a time,
#: so the batch lasts long enough to be killed in the middle.
DOMAINS = [f"site-{i}.test" for i in range(100)]
LATENCY = 1.5
CONCURRENCY = 4
#: Outcomes saved before the kill, at least.
SAVED_BEFORE_KILL = 8


@dataclass
class TwoWorkers(Stack):
    """The session stack's shape (tests/stack.py), with two named workers."""

    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, trust_env=False, timeout=30)


@pytest.fixture
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, pooled_url: str, migrated_prefect_home: Callable[[str], Path]
) -> Iterator[TwoWorkers]:
    """Server, work pool, the deployments (recovery every RECOVERY_INTERVAL s), workers w1 and w2."""
    home = migrated_prefect_home("prefect-home")
    logs = tmp_path_factory.mktemp("takeover-logs")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    farm = Farm(latency=LATENCY)
    farm.__enter__()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "SCRAPERSKY_"))
    } | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "DATABASE_URL": pooled_url,
        "SCRAPERSKY_CONNECT_TO": " ".join(farm.connect_to()),
        "SCRAPERSKY_STALE_AFTER": str(STALE_AFTER),
        "SCRAPERSKY_CONCURRENCY": str(CONCURRENCY),
        "SCRAPERSKY_RETRY_BACKOFF": "0.2",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    processes: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")
        # A session of its own: its process group is never ours (a kill of it cannot reach pytest).
        process = subprocess.Popen([str(BIN / "prefect"), *args], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    try:
        server = start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        wait_http(f"{api_url}/health", 180, server)
        stack = TwoWorkers(api_url=api_url, ui_url=f"http://127.0.0.1:{port}", env=env, database_url=pooled_url,
                           logs=logs, farm=farm, processes=processes,
                           stale_batch=None)  # type: ignore[arg-type]  # none inserted for this test
        created = stack.prefect("work-pool", "create", "scrapersky", "--type", "process", "--overwrite")
        assert created.returncode == 0, created.stdout + created.stderr
        # prefect.yaml as shipped, but the recovery runs every RECOVERY_INTERVAL s.
        config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
        recovery = next(d for d in config["deployments"] if d["name"] == "recover-stale-batches")
        recovery["schedules"][0]["interval"] = RECOVERY_INTERVAL
        test_yaml = logs / "prefect.test.yaml"
        test_yaml.write_text(yaml.safe_dump(config))
        deployed = stack.prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(test_yaml))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        stack.workers = {name: start(name, "worker", "start", "--pool", "scrapersky", "--name", name, "--limit", "4")
                         for name in ("w1", "w2")}
        yield stack
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                stop(process)
        farm.__exit__(None, None, None)


# --------------------------------------------------------------------------- reading


def _rows(database_url: str, batch_id: uuid.UUID) -> dict[str, tuple[datetime, dict[str, Any] | None]]:
    """domain -> (updated_at, outcome) of the batch's domain_results rows."""
    from sqlalchemy import select

    from scrapersky.db.models import DomainResult

    async def read() -> dict[str, tuple[datetime, dict[str, Any] | None]]:
        async with unit_of_work(database_url) as session:
            found = await session.execute(select(DomainResult.domain, DomainResult.updated_at, DomainResult.outcome)
                                          .where(DomainResult.batch_id == batch_id))
            return {domain: (_aware(at), outcome) for domain, at, outcome in found}

    return asyncio.run(read())


def _owner(database_url: str, batch_id: uuid.UUID) -> str | None:
    from sqlalchemy import select

    from scrapersky.db.models import BatchJob

    async def read() -> str | None:
        async with unit_of_work(database_url) as session:
            metadata = await session.scalar(select(BatchJob.batch_metadata).where(BatchJob.batch_id == batch_id))
            return (metadata or {}).get("flow_run_id")

    return asyncio.run(read())


def _aware(moment: datetime) -> datetime:
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _flow_run_pids(worker: subprocess.Popen) -> dict[str, psutil.Process]:
    """The flow runs a worker's process tree runs: flow run id -> its process."""
    found = {}
    try:
        children = psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    for child in children:
        try:  # a child may end (and turn zombie) between two reads
            run = child.environ().get("PREFECT__FLOW_RUN_ID")
            if run and ("prefect.engine" in " ".join(child.cmdline()) or run not in found):
                found[run] = child
        except psutil.Error:
            continue
    return found


def _all_gone(processes: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in processes if _alive(p)]:
            return True
        time.sleep(0.1)
    return False


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _post(api: httpx.Client, path: str, seconds: float = 30.0) -> httpx.Response:
    """A POST to the Prefect API, tried again while the server answers 503 (its SQLite
    database busy, as it is right after a SIGKILL of a worker), for ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while True:
        response = api.post(path)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def _active_recovery_runs(api: httpx.Client) -> list[dict[str, Any]]:
    body = {"deployments": {"name": {"any_": ["recover-stale-batches"]}},
            "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}}}
    return api.post("/flow_runs/filter", json=body).json()


# --------------------------------------------------------------------------- the test


def test_sigkilled_worker_batch_is_finished_through_the_other_worker(two_workers: TwoWorkers) -> None:
    stack, farm = two_workers, two_workers.farm
    started = time.monotonic()
    batch_id = uuid.uuid4()
    submitted = stack.scrapersky("submit", *DOMAINS, "--batch-id", str(batch_id), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    # The run that owns the batch, the worker whose process tree runs it, outcomes saved.
    deadline = time.monotonic() + 180
    victim = dead_run = None
    with stack.api() as api:
        while True:
            assert time.monotonic() < deadline, f"no outcome saved in time\n{stack.tail()}"
            dead_run = _owner(stack.database_url, batch_id)
            saved = [d for d, (_, outcome) in _rows(stack.database_url, batch_id).items() if outcome]
            if dead_run and len(saved) >= SAVED_BEFORE_KILL:
                break
            time.sleep(0.5)
        # Recovery runs came and went while the batch lived (every RECOVERY_INTERVAL s)
        # and left it alone. A recovery run killed with the victim would hold the
        # deployment's one slot (CANCEL_NEW) until its lease expires (300 s): the
        # schedule is paused until none is pending or running, and resumed after the kill.
        recovery_deployment = api.get("/deployments/name/recover-stale-batches/recover-stale-batches").json()["id"]
        assert _post(api, f"/deployments/{recovery_deployment}/pause_deployment").status_code < 300
        deadline = time.monotonic() + 60
        while True:  # until no recovery run is pending or running, nor in the victim's tree
            runs = {name: _flow_run_pids(worker) for name, worker in stack.workers.items()}
            victim = next((name for name, found in runs.items() if dead_run in found), None)
            if victim and set(runs[victim]) == {dead_run} and not _active_recovery_runs(api):
                break
            assert time.monotonic() < deadline, f"recovery runs still active: {runs}\n{stack.tail()}"
            time.sleep(0.2)
        saved = [d for d, (_, outcome) in _rows(stack.database_url, batch_id).items() if outcome]
        assert len(saved) < len(DOMAINS) - 10, "the batch ran to its end before the kill"

        worker = stack.workers[victim]
        survivor = next(name for name in stack.workers if name != victim)
        flow_process = _flow_run_pids(worker)[dead_run]
        tree = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
        flow_group = os.getpgid(flow_process.pid)
        assert flow_group not in (os.getpgid(0), os.getpgid(stack.workers[survivor].pid))
        # The worker first (it cannot see its child die), then the flow run's group.
        os.kill(worker.pid, signal.SIGKILL)
        os.killpg(flow_group, signal.SIGKILL)
        for process in tree:  # anything of the tree outside that group
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        killed_at, hits_at_kill = utcnow(), farm.hits
        worker.wait(timeout=10)
        assert _all_gone(tree, timeout=10), tree
        assert _post(api, f"/deployments/{recovery_deployment}/resume_deployment").status_code < 300
        print(f"killed {victim} (pid {worker.pid}) and flow run {dead_run} (group {flow_group}) "
              f"at {time.monotonic() - started:.1f} s")

        # What the dead run recorded: nothing can change it from now on but the new run.
        time.sleep(0.5)
        before = _rows(stack.database_url, batch_id)
        completed_before = {d for d, (_, outcome) in before.items() if outcome and outcome["status"] == "completed"}
        assert len(completed_before) >= SAVED_BEFORE_KILL

        # The survivor's flow runs, sampled while we wait (the new run lives in one of them).
        survivor_runs: set[str] = set()
        report = None
        deadline = time.monotonic() + STALE_AFTER + 150
        while time.monotonic() < deadline:
            survivor_runs |= set(_flow_run_pids(stack.workers[survivor]))
            report = stack.status(batch_id)
            if report.status in ("completed", "partial", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert report is not None and report.status in ("completed", "partial"), f"{report}\n{stack.tail()}"
        print(f"batch {report.status} at {time.monotonic() - started:.1f} s")

        # Every domain has an outcome (the farm's pages all complete).
        assert sorted(report.domain_statuses) == sorted(DOMAINS)
        assert (report.status, report.completed_domains, report.failed_domains) == ("completed", len(DOMAINS), 0)

        # The takeover: one recovery, naming the dead run; the batch is the new run's.
        recovery = report.metadata["recovery"]
        assert recovery["attempts"] == 1 and recovery["dead_flow_runs"] == [dead_run], recovery
        new_run = report.metadata["flow_run_id"]
        assert new_run and new_run != dead_run
        took_over_at = datetime.fromisoformat(recovery["last_at"])
        assert took_over_at > killed_at

        # The new run is the batch's next generation: a run of the batch-scrape deployment that
        # a scheduled recover-stale-batches run asked for, run by the survivor.
        new = api.get(f"/flow_runs/{new_run}").json()
        deployment = api.get(f"/deployments/{new['deployment_id']}").json()
        assert deployment["name"] == "batch-scrape" and new["parameters"]["batch"]["generation"] == 1, new
        assert new["idempotency_key"] == f"{batch_id}:1"
        assert new_run in survivor_runs, (new_run, survivor_runs)
        assert api.get(f"/flow_runs/{dead_run}").json()["state"]["type"] == "CRASHED"

    # Nothing recorded completed before the kill was fetched again.
    hits = farm.hits
    assert {d: hits[d] for d in completed_before if hits[d] != 1} == {}
    # No write from the dead run after the takeover. A row recorded completed before the
    # kill is as it was. Every other row was written after the takeover (nothing between
    # the kill and the takeover; by then every process of the dead run was gone, so the
    # new run wrote it), with an outcome the new run fetched after the takeover, or, for
    # a domain the dead run finished after its last progress save, the dead run's result
    # the new run read back from Prefect's result storage (fetched once, before the kill).
    after = _rows(stack.database_url, batch_id)
    assert {d: after[d] for d in completed_before if after[d] != before[d]} == {}
    late = {d: (at, outcome) for d, (at, outcome) in after.items() if d not in completed_before}
    assert late, "the new run recorded nothing"
    fetched_anew, replayed = [], []
    for domain, (at, outcome) in late.items():
        assert at >= took_over_at, (domain, at, took_over_at)
        assert outcome is not None, domain
        if datetime.fromisoformat(outcome["started_at"]) >= took_over_at:
            fetched_anew.append(domain)
        else:
            assert hits_at_kill[domain] == hits[domain] == 1, (domain, outcome, hits_at_kill[domain], hits[domain])
            replayed.append(domain)
    assert fetched_anew, "the new run fetched nothing"
    assert all(hits[d] >= 1 for d in DOMAINS)
    print(f"recorded completed before the kill: {len(completed_before)}, fetched by the new run: "
          f"{len(fetched_anew)}, read back from result storage: {len(replayed)}, wall {time.monotonic() - started:.1f} s")
