"""baseline: batch_jobs and domain_results, created when missing, adopted when there.

An existing ``batch_jobs`` (ScraperSky's production table, or ours from ``db init``) is
adopted as it is: its rows, its types (timestamps without time zone), its extra columns
and its non-unique ``batch_id`` are left alone (``scrapersky db check`` recommends the
unique index); only the tenant index is created when there is none. A ``batch_jobs``
that lacks a column the code writes is not altered: the upgrade stops (and, on
PostgreSQL, rolls back) naming the columns, for its owner to decide.

An existing ``domain_results`` can only be ours, from ``db init`` before Alembic, in
one of its earlier shapes (see the module ``scrapersky.db.migrate``): its foreign key to
``batch_jobs.batch_id`` is dropped, ``outcome`` added, ``site_metadata`` made nullable.

The columns are written out here, frozen: a later change of the models is a new revision.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from scrapersky.errors import SchemaMismatch

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)

#: SQLite names no foreign key; batch mode names them by this convention to drop one.
SQLITE_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def batch_jobs_columns() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("processor_type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("total_domains", sa.Integer(), nullable=False),
        sa.Column("completed_domains", sa.Integer(), nullable=False),
        sa.Column("failed_domains", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Double(), nullable=False),
        sa.Column("batch_metadata", JSON, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("start_time", TIMESTAMP, nullable=True),
        sa.Column("end_time", TIMESTAMP, nullable=True),
        sa.Column("processing_time", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
    ]


def domain_results_columns() -> list[sa.Column]:
    return [
        sa.Column("batch_id", sa.Uuid(), primary_key=True),
        sa.Column("domain", sa.Text(), primary_key=True),
        sa.Column("final_url", sa.Text(), nullable=True),
        sa.Column("outcome", JSON, nullable=True),
        sa.Column("site_metadata", JSON, nullable=True),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
    ]


def _nullable_copy(column: sa.Column) -> sa.Column:
    """``column`` as added to a table that has rows: nullable, no default (no rewrite)."""
    return sa.Column(column.name, column.type, nullable=True)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "batch_jobs" in tables:
        _adopt_batch_jobs(inspector)
    else:
        op.create_table("batch_jobs", *batch_jobs_columns(), sa.UniqueConstraint("batch_id"))
        op.create_index("ix_batch_jobs_tenant_id", "batch_jobs", ["tenant_id"])
    if "domain_results" in tables:
        _adopt_domain_results(inspector)
    else:
        op.create_table("domain_results", *domain_results_columns())


def _adopt_batch_jobs(inspector: sa.Inspector) -> None:
    live = {column["name"] for column in inspector.get_columns("batch_jobs")}
    missing = [column.name for column in batch_jobs_columns() if column.name not in live]
    if missing:
        raise SchemaMismatch(
            "the existing batch_jobs lacks columns this version writes; it is not altered: "
            + ", ".join(f"batch_jobs.{name} is missing" for name in missing)
            + " (add them, then run `scrapersky db upgrade` again)"
        )
    indexed = [index["column_names"] for index in inspector.get_indexes("batch_jobs")]
    if ["tenant_id"] not in indexed:
        op.create_index("ix_batch_jobs_tenant_id", "batch_jobs", ["tenant_id"])


def _adopt_domain_results(inspector: sa.Inspector) -> None:
    live = {column["name"]: column for column in inspector.get_columns("domain_results")}
    foreign_keys = inspector.get_foreign_keys("domain_results")
    missing = [column for column in domain_results_columns() if column.name not in live]
    required_metadata = "site_metadata" in live and not live["site_metadata"]["nullable"]
    if not (foreign_keys or missing or required_metadata):
        return
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("domain_results", naming_convention=SQLITE_NAMES if sqlite else None) as table:
        for foreign_key in foreign_keys:
            name = foreign_key["name"] or SQLITE_NAMES["fk"] % {
                "table_name": "domain_results",
                "column_0_name": foreign_key["constrained_columns"][0],
                "referred_table_name": foreign_key["referred_table"],
            }
            table.drop_constraint(name, type_="foreignkey")
        for column in missing:
            table.add_column(_nullable_copy(column))
        if required_metadata:
            table.alter_column("site_metadata", existing_type=live["site_metadata"]["type"], nullable=True)


def downgrade() -> None:
    raise NotImplementedError(
        "0001_baseline is not undone: its tables may be ScraperSky's own batch_jobs and the batches in them"
    )
