"""``scrapersky up``: the whole local stack in one command.

In order, each part healthy before the next: a Prefect server (``prefect server start``,
UI and API on one port, its own ``PREFECT_HOME``), the ``scrapersky`` process work pool,
the deployments of ``prefect.yaml`` (built from the installed package, see
``scrapersky.deployments``), a Prefect worker on the pool, one run of the recovery
deployment, and the HTTP API (``scrapersky api``). Every part is configured by the
environment, as a worker is (``DATABASE_URL``, ``SCRAPERSKY_*``), with
``PREFECT_API_URL`` pointing at the server.

Where the server keeps its state: with a PostgreSQL ``DATABASE_URL``, in a database of
its own beside ours on the same server, ``<our database>_prefect`` (created when
missing), because SQLite under ``PREFECT_HOME`` answered 503 "database is locked" to a
crowd of concurrent submissions; ``PREFECT_API_DATABASE_CONNECTION_URL`` (or its
current name, ``PREFECT_SERVER_DATABASE_CONNECTION_URL``) in the environment wins; with
SQLite batches, Prefect's SQLite file under ``PREFECT_HOME``.

A worker or an API that dies while the stack runs is started again (a worker under a
new name; the flow runs the dead worker left are stopped first, so that they release
their batches, and the recovery deployment is asked for a run once the new worker is
online, which resumes them at once rather than at its next 5-minute schedule). More than
``MAX_RESTARTS`` restarts of one part within ``RESTART_WINDOW`` seconds stop the stack
with the reason; the Prefect server dying stops it at once.

Stopping (Ctrl-C, SIGTERM, or a part that cannot be kept up), in order, each part with
every process below it (flow runs live in sessions of their own, so the tree is walked,
not only the process group): the API first (no new batches); then the worker's flow
runs, which get ``STOP_GRACE`` (20 s) to save what they know and release their batches
while the server and the database are still there (the worker frozen meanwhile: a
stopping Prefect worker kills its flow runs at once, and would start new ones), then
the worker; then the server. Each gets SIGTERM, then SIGKILL after its grace. A second
Ctrl-C while stopping is said and otherwise ignored: the order is kept, and the grace
periods bound the whole stop (about a minute at most). Each part is tied to this process
by ``PR_SET_PDEATHSIG``, so even a SIGKILL of ``up`` takes the parts down with it (but
for a SIGKILL in the seconds the worker is frozen: it stays frozen); ``up`` is the
subreaper of everything below it, so the flow runs of a worker that died are still
found.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .errors import ConfigError, ScraperSkyError
from .local_server import STARTUP_TIMEOUT, tied_command

__all__ = ["StackConfig", "PrefectDatabase", "run_stack", "shared_database_url", "prefect_database",
           "default_prefect_home", "StackError", "STOP_GRACE"]

#: Seconds the API and the Prefect server each have to exit after SIGTERM before
#: SIGKILL (a server flushing its events takes a few).
STOP_TIMEOUT = 15.0
#: Seconds the worker and its flow runs have after SIGTERM to save what they know and
#: release their batches (a released batch is resumed by the next recovery run), before
#: SIGKILL.
STOP_GRACE = 20.0
#: Seconds the worker itself has to exit once its flow runs are gone (an idle worker
#: takes about one).
WORKER_STOP_TIMEOUT = 5.0
#: Seconds the worker and the API each have to become healthy.
PART_TIMEOUT = 120.0
#: A worker or API that dies is started again, up to this many times within
#: RESTART_WINDOW seconds; one more death stops the stack.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: Prefect's setting for its server's database, current name first (the second is the
#: older one, still read by Prefect 3).
PREFECT_DATABASE_SETTINGS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
#: The server's own database beside ours: ``<our database>_prefect``.
PREFECT_DATABASE_SUFFIX = "_prefect"
#: The deployment asked for a run once a worker is online (see the module docstring).
RECOVERY_DEPLOYMENT = "recover-stale-batches/recover-stale-batches"
_PR_SET_CHILD_SUBREAPER = 36
_POSTGRES_NAME_BYTES = 63  # NAMEDATALEN - 1: a longer name is cut, and would not be found


class StackError(ScraperSkyError):
    """A part of the stack could not start or died: one line saying which and why."""

    error_type = "stack"


def default_prefect_home() -> Path:
    """Where ``up`` keeps its Prefect server's home: ``~/.scrapersky/prefect`` (not the
    user's own ``~/.prefect``: the stack's runs and deployments stay its own)."""
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


# -- where the Prefect server keeps its state ---------------------------------------

@dataclass(frozen=True)
class PrefectDatabase:
    """Where the stack's Prefect server keeps its state (flow runs, deployments, workers,
    concurrency slots)."""

    #: The server's connection URL (its password in it: not in the repr); None:
    #: Prefect's SQLite file under PREFECT_HOME.
    url: str | None = field(default=None, repr=False)
    #: ``<our database>_prefect``, ``up``'s to create when missing (a URL given in the
    #: environment is used as is).
    create: bool = False

    def where(self, prefect_home: Path) -> str:
        """The URL to show: its password masked."""
        from sqlalchemy import make_url

        from scrapersky.db.engine import masked

        if self.url is None:
            return f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}"
        try:
            return masked(make_url(self.url))
        except Exception:  # Prefect will say what is wrong with it; never echo it here
            return f"(the URL in {PREFECT_DATABASE_SETTINGS[0]})"


def prefect_database(database_url: str, environ: Mapping[str, str]) -> PrefectDatabase:
    """Where the server keeps its state: ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` or
    ``PREFECT_API_DATABASE_CONNECTION_URL`` as given; else, for a PostgreSQL
    ``database_url``, the database ``<its name>_prefect`` on the same server with the
    same credentials (driver asyncpg, as Prefect wants); else (SQLite) Prefect's file
    under PREFECT_HOME."""
    from scrapersky.db.engine import database_url as parse

    for setting in PREFECT_DATABASE_SETTINGS:
        if environ.get(setting):
            return PrefectDatabase(environ[setting])
    ours = parse(database_url)
    if ours.drivername.startswith("sqlite"):
        return PrefectDatabase()
    name = f"{ours.database or ours.username or 'postgres'}{PREFECT_DATABASE_SUFFIX}"
    if len(name.encode()) > _POSTGRES_NAME_BYTES:
        raise ConfigError(f"the Prefect server's database would be {name!r}, longer than PostgreSQL's "
                          f"{_POSTGRES_NAME_BYTES} bytes: set PREFECT_API_DATABASE_CONNECTION_URL")
    url = ours.set(drivername="postgresql+asyncpg", database=name)
    return PrefectDatabase(url.render_as_string(hide_password=False), create=True)


async def ensure_prefect_database(database_url: str, prefect: PrefectDatabase) -> bool:
    """Create ``prefect``'s database unless it exists, connected to ours (asyncpg, no
    statement cache: a pooler may sit in between); True when it was created. Anything
    in the way is one line saying to create it or to point Prefect elsewhere."""
    from sqlalchemy import make_url, text
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    from scrapersky.db.engine import database_url as parse, masked

    ours = parse(database_url)
    name = make_url(prefect.url).database
    engine = create_async_engine(ours, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={
        "statement_cache_size": 0, "prepared_statement_cache_size": 0, "timeout": 15, "command_timeout": 60})
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(text("select 1 from pg_database where datname = :name"), {"name": name})
            if found:
                return False
            quoted = name.replace('"', '""')
            await connection.execute(text(f'CREATE DATABASE "{quoted}"'))
            return True
    except (DBAPIError, OSError, asyncio.TimeoutError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = reason.__cause__ or reason  # asyncpg's own error, under SQLAlchemy's adapter
        if getattr(reason, "sqlstate", None) == "42P04":  # duplicate_database: another `up` made it meanwhile
            return False
        raise StackError(f"cannot create the Prefect server's database {name!r} through {masked(ours)} "
                         f"({type(reason).__name__}: {reason}): create it, or set "
                         "PREFECT_API_DATABASE_CONNECTION_URL") from None
    finally:
        await engine.dispose()


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
    #: Where the server keeps its state (``prefect_database()``).
    prefect_database: PrefectDatabase = field(default_factory=PrefectDatabase)

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
        return f"the {self.name} exited with {self.process.returncode}: {self.last_line()} (log: {self.log})"

    def last_line(self) -> str:
        # The last line that says something (not a frame of a rich box).
        lines = [line.strip(" \t│╭╮╰╯─") for line in self.log.read_text(errors="replace").splitlines()]
        lines = [line for line in lines if line]
        return lines[-1][:300] if lines else "(no output)"


class _Stop(BaseException):
    """SIGTERM or SIGINT: stop the stack."""


class _Signals:
    """SIGTERM and SIGINT: the first stops the stack (``_Stop``, raised where the main
    thread is); once stopping, a later one is only noted, said by ``stop`` between two
    waits (not from the handler: a print there could land inside another print)."""

    def __init__(self) -> None:
        self.stopping = False
        self.noted: list[str] = []

    def handler(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            self.noted.append(name)
            return
        self.stopping = True
        raise _Stop(name)


@contextmanager
def _handling(signals: _Signals) -> Iterator[None]:
    previous = {sig: signal.signal(sig, signals.handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _subreaper() -> Iterator[None]:
    """This process adopts the orphans below it (the flow runs of a worker that died),
    instead of init: they stay in reach of ``stop``."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


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


def process_tree(pid: int, skip: frozenset[int] = frozenset()) -> dict[int, int]:
    """``pid`` and every process below it, except those below a pid in ``skip`` (and
    those pids), each with its start time (so that a reused pid is not mistaken for one
    of ours)."""
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
        if current in starts and current not in tree and current not in skip:
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


def _reap(tree: dict[int, int], keep: int | None) -> None:
    """Collect the exit status of those in ``tree`` that were handed to this process
    (orphans, ``up`` being their subreaper) and have exited; ``keep``'s is its Popen's."""
    for pid in tree:
        if pid != keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours to wait for
                pass


def stop_tree(tree: dict[int, int], timeout: float, *, root: subprocess.Popen | None = None,
              signalled: frozenset[int] = frozenset(), waiting: Callable[[], None] = lambda: None) -> None:
    """SIGTERM to every process of ``tree`` (but those ``signalled`` already: one
    SIGTERM each, a second may mean "at once" to it), up to ``timeout`` s for them to
    exit, then SIGKILL. ``root``: the part's own process, whose children started
    meanwhile (a flow run being launched) are taken in too while it lives; ``waiting``:
    called between two looks (a second Ctrl-C is said there)."""
    keep = root.pid if root is not None else None
    _signal_all({pid: start for pid, start in tree.items() if pid not in signalled}, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if root is not None:
            root.poll()  # reap our own child
        _reap(tree, keep)
        tree = {pid: start for pid, start in tree.items() if _alive(pid, start)}
        if root is not None and root.poll() is None:
            added = process_tree(root.pid)
            _signal_all({pid: start for pid, start in added.items() if pid not in tree}, signal.SIGTERM)
            tree |= added
        if not tree:
            return
        waiting()
        time.sleep(0.1)
    _signal_all(tree, signal.SIGKILL)
    if root is not None:
        try:
            root.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid, start) for pid, start in tree.items()):
        _reap(tree, keep)
        time.sleep(0.05)
    _reap(tree, keep)


def stop_part(part: Part, timeout: float = STOP_TIMEOUT, *, also: dict[int, int] | None = None,
              waiting: Callable[[], None] = lambda: None) -> None:
    """SIGTERM to the part, everything below it and ``also``, up to ``timeout`` s,
    then SIGKILL."""
    stop_tree(process_tree(part.process.pid) | (also or {}), timeout, root=part.process, waiting=waiting)


# -- the stack ------------------------------------------------------------------

class Stack:
    def __init__(self, config: StackConfig, say: Callable[[str], None], signals: _Signals | None = None) -> None:
        self.config = config
        self.say = say
        self.signals = signals or _Signals()
        self.server: Part | None = None
        self.worker: Part | None = None
        self.express: Part | None = None
        self.api: Part | None = None
        self.worker_name = ""
        self.restarts: dict[str, deque[float]] = {}
        self.started: dict[str, int] = {}  # part name -> how many times started
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
        # The server's database is the server's only: not in the worker's (nor its flow
        # runs') environment, nor the API's.
        for setting in PREFECT_DATABASE_SETTINGS:
            self.env.pop(setting, None)
        self.server_env = dict(self.env)
        if config.prefect_database.url is not None:
            self.server_env[PREFECT_DATABASE_SETTINGS[0]] = config.prefect_database.url

    @property
    def parts(self) -> list[Part]:
        """In the order they start (and stop in reverse)."""
        return [part for part in (self.server, self.worker, self.express, self.api) if part is not None]

    def _start(self, name: str, log_name: str, argv: list[str], env: dict[str, str] | None = None) -> Part:
        """Start a part (from the main thread: ``tied_command``); a restarted part logs
        to a file of its own (``worker-2.log``), the dead one's log kept."""
        count = self.started[name] = self.started.get(name, 0) + 1
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / (f"{log_name}.log" if count == 1 else f"{log_name}-{count}.log")
        with log.open("wb") as handle:
            process = subprocess.Popen(
                tied_command(argv), env=env or self.env, stdin=subprocess.DEVNULL, stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches `up` only: it stops the parts in order
                cwd=self.config.prefect_home,
            )
        return Part(name, process, log)

    def _wait(self, part: Part, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for watched in (part, self.server):
                died = watched.died() if watched is not None else None
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
        if config.prefect_database.create and asyncio.run(
                ensure_prefect_database(config.database_url, config.prefect_database)):
            self.say(f"created the Prefect server's database {config.prefect_database.where(config.prefect_home)}")
        http = httpx.Client(trust_env=False, timeout=3.0)
        try:
            self._start_server(http)
            self._deploy_all()
            self._start_worker()
            self._start_express()
            self._start_api(http)
        finally:
            http.close()

    def _start_api(self, http: httpx.Client) -> None:
        """``scrapersky api``, healthy when its /health is (database, Prefect API and our
        worker all answer); a timeout names the checks that failed."""
        config = self.config
        self.say(f"starting the API on {config.url(config.api_port)}")
        api = self.api = self._start("API", "api", [
            sys.executable, "-m", "scrapersky.cli", "api", "--host", config.host, "--port", str(config.api_port),
            "--pool", config.work_pool])
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
            server = self.server = self._start("Prefect server", "prefect-server", [
                sys.executable, "-m", "prefect", "server", "start", "--host", config.host,
                "--port", str(config.ui_port)], env=self.server_env)
            self._wait(server, lambda: http.get(f"{config.prefect_api_url}/health").status_code == 200,
                       STARTUP_TIMEOUT)

    def _deploy_all(self) -> None:
        config = self.config
        self.say(f"creating the work pool {config.work_pool!r} and the deployments")
        from .deployments import deployments

        applied = asyncio.run(self._deploy(deployments(config.work_pool)))
        self.say("deployments: " + ", ".join(applied))

    def _start_worker(self) -> None:
        """A worker on the pool, under a name of its own (a restarted one under a new
        name: the dead one stays ONLINE in Prefect until its heartbeats are missed),
        online; then one run of the recovery deployment."""
        config = self.config
        count = self.started.get("worker", 0) + 1
        name = f"scrapersky-up-{socket.gethostname()}-{os.getpid()}" + (f"-{count}" if count > 1 else "")
        self.say(f"starting the worker {name}")
        worker = self.worker = self._start("worker", "worker", [
            sys.executable, "-m", "prefect", "worker", "start", "--pool", config.work_pool, "--type", "process",
            "--name", name, *([] if self.express_off else ["--work-queue", "default"])])
        self.worker_name = name
        self._wait(worker, lambda: asyncio.run(self._worker_online(name)), PART_TIMEOUT)
        self._ask_for_recovery()

    @property
    def express_off(self) -> bool:
        return self.env.get("SCRAPERSKY_EXPRESS_MAX", "").strip() == "0"

    def _start_express(self) -> None:
        """The express runner (small batches' runs start at once: scrapersky/express.py),
        unless SCRAPERSKY_EXPRESS_MAX is 0; ready when it says it looks for runs."""
        if self.express_off:
            return
        self.say("starting the express runner (batches of a few domains start at once)")
        express = self.express = self._start("express runner", "express", [
            sys.executable, "-m", "scrapersky.cli", "express"])
        self._wait(express, lambda: "express runner:" in express.log.read_text(errors="replace"), PART_TIMEOUT)

    def _ask_for_recovery(self) -> None:
        """One run of the recovery deployment now: the batches a stop or a crash left
        resumable are resumed at once, not at its next schedule. Not being able to ask
        is a warning (the schedule still runs it)."""
        try:
            run = asyncio.run(self._create_recovery_run())
        except Exception as exc:
            self.say(f"warning: could not ask for a run of {RECOVERY_DEPLOYMENT} ({type(exc).__name__}: {exc}); "
                     "its schedule runs it within 5 minutes")
        else:
            self.say(f"asked for a run of {RECOVERY_DEPLOYMENT} ({run}): it resumes what a stop or crash left")

    async def _create_recovery_run(self) -> str:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.config.prefect_api_url}):
            async with get_client() as client:
                deployment = await client.read_deployment_by_name(RECOVERY_DEPLOYMENT)
                run = await client.create_flow_run_from_deployment(deployment.id, parameters={})
        return run.name

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

    # -- while running ------------------------------------------------------------

    def watch(self) -> None:
        """Until a signal: a worker or API that dies is started again; the server dying,
        or a part dying too often, stops the stack with the reason."""
        while True:
            for part in self.parts:
                died = part.died()
                if died:
                    if part is self.server:
                        raise StackError(died)
                    self._restart(part, died)
                    break  # look at every part afresh
            self._reap_orphans()
            time.sleep(0.5)

    def _restart(self, part: Part, died: str) -> None:
        now = time.monotonic()
        recent = self.restarts.setdefault(part.name, deque())
        while recent and now - recent[0] > RESTART_WINDOW:
            recent.popleft()
        if len(recent) >= MAX_RESTARTS:
            raise StackError(f"{died}; restarted {MAX_RESTARTS} times within {RESTART_WINDOW:.0f} s already")
        recent.append(now)
        self.say(f"the {part.name} exited with {part.process.returncode}: restarting "
                 f"(its last line: {part.last_line()}; log: {part.log})")
        try:
            if part is self.worker:
                left = self._orphans()
                if left:
                    self.say(f"stopping the {len(left)} process(es) the worker left (its flow runs release their "
                             f"batches; at most {STOP_GRACE:.0f} s)")
                    stop_tree(left, STOP_GRACE)
                self._start_worker()
                self.say(f"the worker is online again as {self.worker_name}")
            elif part is self.express:
                self._start_express()
                self.say("the express runner looks for runs again")
            else:
                with httpx.Client(trust_env=False, timeout=3.0) as http:
                    self._start_api(http)
                self.say("the API is healthy again")
        except StackError:
            started = {id(self.worker): self.worker, id(self.express): self.express}.get(id(part), self.api)
            if (self.server is not None and self.server.died()) or started is part \
                    or started is None or started.process.poll() is None:
                raise  # the server died, or the new one is not healthy in time
            # It died again while starting: the next look restarts it, within the same bound.

    def _orphans(self) -> dict[int, int]:
        """Processes below ``up`` that no running part owns: the flow runs of a worker
        that died (handed to ``up``, their subreaper), or a part half-started when a
        signal came."""
        running = frozenset(part.process.pid for part in self.parts if part.process.poll() is None)
        tree = process_tree(os.getpid(), skip=running)
        tree.pop(os.getpid(), None)
        return tree

    def _reap_orphans(self) -> None:
        """Orphans that exited on their own are collected, not left as zombies: looked
        at without being collected first (WNOWAIT), so that a part's exit status stays
        its Popen's."""
        ours = {part.process.pid: part.process for part in self.parts}
        for _ in range(100):
            try:
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # no child at all
                return
            if exited is None:
                return
            if exited.si_pid in ours:
                ours.pop(exited.si_pid).poll()  # a part: its Popen collects it (and keeps its exit code)
                continue
            try:
                os.waitpid(exited.si_pid, 0)
            except ChildProcessError:
                pass

    # -- stopping -----------------------------------------------------------------

    def _say_noted(self) -> None:
        if self.signals.noted:
            name = self.signals.noted[-1]
            self.signals.noted.clear()
            self.say(f"{name} again: already stopping, in order (the API, the worker and its flow runs within "
                     f"{STOP_GRACE:.0f} s, then the server)")

    def _stop_worker(self) -> None:
        """The worker and the express runner are frozen first (SIGSTOP): they take no new
        run meanwhile, and do not stop their flow runs themselves, as a Prefect worker does
        when it stops: at once, before they could release their batches. Their flow runs
        (and those of a worker that died) get SIGTERM and ``STOP_GRACE``; then each gets
        SIGTERM, is let go on (SIGCONT: the SIGTERM comes first) and has
        ``WORKER_STOP_TIMEOUT``."""
        takers = [part for part in (self.worker, self.express) if part is not None and part.process.poll() is None]
        for part in takers:
            os.kill(part.process.pid, signal.SIGSTOP)
        runs = self._orphans()
        for part in takers:
            runs |= {pid: start for pid, start in process_tree(part.process.pid).items() if pid != part.process.pid}
        if runs:
            self.say(f"stopping the worker's flow runs ({len(runs)} process(es)): they save what they know and "
                     f"release their batches, within {STOP_GRACE:.0f} s")
            stop_tree(runs, STOP_GRACE, waiting=self._say_noted)
        for part in takers:
            os.kill(part.process.pid, signal.SIGTERM)
            os.kill(part.process.pid, signal.SIGCONT)
            stop_tree(process_tree(part.process.pid), WORKER_STOP_TIMEOUT, root=part.process,
                      signalled=frozenset({part.process.pid}), waiting=self._say_noted)

    def stop(self) -> None:
        """The API (no new batches), then the worker's flow runs and any orphan
        (``STOP_GRACE``: they save and release their batches while the server and the
        database are still up) and the worker, then the server, then whatever is left."""
        self.signals.stopping = True
        if self.api is not None:
            stop_part(self.api, STOP_TIMEOUT, waiting=self._say_noted)
        self._stop_worker()
        if self.server is not None:
            stop_part(self.server, STOP_TIMEOUT, waiting=self._say_noted)
        left = self._orphans()
        if left:
            stop_tree(left, 5.0)
        self._say_noted()


def run_stack(config: StackConfig, say: Callable[[str], None], *, announce: Callable[[StackConfig], None]) -> None:
    """Start the stack, ``announce`` it, run until SIGTERM/SIGINT, stop it; a part that
    cannot start or be kept up raises StackError (one line) after everything is stopped."""
    signals = _Signals()
    stack = Stack(config, say, signals)
    with ExitStack() as cleanup, _handling(signals), _subreaper():
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
            # From here on a signal is noted, not raised: the parts stop in order, bounded.
            signals.stopping = True
            stack.stop()
