"""``scrapersky up``: the whole local stack in one command.

In order, each part healthy before the next: a Prefect server (``prefect server start``,
UI and API on one port, its own ``PREFECT_HOME``), the ``scrapersky`` process work pool,
the deployments of ``prefect.yaml`` (built from the installed package, see
``scrapersky.deployments``), a Prefect worker on the pool, and the HTTP API
(``scrapersky api``). Every part is configured by the environment, as a worker is
(``DATABASE_URL``, ``SCRAPERSKY_*``), with ``PREFECT_API_URL`` pointing at the server.

Stopping (Ctrl-C, SIGTERM, or a part that dies): the API, then the worker, then the
server, each with every process below it (flow runs live in sessions of their own, so
the tree is walked, not only the process group): SIGTERM, a bounded wait, then SIGKILL.
Each part is tied to this process by ``PR_SET_PDEATHSIG``, so even a SIGKILL of ``up``
takes the parts down with it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import ConfigError, ScraperSkyError
from .local_server import STARTUP_TIMEOUT, tied_command

__all__ = ["StackConfig", "run_stack", "shared_database_url", "default_prefect_home", "StackError"]

#: Seconds a part has to exit after SIGTERM before SIGKILL (a server flushing its events
#: takes a few).
STOP_TIMEOUT = 15.0
#: Seconds the worker and the API each have to become healthy.
PART_TIMEOUT = 120.0


class StackError(ScraperSkyError):
    """A part of the stack could not start or died: one line saying which and why."""

    error_type = "stack"


def default_prefect_home() -> Path:
    """Where ``up`` keeps its Prefect server's database: ``~/.scrapersky/prefect``
    (not the user's own ``~/.prefect``: the stack's runs and deployments stay its own)."""
    return Path("~/.scrapersky/prefect").expanduser()


def shared_database_url(url: str) -> str:
    """``url`` as every process of the stack must see it: a relative SQLite path made
    absolute (the worker's flow runs start in a directory of their own); an in-memory
    SQLite database cannot be shared and is refused."""
    from scrapersky.db.engine import database_url

    parsed = database_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database in (None, "", ":memory:") or (parsed.query or {}).get("mode") == "memory":
            raise ConfigError("an in-memory SQLite database cannot be shared by the stack's processes: "
                              "use a file (sqlite:///path.db) or PostgreSQL")
        if not os.path.isabs(parsed.database):
            parsed = parsed.set(database=os.path.abspath(parsed.database))
        return parsed.render_as_string(hide_password=False)
    return url


@dataclass(frozen=True)
class StackConfig:
    host: str = "127.0.0.1"
    api_port: int = 8000
    ui_port: int = 4200
    prefect_home: Path = field(default_factory=default_prefect_home)
    database_url: str = ""  # already shared_database_url()'d
    work_pool: str = "scrapersky"
    #: What the parts inherit (this process's environment, by default).
    environ: dict[str, str] | None = None

    def url(self, port: int) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host in ("::", "::1") else self.host
        return f"http://{host}:{port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.url(self.ui_port)}/api"


@dataclass
class Part:
    name: str
    process: subprocess.Popen
    log: Path

    def died(self) -> str | None:
        """None while running; else one line: the exit code and the log's last line."""
        if self.process.poll() is None:
            return None
        # The last line that says something (not a frame of a rich box).
        lines = [line.strip(" \t│╭╮╰╯─") for line in self.log.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        last = lines[-1][:300] if lines else "(no output)"
        return f"the {self.name} exited with {self.process.returncode}: {last} (log: {self.log})"


class _Stop(BaseException):
    """SIGTERM or SIGINT: stop the stack."""


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "taken"
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return False


def _check_ports(config: StackConfig) -> None:
    if config.api_port == config.ui_port:
        raise ConfigError(f"--api-port and --ui-port are both {config.api_port}: give two ports")
    for option, port in (("--ui-port", config.ui_port), ("--api-port", config.api_port)):
        if _port_taken(config.host, port):
            raise ConfigError(f"port {port} on {config.host} is taken ({option}): stop what uses it or pick another")


# -- processes ------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, from /proc; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def process_tree(pid: int) -> dict[int, int]:
    """``pid`` and every process below it, each with its start time (so that a reused
    pid is not mistaken for one of ours)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[2]
    tree, todo = {}, [pid]
    while todo and len(tree) < 10_000:
        current = todo.pop()
        if current in starts and current not in tree:
            tree[current] = starts[current]
            todo.extend(children.get(current, []))
    return tree


def _alive(pid: int, start: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == start and stat[1] not in ("Z", "X")


def _signal_all(tree: dict[int, int], sig: signal.Signals) -> None:
    for pid, start in tree.items():
        if _alive(pid, start):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def stop_part(part: Part, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to the part and everything below it, up to ``timeout`` s, then SIGKILL."""
    tree = process_tree(part.process.pid)
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        part.process.poll()  # reap our own child
        tree = {pid: start for pid, start in tree.items() if _alive(pid, start)}
        # Processes started meanwhile (a flow run being launched) are ours too.
        if part.process.poll() is None:
            tree |= process_tree(part.process.pid)
        if not tree:
            return
        time.sleep(0.1)
    _signal_all(tree, signal.SIGKILL)
    try:
        part.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


# -- the stack ------------------------------------------------------------------

class Stack:
    def __init__(self, config: StackConfig, say: Callable[[str], None]) -> None:
        self.config = config
        self.say = say
        self.parts: list[Part] = []
        self.logs = config.prefect_home / "scrapersky-up"
        base = dict(os.environ if config.environ is None else config.environ)
        base.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        self.env = base | {
            "PREFECT_HOME": str(config.prefect_home),
            "PREFECT_API_URL": config.prefect_api_url,
            "PREFECT_UI_API_URL": config.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "DATABASE_URL": config.database_url,
            "NO_PROXY": ",".join(filter(None, [base.get("NO_PROXY"), "127.0.0.1", "localhost", "::1"])),
        }
        self.env.pop("SCRAPERSKY_DATABASE_URL", None)  # DATABASE_URL above is the one
        self.env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")  # a local worker picks runs up fast

    def _start(self, name: str, log_name: str, argv: list[str]) -> Part:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{log_name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                tied_command(argv), env=self.env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches `up` only: it stops the parts in order
                cwd=self.config.prefect_home,
            )
        part = Part(name, process, log)
        self.parts.append(part)
        return part

    def _wait(self, part: Part, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            died = part.died()
            if died:
                raise StackError(died)
            try:
                if ready():
                    return
            except (httpx.TransportError, OSError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"the {part.name} did not become healthy within {timeout:.0f} s (log: {part.log})")
            time.sleep(0.25)

    def start(self) -> None:
        config = self.config
        _check_ports(config)
        http = httpx.Client(trust_env=False, timeout=3.0)
        try:
            self._start_server(http)
            self._start_worker()
            self._start_api(http)
        finally:
            http.close()

    def _start_api(self, http: httpx.Client) -> None:
        """``scrapersky api``, healthy when its /health is (database, Prefect API and our
        worker all answer); a timeout names the checks that failed."""
        config = self.config
        self.say(f"starting the API on {config.url(config.api_port)}")
        api = self._start("API", "api", [sys.executable, "-m", "scrapersky.cli", "api", "--host", config.host,
                                         "--port", str(config.api_port), "--pool", config.work_pool])
        last: dict = {}

        def healthy() -> bool:
            response = http.get(f"{config.url(config.api_port)}/health", timeout=10.0)
            last.update(response.json() if response.headers.get("content-type", "").startswith("application/json")
                        else {"status": response.status_code})
            return response.status_code == 200

        try:
            self._wait(api, healthy, PART_TIMEOUT)
        except StackError as exc:
            failing = {name: check.get("reason") for name, check in (last.get("checks") or {}).items()
                       if isinstance(check, dict) and check.get("status") != "ok"}
            if failing and "did not become healthy" in str(exc):
                raise StackError(f"the API is not healthy after {PART_TIMEOUT:.0f} s: "
                                 + "; ".join(f"{name}: {reason}" for name, reason in failing.items())) from None
            raise

    def _start_server(self, http: httpx.Client) -> None:
        config = self.config
        config.prefect_home.mkdir(parents=True, exist_ok=True)
        self.say(f"starting the Prefect server on {config.url(config.ui_port)} (PREFECT_HOME {config.prefect_home})")
        # The lock the CLI's own servers take: one start, and its migrations, at a time.
        with (config.prefect_home / "scrapersky-server.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            server = self._start("Prefect server", "prefect-server", [
                sys.executable, "-m", "prefect", "server", "start", "--host", config.host,
                "--port", str(config.ui_port)])
            self._wait(server, lambda: http.get(f"{config.prefect_api_url}/health").status_code == 200,
                       STARTUP_TIMEOUT)

    def _start_worker(self) -> None:
        import asyncio

        config = self.config
        self.say(f"creating the work pool {config.work_pool!r} and the deployments")
        from .deployments import deployments

        applied = asyncio.run(self._deploy(deployments(config.work_pool)))
        self.say("deployments: " + ", ".join(applied))
        name = f"scrapersky-up-{socket.gethostname()}-{os.getpid()}"
        worker = self._start("worker", "worker", [
            sys.executable, "-m", "prefect", "worker", "start", "--pool", config.work_pool, "--type", "process",
            "--name", name])
        self._wait(worker, lambda: asyncio.run(self._worker_online(name)), PART_TIMEOUT)

    async def _deploy(self, built: list) -> list[str]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from .deployments import apply_deployments, ensure_work_pool

        with temporary_settings(updates={PREFECT_API_URL: self.config.prefect_api_url}):
            async with get_client() as client:
                await ensure_work_pool(client, self.config.work_pool)
            return list(await apply_deployments(built))

    async def _worker_online(self, name: str) -> bool:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.config.prefect_api_url}):
            async with get_client() as client:
                workers = await client.read_workers_for_work_pool(self.config.work_pool)
        return any(w.name == name and str(getattr(w.status, "value", w.status)).upper() == "ONLINE"
                   for w in workers)

    def watch(self) -> None:
        """Until a signal: a part that dies stops the stack with its reason."""
        while True:
            for part in self.parts:
                died = part.died()
                if died:
                    raise StackError(died)
            time.sleep(0.5)

    def stop(self) -> None:
        for part in reversed(self.parts):  # the API, the worker, then the server
            stop_part(part)


def run_stack(config: StackConfig, say: Callable[[str], None], *, announce: Callable[[StackConfig], None]) -> None:
    """Start the stack, ``announce`` it, run until SIGTERM/SIGINT, stop it; a part that
    cannot start or dies raises StackError (one line) after everything is stopped."""
    stack = Stack(config, say)
    with ExitStack() as cleanup, _stop_on_signals():
        config.prefect_home.mkdir(parents=True, exist_ok=True)
        lock = cleanup.enter_context((config.prefect_home / "scrapersky-up.lock").open("w"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `scrapersky up` runs on PREFECT_HOME {config.prefect_home}: "
                              "stop it, or give --prefect-home") from None
        try:
            stack.start()
            announce(config)
            stack.watch()
        except _Stop as stop:
            say(f"{stop.args[0]}: stopping")
        finally:
            # A second Ctrl-C while stopping must not leave parts behind: ignore it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.stop()
