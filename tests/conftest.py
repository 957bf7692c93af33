"""Shared fixtures: one Prefect test harness per session, a local web farm, and the
database backends (a throwaway PostgreSQL database per session, a SQLite file per test)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import sys  # noqa: E402

import asyncpg  # noqa: E402
import pytest  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from scrapersky.db.engine import Database  # noqa: E402
from scrapersky.farm import Farm  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # test helpers: pgbouncer, pooler_workload

if TYPE_CHECKING:
    from pgbouncer import PgBouncer
    from stack import Stack

#: The server the tests may create databases in (the machine's PostgreSQL).
POSTGRES_ADMIN_URL = os.environ.get(
    "SCRAPERSKY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A Prefect API for the whole session (its start takes about 10 s)."""
    from prefect.settings import PREFECT_API_URL

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(autouse=True)
def no_dns_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never ask a DNS server anything (it is not on loopback): in this process the
    fetch resolver answers literal addresses and /etc/hosts names only."""
    import ipaddress

    import scrapersky.web.guard
    from scrapersky.errors import DNSFailed

    real = scrapersky.web.guard.system_resolver

    def hosts_only(host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            names = {name for line in open("/etc/hosts") for name in line.split("#")[0].split()[1:]}
            if host not in names:
                raise DNSFailed(f"{host}: tests do not query DNS (not in /etc/hosts)") from None
        return real(host, port)

    monkeypatch.setattr(scrapersky.web.guard, "system_resolver", hosts_only)


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Farm]:
    """The local web farm, with its connect-to routing in the environment (the operator's
    setting, read by every fetch in this process)."""
    with Farm() as running:
        monkeypatch.setenv("SCRAPERSKY_CONNECT_TO", " ".join(running.connect_to()))
        yield running


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped at the end of the session."""
    name = f"scrapersky_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _init(url: str) -> None:
    await Database(url).init_schema()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """DATABASE_URL for the test, on each backend, with the schema in place."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'batches.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    asyncio.run(_init(url))
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A real PgBouncer, transaction mode, default_pool_size = 2 (Supavisor's stand-in)."""
    from pgbouncer import PgBouncer

    with PgBouncer() as running:
        yield running


@pytest.fixture(scope="session")
def pooled_url(postgres_url: str, pgbouncer) -> str:
    """The session's PostgreSQL database, reached through PgBouncer, schema in place."""
    asyncio.run(_init(postgres_url))
    return pgbouncer.url(postgres_url.rsplit("/", 1)[1])


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """An empty PostgreSQL database for one test (its URL), dropped afterwards."""
    name = f"scrapersky_scratch_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def migrated_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A fresh PREFECT_HOME whose server database is already migrated: each call gives a
    new directory holding a copy of one database migrated once for the session (a
    migration costs 20+ s; the servers of the session stack, `scrapersky up` and the
    takeover test each start on a copy). Tests of a fresh home's first start use
    tmp_path instead."""
    from stack import migrated_database

    template = migrated_database(tmp_path_factory.mktemp("prefect-home-template"))

    def fresh(name: str) -> Path:
        home = tmp_path_factory.mktemp(name)
        shutil.copyfile(template, home / template.name)
        return home

    return fresh


@pytest.fixture(scope="session")
def prefect_postgres_template() -> Iterator[str]:
    """A PostgreSQL database migrated to this Prefect's head once for the session (a
    fresh one migrates for seconds on every server start): the template each
    `scrapersky up` on PostgreSQL copies into its ``<db>_prefect`` database
    (``prefect_database_from``), which `up` then finds existing. Its name."""
    import subprocess

    name = f"scrapersky_prefect_template_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")} | {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"{base}/{name}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
    }
    try:
        upgraded = subprocess.run([os.path.join(os.path.dirname(sys.executable), "prefect"), "server", "database",
                                   "upgrade", "-y"], env=env, capture_output=True, text=True, timeout=300)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        yield name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def prefect_database_from(template: str, name: str) -> None:
    """``name``, a copy of the migrated template (a file copy on the server: instant)."""
    asyncio.run(_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pooled_url: str, migrated_prefect_home: Callable[[str], Path]
) -> Iterator[Stack]:
    """One Prefect server, work pool, deployments and worker for the session (tests/stack.py):
    test_deployments.py and test_api.py share it."""
    from stack import running_stack

    with running_stack(migrated_prefect_home("prefect-home"), tmp_path_factory.mktemp("prefect-logs"),
                       pooled_url) as running:
        yield running


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest's hook)
    """The per-field accuracy table of the metadata corpora, when test_corpus ran."""
    test_corpus = sys.modules.get("test_corpus")
    if test_corpus is not None and test_corpus.SCORES:
        from corpus import table

        terminalreporter.section("metadata accuracy per corpus (correct/compared)")
        terminalreporter.write_line(table(test_corpus.SCORES))
