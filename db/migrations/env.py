"""Alembic's environment: runs the revisions on the connection ``scrapersky.db.migrate``
hands over (``config.attributes["connection"]``, a synchronous view of one of our async
engines' connections), or, when Alembic is run on its own, on an engine built like
``Database``'s (pooler-safe asyncpg, or aiosqlite) from ``sqlalchemy.url``.

SQLite alters tables in batch mode (copy and swap). Only our two tables are compared by
the drift check: ScraperSky's other tables in the same database are none of its business.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from scrapersky.db.engine import create_engine
from scrapersky.db.models import Base

config = context.config
target_metadata = Base.metadata
OUR_TABLES = frozenset(target_metadata.tables)


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    if type_ == "table":
        return name in OUR_TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in OUR_TABLES


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_on_own_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("scrapersky's migrations run against a database, not as an SQL script")

connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database: run `scrapersky db upgrade` (it reads DATABASE_URL)")
    asyncio.run(run_on_own_engine(url))
