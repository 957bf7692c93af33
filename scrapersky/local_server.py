"""A Prefect server of the command's own, for runs when no ``PREFECT_API_URL`` is set.

Prefect would start a temporary server itself, but a SIGKILL of the command left that
server running for good (about 230 MB each), and two commands starting on a fresh
``PREFECT_HOME`` raced on its database migrations ("table ... already exists"). This
one is ``prefect server start`` on a free loopback port, tied to this process by the
kernel (``PR_SET_PDEATHSIG``: it gets SIGTERM when the command dies, however it dies),
started under a lock on ``PREFECT_HOME`` so that one server at a time migrates, and
stopped gently at the end, once the events it still holds are written: this process's
events are sent first, then the server's task-run recorder is given its flush interval
to write them. (Prefect's recorder writes one event per transaction by default: after a
batch of a few hundred domains it was still seconds behind when stopped, and logged
``Error flushing 1 events`` with CancelledError tracebacks, losing those task-run
states. Here it writes what arrived each second in one transaction.)
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .errors import ConfigError

__all__ = ["prefect_api", "tied_command", "free_port", "wait_healthy", "STARTUP_TIMEOUT"]

#: Seconds a fresh PREFECT_HOME may take to migrate on a busy machine (Prefect's own
#: default, 20 s, was seen to run out on 2 cores); the user's
#: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins when set.
STARTUP_TIMEOUT = 180.0
#: The server's task-run recorder: events written per transaction (Prefect's default: 1)
#: and seconds between writes (Prefect's default: 5); the user's
#: PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE / _FLUSH_INTERVAL win when set.
RECORDER_BATCH_SIZE = 500
RECORDER_FLUSH_INTERVAL = 1
_PR_SET_PDEATHSIG = 1


#: Run first in a child process: ask the kernel for SIGTERM when the command is gone
#: (kept across exec), then become the program. (A preexec_fn would do the same but is
#: unsafe in a process with threads.) Arguments: the parent's pid, then the program's argv.
_LAUNCH = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): os._exit(1)  # the command died before that\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def tied_command(argv: list[str]) -> list[str]:
    """``argv`` (its first item an absolute path) run so that it gets SIGTERM when this
    process is gone, however it goes (``PR_SET_PDEATHSIG``, set before the exec).

    Start it from the main thread: the kernel signals when the *thread* that started the
    child ends."""
    return [sys.executable, "-c", _LAUNCH, str(os.getpid()), *argv]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def prefect_api(startup_timeout: float | None = None) -> Iterator[str]:
    """The Prefect API URL to run flows against: the configured one, else a server of
    this process's own for as long as the block runs."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, get_current_settings, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    current = get_current_settings().server
    if startup_timeout is None:
        given = "startup_timeout_seconds" in current.ephemeral.model_fields_set
        startup_timeout = current.ephemeral.startup_timeout_seconds if given else STARTUP_TIMEOUT
    recorder = current.services.task_run_recorder
    given = recorder.model_fields_set
    flush_interval = recorder.flush_interval if "flush_interval" in given else RECORDER_FLUSH_INTERVAL
    batch_size = recorder.batch_size if "batch_size" in given else RECORDER_BATCH_SIZE
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_UI_ENABLED="false", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL=str(flush_interval),
               PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=str(batch_size))
    with (home / "scrapersky-server.lock").open("w") as lock, (home / "scrapersky-server.log").open("ab") as log:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one start, and its migrations, at a time
        server = subprocess.Popen(
            tied_command([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                          "--port", str(port)]),
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        try:
            wait_healthy(server, url, startup_timeout, home / "scrapersky-server.log")
        except BaseException:
            _stop(server)
            raise
        fcntl.flock(lock, fcntl.LOCK_UN)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:
                _settle(flush_interval)
    finally:
        _stop(server)


def _settle(flush_interval: float) -> None:
    """Let the server write what it was told before it is stopped: this process's
    pending events sent (bounded), then one flush interval of the server's task-run
    recorder, and a little more."""
    from prefect.events.worker import EventsWorker

    try:
        EventsWorker.drain_all(timeout=10, at_exit=False)
    except Exception:  # nothing could be sent: nothing is left for the server to flush
        return
    time.sleep(min(flush_interval, 10.0) + 0.5)


def wait_healthy(server: subprocess.Popen, url: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                raise ConfigError(f"the local Prefect server exited with {server.returncode}: {tail[0][:300]}")
            try:
                if client.get(f"{url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise ConfigError(f"the local Prefect server did not answer within {timeout:.0f} s (see {log})")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
