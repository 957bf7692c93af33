"""The database: one ``Database`` value per process, built at the edge from
``DATABASE_URL`` and passed down.

PostgreSQL goes through asyncpg configured to survive a transaction-mode pooler
(Supabase's Supavisor on port 6543, PgBouncer): no prepared-statement caches, no
session state, a small pre-pinged pool. The default is a SQLite file, so the
quickstart needs no server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from scrapersky.errors import ConfigError

from .models import Base

if TYPE_CHECKING:
    from .migrate import Upgrade

__all__ = ["Database", "create_engine", "database_url", "masked", "transaction", "unit_of_work", "init_schema"]

T = TypeVar("T")

APPLICATION_NAME = "scrapersky-batch"
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


def create_engine(url: str | URL) -> AsyncEngine:
    """The async engine for ``url``."""
    parsed = database_url(url)
    if parsed.drivername == "postgresql+asyncpg":
        return create_async_engine(
            parsed,
            connect_args=dict(POOLER_SAFE_CONNECT_ARGS),
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=3,
            pool_recycle=300,
        )
    return create_async_engine(parsed, connect_args={"timeout": 30})


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


class Database:
    """Where batches are kept: a database URL (its password never shown) and the one way
    to run a piece of work against it.

    Built once at the edge (CLI, flow entry, client) and passed down as a value. Each
    piece of work gets its own engine and transaction: tasks run on different event
    loops, and an asyncpg connection belongs to the loop that opened it.
    """

    def __init__(self, url: str | URL) -> None:
        self.url = database_url(url)

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
        """``async with database.session() as session``: one transaction, then disposal."""
        return unit_of_work(self.url)

    async def call(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work(session)`` in one transaction."""
        async with self.session() as session:
            return await work(session)

    def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work(session)`` in one transaction, from synchronous code (a task, a thread)."""
        return asyncio.run(self.call(work))

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
        older file is upgraded too); a PostgreSQL schema is created on purpose, with
        ``scrapersky db init`` / ``db upgrade``."""
        if self.is_sqlite:
            await self.upgrade()
