"""The express lane: a small batch's flow run starts at once.

A Prefect worker looks for runs every few seconds, then starts each one in a new Python
process that imports Prefect and the flow again: seconds of a small batch's life, where
the fetching takes a fraction of one. The express runner is a long-lived process that has
imported them once. It asks the Prefect API for scheduled runs of the ``batch-scrape``
deployment in the pool's ``express`` queue (``submit_batch`` puts batches of at most
``SCRAPERSKY_EXPRESS_MAX`` domains there) every ``POLL_SECONDS``, claims each one as a worker
does (``Pending``, through Prefect's orchestration: the deployment's concurrency limit
holds), and forks: the child runs the flow run as ``python -m prefect.engine`` would,
with everything already imported. Every batch is still a flow run of the deployment, in
a process of its own: a stop, a cancellation or a crash is handled as it is under a
worker.

- A cancellation (the run ``CANCELLING``): its process gets SIGTERM, and the run ends
  ``Cancelled`` (the flow ends the batch ``cancelled``).
- A process that exits before its run is over (killed, out of memory): the run is
  proposed ``Crashed`` and its flow's crash hooks run (they release the batch and ask
  for its next run), in a child of their own.
- SIGTERM or SIGINT to the runner: it takes no new run, passes SIGTERM to its runs (they
  save what they know and release their batches) and waits ``STOP_GRACE`` seconds for
  them.

The express queue is in the worker's pool: ``up`` starts its worker on the ``default``
queue only, and a worker started on the whole pool takes express runs too, at its own
pace, when no express runner is up. The runner itself talks to Prefect over
plain HTTP and starts no thread: a process that forks must not have any.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from scrapersky.flows.runs import EXPRESS_QUEUE

__all__ = ["POLL_SECONDS", "ExpressRunner", "run_express"]

#: Seconds between two looks for scheduled runs (each one small query to the Prefect API).
POLL_SECONDS = 0.2
#: Seconds between two looks at the states of the runs in flight (for a cancellation).
WATCH_SECONDS = 1.0
#: Seconds the runs in flight get to stop when the runner is stopped.
STOP_GRACE = 20.0
#: Runs at once (the deployment's concurrency limit holds as well).
DEFAULT_SLOTS = 4

logger = logging.getLogger("scrapersky.express")

_FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


@dataclass
class _Run:
    flow_run_id: str
    pid: int
    cancelling: bool = False
    exit_code: int | None = None  # once its process is collected


class ExpressRunner:
    """Claims and runs the express runs of one deployment (``flow/deployment``)."""

    def __init__(self, api_url: str, deployment: str, *, slots: int = DEFAULT_SLOTS,
                 poll: float = POLL_SECONDS) -> None:
        self.http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=10.0, trust_env=False)
        self.deployment, self.slots, self.poll = deployment, slots, poll
        self.deployment_id: str | None = None
        self.runs: dict[int, _Run] = {}
        self.stopping = False
        self._watched = 0.0

    # -- talking to Prefect ----------------------------------------------------------

    def _deployment_id(self) -> str | None:
        if self.deployment_id is None:
            flow_name, _, name = self.deployment.partition("/")
            found = self.http.get(f"deployments/name/{flow_name}/{name}")
            if found.status_code == 404:
                return None
            found.raise_for_status()
            deployment = found.json()
            self._ensure_queue(deployment.get("work_pool_name"))
            self.deployment_id = deployment["id"]
        return self.deployment_id

    def _ensure_queue(self, pool: str | None) -> None:
        """The express queue, made before any run asks for it (Prefect makes a missing one
        on a run's creation, and concurrent creations collide)."""
        if pool:
            made = self.http.post(f"work_pools/{pool}/queues", json={"name": EXPRESS_QUEUE})
            if made.status_code != 409:  # 409: it is there already
                made.raise_for_status()

    def _scheduled(self, limit: int) -> list[str]:
        deployment_id = self._deployment_id()
        if deployment_id is None:
            return []
        found = self.http.post("flow_runs/filter", json={
            "flow_runs": {
                "state": {"type": {"any_": ["SCHEDULED"]}},
                "work_queue_name": {"any_": [EXPRESS_QUEUE]},
                "next_scheduled_start_time": {"before_": datetime.now(UTC).isoformat()},
            },
            "deployments": {"id": {"any_": [deployment_id]}},
            "sort": "NEXT_SCHEDULED_START_TIME_ASC",
            "limit": limit,
        })
        found.raise_for_status()
        return [run["id"] for run in found.json()]

    def _propose(self, flow_run_id: str, state_type: str, name: str, message: str = "") -> bool:
        """Propose a state (never forced: Prefect's rules decide); whether it was accepted."""
        answer = self.http.post(f"flow_runs/{flow_run_id}/set_state", json={
            "state": {"type": state_type, "name": name, "message": message}, "force": False})
        answer.raise_for_status()
        return answer.json().get("status") == "ACCEPT"

    def _set(self, flow_run_id: str, state_type: str, name: str, message: str) -> None:
        """Set a state Prefect's rules would refuse (a cancelled run that its engine called crashed)."""
        self.http.post(f"flow_runs/{flow_run_id}/set_state", json={
            "state": {"type": state_type, "name": name, "message": message}, "force": True}).raise_for_status()

    def _states(self, flow_run_ids: list[str]) -> dict[str, str]:
        found = self.http.post("flow_runs/filter", json={
            "flow_runs": {"id": {"any_": flow_run_ids}}, "limit": len(flow_run_ids)})
        found.raise_for_status()
        return {run["id"]: (run.get("state") or {}).get("type", "") for run in found.json()}

    # -- the loop --------------------------------------------------------------------

    def run_forever(self) -> None:
        """Until SIGTERM or SIGINT; then the runs in flight are stopped (``stop``)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_asked)
        logger.info("express runner: runs of %s in its queue %r, %d at once, a look every %.1f s",
                    self.deployment, EXPRESS_QUEUE, self.slots, self.poll)
        while not self.stopping:
            try:
                self.step()
            except httpx.HTTPError as error:  # Prefect away for a moment: look again
                logger.warning("express runner: the Prefect API did not answer (%s)", type(error).__name__)
                time.sleep(1.0)
            else:
                time.sleep(self.poll)
        self.stop()

    def _stop_asked(self, signum: int, frame: object) -> None:
        self.stopping = True

    def step(self) -> None:
        """One look: the runs that ended, the runs cancelled, the runs to start."""
        self._reap()
        if self.runs and time.monotonic() - self._watched >= WATCH_SECONDS:
            self._watch_cancellations()
        free = self.slots - len(self.runs)
        if free <= 0 or self.stopping:
            return
        if threading.active_count() != 1:  # a fork copies locks that other threads hold
            raise RuntimeError("the express runner has threads: it cannot fork safely")
        for flow_run_id in self._scheduled(free):
            if self.stopping:
                return
            if self._propose(flow_run_id, "PENDING", "Pending"):  # claimed: no worker takes it now
                self._start(flow_run_id)

    def _start(self, flow_run_id: str) -> None:
        try:
            pid = os.fork()
        except OSError as error:  # no memory, no process left: the run goes back to be taken
            logger.error("express runner: cannot start flow run %s (%s): it is scheduled again", flow_run_id, error)
            self._set(flow_run_id, "SCHEDULED", "Scheduled", f"the express runner could not start it ({error})")
            return
        if pid == 0:
            _run_in_child(flow_run_id)  # never returns
        self.runs[pid] = _Run(flow_run_id, pid)
        logger.info("express runner: flow run %s started (pid %d)", flow_run_id, pid)

    def _reap(self) -> None:
        """The runs whose process exited are settled (kept until Prefect could be told)."""
        for pid, run in list(self.runs.items()):
            if run.exit_code is None and not _collect(run):
                continue
            self._settle(run, run.exit_code)
            del self.runs[pid]

    def _settle(self, run: _Run, code: int) -> None:
        """A run's process exited: a run it left unfinished is ended as a worker ends one."""
        state = self._states([run.flow_run_id]).get(run.flow_run_id, "")
        if run.cancelling or state == "CANCELLING":
            # Its engine, stopped by SIGTERM, may have called the run crashed: it was cancelled.
            if state != "CANCELLED":
                self._set(run.flow_run_id, "CANCELLED", "Cancelled", "cancelled: its process was stopped")
            return
        if state in _FINAL:
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        logger.warning("express runner: flow run %s's process exited (%s) while the run was %s: crashed",
                       run.flow_run_id, how, state or "unknown")
        if self._propose(run.flow_run_id, "CRASHED", "Crashed", f"its process exited ({how})"):
            self._run_crash_hooks(run.flow_run_id)

    def _watch_cancellations(self) -> None:
        self._watched = time.monotonic()
        states = self._states([run.flow_run_id for run in self.runs.values()])
        for run in self.runs.values():
            if states.get(run.flow_run_id) == "CANCELLING" and not run.cancelling:
                run.cancelling = True
                logger.info("express runner: flow run %s is cancelled: stopping its process", run.flow_run_id)
                _signal(run.pid, signal.SIGTERM)

    def _run_crash_hooks(self, flow_run_id: str) -> None:
        """The flow's on_crashed hooks, as a worker runs them: in a process of their own
        (this one keeps no thread, and the hooks use the database)."""
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _crash_hooks(flow_run_id)
                code = 0
            except BaseException:
                logging.getLogger("scrapersky.express").exception("the crash hooks of %s failed", flow_run_id)
            finally:
                os._exit(code)
        os.waitpid(pid, 0)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to every run in flight (each saves what it knows and releases its
        batch); after ``grace`` seconds, SIGKILL to what is left."""
        for run in self.runs.values():
            _signal(run.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.runs and time.monotonic() < deadline:
            self._reap_quietly()
            time.sleep(0.1)
        for run in self.runs.values():
            _signal(run.pid, signal.SIGKILL)
        while self.runs:
            self._reap_quietly()
            time.sleep(0.05)
        self.http.close()

    def _reap_quietly(self) -> None:
        try:
            self._reap()
        except httpx.HTTPError:  # Prefect gone first: the recovery settles these runs
            for pid in [pid for pid, run in self.runs.items() if run.exit_code is not None or _collect(run)]:
                del self.runs[pid]


def _collect(run: _Run) -> bool:
    """Whether the run's process has exited (its exit code kept on the run)."""
    try:
        done, status = os.waitpid(run.pid, os.WNOHANG)
    except ChildProcessError:  # collected already: nothing known of how it ended
        done, status = run.pid, 1 << 8
    if done == 0:
        return False
    run.exit_code = os.waitstatus_to_exitcode(status)
    return True


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _run_in_child(flow_run_id: str) -> None:
    """In the forked child: the flow run, as ``python -m prefect.engine`` runs it."""
    import runpy
    import sys

    code = 1
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        os.environ["PREFECT__FLOW_RUN_ID"] = flow_run_id
        sys.argv = ["prefect.engine", flow_run_id]
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        logging.getLogger("scrapersky.express").exception("flow run %s", flow_run_id)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _crash_hooks(flow_run_id: str) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from scrapersky.flows.batch_scrape import batch_scrape

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
    for hook in batch_scrape.on_crashed_hooks:
        hook(flow=batch_scrape, flow_run=flow_run, state=flow_run.state)


def _preload() -> None:
    """What every run would import: imported once, here, before any fork."""
    import prefect.engine  # noqa: F401
    import prefect.flow_engine  # noqa: F401

    import scrapersky.flows.batch_scrape  # noqa: F401


def run_express(api_url: str, deployment: str, *, slots: int = DEFAULT_SLOTS, poll: float = POLL_SECONDS) -> None:
    """The express runner, until SIGTERM or SIGINT (``scrapersky express``)."""
    _preload()
    ExpressRunner(api_url, deployment, slots=slots, poll=poll).run_forever()
