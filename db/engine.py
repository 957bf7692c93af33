"""The database: ``Database`` values built at the edge from ``DATABASE_URL`` and passed
down; every piece of work they run goes through one engine per process.

PostgreSQL goes through asyncpg configured to survive a transaction-mode pooler
(Supabase's Supavisor on port 6543, PgBouncer): no prepared-statement caches, no
session state, a small pre-pinged pool. The default is a SQLite file, so the
quickstart needs no server.

One engine per process: an asyncpg connection belongs to the event loop that opened
it, and our callers run on many loops (Prefect tasks, threads, the API's loop). So
every piece of work runs on one event loop of the process's own (a daemon thread,
``_DatabaseLoop``), where the engines live, one per database URL: a crowd of API
requests shares one small pool (``POOL_SIZE`` + ``MAX_OVERFLOW``) instead of opening a
connection each. Behind a transaction-mode pooler the small pool stays: every checkout
is one transaction with no session state, pre-pinged, so the pooler may hand each one
to any server connection. SQLite has no pool (``NullPool``, said here on purpose):
opening a file is cheap, and an idle pooled aiosqlite connection would hold a thread
of its own.

Every wait is bounded, here and nowhere else: ``CONNECT_TIMEOUT`` to open a
connection (a black-holed port), ``COMMAND_TIMEOUT`` for one statement of a batch's
run, ``REQUEST_COMMAND_TIMEOUT`` for one statement of an API request (a database that
stops answering costs a request a 503 within 10 s: a pre-ping of a pooled connection,
then one new connection, at most).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from scrapersky.errors import ConfigError

from .models import Base

if TYPE_CHECKING:
    from .migrate import Upgrade
    from .schema import SchemaReport

__all__ = ["Database", "create_engine", "database_url", "masked", "transaction", "unit_of_work", "init_schema"]

T = TypeVar("T")

APPLICATION_NAME = "scrapersky-batch"
#: Seconds to open a database connection (TCP, TLS and the pooler's or server's startup).
CONNECT_TIMEOUT = 4.0
#: Seconds one statement of a batch's run may take (a large batch's final persist included).
COMMAND_TIMEOUT = 60.0
#: Seconds one statement of an API request may take: with CONNECT_TIMEOUT, a database
#: that stops answering is a 503 within 10 s.
REQUEST_COMMAND_TIMEOUT = 5.0
#: The pool of the one engine a process has per PostgreSQL URL.
POOL_SIZE, MAX_OVERFLOW = 5, 5
POOLER_SAFE_CONNECT_ARGS = {
    # asyncpg's own statement cache and SQLAlchemy's prepared-statement cache both
    # name statements per connection; behind a transaction-mode pooler the next
    # transaction may land on another server connection ("prepared statement ...
    # does not exist / already exists"). Both off; asyncpg >= 0.31 then uses
    # unnamed statements only.
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    # Poolers reject unknown startup parameters; application_name is accepted.
    "server_settings": {"application_name": APPLICATION_NAME},
}


def database_url(url: str | URL) -> URL:
    """The URL to use, with plain postgresql:// URLs mapped to the asyncpg driver."""
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError("DATABASE_URL is not a database URL (driver://user:password@host:port/database)") from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"DATABASE_URL: port {port} is not a port (1-65535)")
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise ConfigError(
            f"unsupported database driver {parsed.drivername!r}: use postgresql:// or sqlite://"
        )
    return parsed


#: Query parameters that carry a secret (libpq's and asyncpg's names).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def masked(url: URL) -> str:
    """``url`` as text, every password in it masked: user:***@ and ?password=***."""
    query = {
        name: ("***" if name.lower() in _SECRET_PARAMETERS else value) for name, value in url.query.items()
    }
    return url.set(query=query).render_as_string(hide_password=True)


def create_engine(url: str | URL, *, command_timeout: float = COMMAND_TIMEOUT) -> AsyncEngine:
    """The async engine for ``url``: every wait bounded (see the module's docstring)."""
    parsed = database_url(url)
    if parsed.drivername == "postgresql+asyncpg":
        return create_async_engine(
            parsed,
            connect_args={**POOLER_SAFE_CONNECT_ARGS, "timeout": CONNECT_TIMEOUT, "command_timeout": command_timeout},
            pool_pre_ping=True,
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout=command_timeout,  # waiting for a pooled connection is bounded too
            pool_recycle=300,
        )
    # SQLite's timeout: how long a writer waits for the file's lock.
    return create_async_engine(parsed, connect_args={"timeout": 30}, poolclass=NullPool)


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """One session, one transaction: committed on success, rolled back on error."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        yield session


@asynccontextmanager
async def unit_of_work(url: str | URL) -> AsyncIterator[AsyncSession]:
    """An engine for one piece of work (a Prefect task), one transaction, then disposal.

    Tasks may run on different event loops; an asyncpg connection belongs to the
    loop that opened it, so a task never borrows another task's engine.
    """
    engine = create_engine(url)
    try:
        async with transaction(engine) as session:
            yield session
    finally:
        await engine.dispose()


async def init_schema(engine: AsyncEngine) -> None:
    """Create the tables that do not exist yet, straight from the models (idempotent).

    The tests' fast path; ``Database.upgrade`` (Alembic) is the real one. Both make the
    same tables: the migrations' drift check (tests/test_migrations.py) proves it."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


class _DatabaseLoop:
    """The process's database thread: one event loop, and on it one engine per URL (the
    last few URLs used; an older one is disposed)."""

    MAX_ENGINES = 4

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.engines: OrderedDict[tuple[str, float], AsyncEngine] = OrderedDict()
        self.thread = threading.Thread(target=self.loop.run_forever, name="scrapersky-database", daemon=True)
        self.thread.start()

    def submit(self, work: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    async def engine(self, url: URL, command_timeout: float) -> AsyncEngine:
        """(On this loop.) The engine for ``url``, made on first use."""
        key = (url.render_as_string(hide_password=False), command_timeout)
        engine = self.engines.get(key)
        if engine is None:
            engine = self.engines[key] = create_engine(url, command_timeout=command_timeout)
            while len(self.engines) > self.MAX_ENGINES:
                _, oldest = self.engines.popitem(last=False)
                await oldest.dispose()
        self.engines.move_to_end(key)
        return engine

    async def dispose(self) -> None:
        engines, self.engines = list(self.engines.values()), OrderedDict()
        for engine in engines:
            await engine.dispose()


_loop: _DatabaseLoop | None = None
_loop_lock = threading.Lock()


def _database_loop() -> _DatabaseLoop:
    """The process's database loop (a forked child makes its own: threads do not fork)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.pid != os.getpid():
            _loop = _DatabaseLoop()
        return _loop


@atexit.register
def _dispose_engines() -> None:
    """Close the pooled connections at exit (the server sees a clean goodbye)."""
    if _loop is not None and _loop.pid == os.getpid() and _loop.thread.is_alive():
        try:
            _loop.submit(_loop.dispose()).result(timeout=5)
        except Exception:  # exiting anyway
            pass


class Database:
    """Where batches are kept: a database URL (its password never shown) and the one way
    to run a piece of work against it.

    Built at the edge (CLI, flow entry, client) and passed down as a value; the engine
    behind it is the process's one for its URL (see the module's docstring), whatever
    thread or event loop the caller runs on.
    """

    def __init__(self, url: str | URL, *, command_timeout: float = COMMAND_TIMEOUT) -> None:
        self.url = database_url(url)
        self.command_timeout = command_timeout
        self._schema: SchemaReport | None = None

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    @property
    def where(self) -> str:
        """The URL with its password masked: what messages may show."""
        return masked(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def session(self) -> AsyncIterator[AsyncSession]:
        """``async with database.session() as session``: one transaction on an engine of its
        own, then disposal (tools and tests; the code's work goes through ``call``)."""
        return unit_of_work(self.url)

    async def _work(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        engine = await _database_loop().engine(self.url, self.command_timeout)
        async with transaction(engine) as session:
            return await work(session)

    async def call(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work(session)`` in one transaction, on the process's engine for this URL."""
        home = _database_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home.loop:
            return await self._work(work)
        return await asyncio.wrap_future(home.submit(self._work(work)))

    def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work(session)`` in one transaction, from synchronous code (a task, a thread)."""
        return _database_loop().submit(self._work(work)).result()

    async def checked_schema(self, session: AsyncSession) -> SchemaReport:
        """The live schema's report (``scrapersky.db.schema.checked_schema``), checked once
        per ``Database`` value (a flow run, the API process): SchemaMismatch stops the work
        that asked, and is asked again next time."""
        from .schema import checked_schema

        if self._schema is None:
            self._schema = await checked_schema(session)
        return self._schema

    async def upgrade(self) -> Upgrade:
        """Bring the schema to the head revision (Alembic; idempotent): creates the
        tables, adopts ScraperSky's, converts rows of earlier versions. Returns what it did
        (``scrapersky.db.migrate.Upgrade``)."""
        from .migrate import upgrade  # Alembic is imported only by those who migrate

        return await upgrade(self.url)

    async def init_schema(self) -> None:
        """Create the tables that do not exist yet from the models (idempotent; no
        Alembic revision recorded: the tests' fast path, see ``init_schema``)."""
        engine = create_engine(self.url)
        try:
            await init_schema(engine)
        finally:
            await engine.dispose()

    async def prepare(self) -> None:
        """The embedded SQLite default is brought to the head revision on first use (an
        older file is upgraded too), once per process; a PostgreSQL schema is created on
        purpose, with ``scrapersky db init`` / ``db upgrade``."""
        if self.is_sqlite and self.url.database not in _prepared:
            await self.upgrade()
            _prepared.add(self.url.database)

    def prepare_now(self) -> None:
        """``prepare()``, from synchronous code."""
        _database_loop().submit(self.prepare()).result()


#: SQLite files this process brought to the head revision already.
_prepared: set[str | None] = set()
