"""`scrapersky up` as a user starts it, for the tests that need a whole stack: a
subprocess on free loopback ports, a scratch PostgreSQL database (its schema upgraded as
an operator would), the Prefect server's ``<db>_prefect`` database copied from the
session's migrated template (`up` finds it existing, so no start migrates), and the
loopback web farm behind SCRAPERSKY_CONNECT_TO. One start costs 20-40 s: a module starts
one and shares it (tests/test_up.py, tests/test_up_crowd.py).
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
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from conftest import POSTGRES_ADMIN_URL, _admin, prefect_database_from
from scrapersky.db.engine import Database
from scrapersky.farm import Farm

BIN = Path(sys.executable).parent
TOKEN = "scraper_sky_2024"  # the old dashboard's
PASSWORD = "up-test-secret-pw"  # in DATABASE_URL (the local server trusts loopback): never printed
STARTUP_TIMEOUT = 180  # on a busy machine
#: up's stop: the API 15 s, the flow runs 20 s (STOP_GRACE), the worker 5 s, the server
#: 15 s, each then SIGKILL and 5 s to be reaped.
STOP_BOUND = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def clean_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SCRAPERSKY_", "DATABASE_URL"))} | {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "NO_PROXY": "127.0.0.1,localhost",
        "COLUMNS": "250",
    } | extra


@dataclass
class Up:
    process: subprocess.Popen
    api_url: str
    ui_url: str
    tenant: uuid.UUID
    database_url: str
    database_name: str
    farm: Farm
    out: Path
    err: Path
    home: Path
    argv: list[str]
    environ: dict[str, str]

    def start_again(self) -> float:
        """`up` again, the same command in the same environment (after it stopped): the
        seconds until it is ready."""
        assert self.process.poll() is not None, "up still runs"
        self.out, self.err = self.out.with_suffix(".again.out"), self.err.with_suffix(".again.err")
        with self.out.open("wb") as stdout, self.err.open("wb") as stderr:
            self.process = subprocess.Popen(self.argv, env=self.environ, cwd=self.out.parent, stdin=subprocess.DEVNULL,
                                            stdout=stdout, stderr=stderr)
        return _wait_ready(self)

    @property
    def prefect_database_name(self) -> str:
        return f"{self.database_name}_prefect"

    def admin_url(self, database: str) -> str:
        """A plain asyncpg URL of a database on the test server (no password)."""
        return f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{database}"

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def logs(self) -> str:
        found = sorted((self.home / "scrapersky-up").glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in found)

    def api(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=f"{self.api_url}/api/v3/batch_page_scraper", trust_env=False, timeout=timeout,
                            headers={"Authorization": f"Bearer {TOKEN}"})

    def parts(self) -> list[psutil.Process]:
        """Every process below `up` now."""
        return psutil.Process(self.process.pid).children(recursive=True)

    def part(self, words: str) -> psutil.Process:
        """The one process below `up` whose command line has ``words`` (``worker start``)."""
        found = []
        for process in self.parts():
            try:
                if words in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.NoSuchProcess:
                pass
        assert len(found) == 1, f"{words!r}: {found}"
        return found[0]

    def wait_final(self, api: httpx.Client, batch_id: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = api.get(f"/batch/{batch_id}/status")
            assert status.status_code == 200, status.text
            body = status.json()
            if body["status"] in ("completed", "failed"):
                return body
            assert time.monotonic() < deadline, f"batch {batch_id} not final after {timeout} s: {body}\n{self.logs()}"
            time.sleep(0.5)


def _wait_ready(stack: Up) -> float:
    """Seconds until `up` printed that it is ready."""
    started = time.monotonic()
    while "ready" not in stack.out.read_text(errors="replace"):
        if stack.process.poll() is not None or time.monotonic() > started + STARTUP_TIMEOUT:
            raise AssertionError(f"up did not start (exit {stack.process.poll()}):\n{stack.output()}\n{stack.logs()}")
        time.sleep(0.5)
    return time.monotonic() - started


@contextmanager
def running_up(home: Path, prefect_template: str, farm: Farm, **env: str) -> Iterator[Up]:
    """`scrapersky up` ready (it printed its URLs); stopped (SIGTERM, then SIGKILL of
    what is left) and its databases dropped at the end, unless a test stopped it."""
    name = f"scrapersky_up_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    database_url = f"{base}/{name}".replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    tenant = uuid.uuid4()
    process, stack = None, None
    try:
        asyncio.run(Database(database_url).upgrade())  # as an operator would: db upgrade
        prefect_database_from(prefect_template, f"{name}_prefect")
        prefect_home = home / "prefect-home"
        api_port, ui_port = free_port(), free_port()
        environ = clean_env(
            DATABASE_URL=database_url,
            SCRAPERSKY_CONNECT_TO=" ".join(farm.connect_to()),
            SCRAPERSKY_API_TOKENS=f"{TOKEN}={tenant}",
            SCRAPERSKY_RETRY_BACKOFF="0.2",
            PREFECT_WORKER_QUERY_SECONDS="1",
        ) | env
        out, err = home / "up.out", home / "up.err"
        argv = [str(BIN / "scrapersky"), "up", "--api-port", str(api_port), "--ui-port", str(ui_port),
                "--prefect-home", str(prefect_home)]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(argv, env=environ, cwd=home, stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr)
        stack = Up(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{ui_port}", tenant, database_url,
                   name, farm, out, err, prefect_home, argv, environ)
        print(f"up ready in {_wait_ready(stack):.1f} s")
        yield stack
    finally:
        process = stack.process if stack is not None else process
        if process is not None and process.poll() is None:  # a test failed before stopping it
            try:
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            process.terminate()
            _, alive = psutil.wait_procs(tree, timeout=STOP_BOUND)
            for leftover in alive:
                leftover.kill()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}_prefect" WITH (FORCE)'))
