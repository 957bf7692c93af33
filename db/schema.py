"""Does the live database fit the code? Checked by ``scrapersky db check`` and once at
the start of every batch, so a mismatch stops a batch before any work instead of
failing it halfway ("Unconsumed column names", a missing ``batch_metadata``...).

Errors (the batch will not start): a missing table or column; a column whose type
cannot hold what the code writes; a column the code never writes that is NOT NULL
without a default (every insert would fail) unless it is a known ScraperSky legacy
column, which the code then fills. Notes (allowed): extra columns, timestamps
without time zone, a ``batch_id`` without a unique constraint.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    Uuid,
    inspect,
    types,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from scrapersky.errors import SchemaMismatch

from .models import Base, BatchJob

__all__ = ["SchemaReport", "check_schema", "checked_schema", "LEGACY_FILLS"]

#: ScraperSky's batch_jobs has these extra columns; when one is NOT NULL without a
#: default (id_uuid is, in the production schema), new rows get these values.
LEGACY_FILLS: dict[str, Callable[[uuid.UUID], Any]] = {
    "id_uuid": lambda batch_id: batch_id,
    "batch_id_string": str,
    "batch_id_original": str,
}

_KINDS: list[tuple[str, tuple[type, ...]]] = [
    ("uuid", (Uuid, types.UUID)),
    ("json", (JSON, JSONB)),
    ("timestamp", (DateTime,)),
    ("integer", (Integer,)),
    ("float", (Float, Numeric)),
    ("text", (String, Text)),
]


def _kind(column_type: types.TypeEngine) -> str:
    for name, classes in _KINDS:
        if isinstance(column_type, classes):
            return name
    return type(column_type).__name__.lower()


def _accepts(live: types.TypeEngine, model: types.TypeEngine, dialect: str) -> bool:
    live_kind, model_kind = _kind(live), _kind(model)
    if live_kind == model_kind:
        return True
    if dialect == "sqlite" and model_kind == "uuid":
        return live_kind == "text"  # SQLite keeps UUIDs as CHAR(32)
    return False


@dataclass
class SchemaReport:
    """What ``check_schema`` found: errors stop a batch, notes are information."""

    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    legacy_fills: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def message(self) -> str:
        lines = [f"error: {e}" for e in self.errors] + [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        if self.errors:
            raise SchemaMismatch(
                "the database schema does not fit this version of ScraperSky Batch "
                "(run `scrapersky db check`):\n" + "\n".join(f"- {e}" for e in self.errors)
            )

    def batch_table(self) -> Table:
        """``batch_jobs`` as it is live: the model's columns plus legacy columns to fill."""
        metadata = MetaData()
        columns = [column._copy() for column in BatchJob.__table__.columns]
        columns += [Column(name, Text if name != "id_uuid" else Uuid) for name in self.legacy_fills]
        return Table(BatchJob.__tablename__, metadata, *columns)


def check_schema(connection: Connection) -> SchemaReport:
    """Compare the live tables with the model (run it through ``run_sync``)."""
    report = SchemaReport()
    inspector = inspect(connection)
    dialect = connection.dialect.name
    tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            report.errors.append(f"table {table.name} is missing (run `scrapersky db upgrade`)")
            continue
        live = {c["name"]: c for c in inspector.get_columns(table.name)}
        for column in table.columns:
            found = live.get(column.name)
            if found is None:
                report.errors.append(f"{table.name}.{column.name} is missing ({column.type.compile(connection.dialect)})")
            elif not _accepts(found["type"], column.type, dialect):
                report.errors.append(
                    f"{table.name}.{column.name} is {found['type']}; the code writes "
                    f"{column.type.compile(connection.dialect)}"
                )
            elif (
                _kind(column.type) == "timestamp"
                and dialect == "postgresql"
                and not getattr(found["type"], "timezone", False)
            ):
                report.notes.append(
                    f"{table.name}.{column.name} is a timestamp without time zone: "
                    "UTC is written and read (the server's TimeZone must be UTC)"
                )
        for name in sorted(set(live) - set(table.columns.keys())):
            extra = live[name]
            required = not extra["nullable"] and extra.get("default") is None and not extra.get("autoincrement")
            if table.name == BatchJob.__tablename__ and name in LEGACY_FILLS:
                if required:
                    report.legacy_fills.append(name)
                report.notes.append(f"{table.name}.{name}: extra ScraperSky column" + (", filled on insert" if required else ""))
            elif required:
                report.errors.append(
                    f"{table.name}.{name} is NOT NULL without a default and unknown to the code: "
                    "every insert would fail"
                )
            else:
                report.notes.append(f"{table.name}.{name}: extra column, left alone")
        if table.name == BatchJob.__tablename__ and "batch_id" in live:
            unique = any(
                c.get("column_names") == ["batch_id"]
                for c in inspector.get_unique_constraints(table.name)
                + [i for i in inspector.get_indexes(table.name) if i.get("unique")]
            )
            if not unique:
                report.notes.append(
                    "batch_jobs.batch_id has no unique constraint (recommended: "
                    "CREATE UNIQUE INDEX ON batch_jobs (batch_id))"
                )
    return report


async def checked_schema(session: AsyncSession) -> SchemaReport:
    """The live schema's report; SchemaMismatch when a batch cannot be written to it
    (checked before any work: a mismatch never fails a batch halfway)."""
    report = await session.run_sync(lambda sync: check_schema(sync.connection()))
    report.raise_for_errors()
    return report
