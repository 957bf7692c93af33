"""domain_batch vocabulary: our earlier rows converted to ScraperSky's meanings.

Before this revision ScraperSky Batch wrote ``processor_type='domain_metadata'``,
``progress`` as a percentage (0-100), ``running`` for a batch being worked on, and each
domain's entry under ``batch_metadata["domain_statuses"]`` (``started_at``,
``finished_at``). The code now writes ScraperSky's own vocabulary:
``processor_type='domain_batch'``, ``progress`` as a 0-1 fraction, ``processing``, and
the entries under ``batch_metadata["domain_results"]`` with ScraperSky's keys beside ours
(``start_time``, ``end_time``, ``processing_time`` in seconds).

Only rows with ``processor_type='domain_metadata'`` are converted: they are ours
(ScraperSky never wrote that value), so ScraperSky's rows are never touched, and a row
converted once is never converted again. ``updated_at`` is left as it was.

Revision ID: 0002_domain_batch_vocabulary
Revises: 0001_baseline
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_domain_batch_vocabulary"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

OURS = "domain_metadata"

batch_jobs = sa.table(
    "batch_jobs",
    sa.column("id", sa.Integer()),
    sa.column("processor_type", sa.Text()),
    sa.column("batch_metadata", sa.JSON().with_variant(JSONB(), "postgresql")),
)


def _seconds(start: Any, end: Any) -> float | None:
    try:
        return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def entry_in_scrapersky_keys(entry: dict[str, Any]) -> dict[str, Any]:
    """One of our earlier domain entries, with ScraperSky's keys beside ours."""
    return {
        **entry,
        "start_time": entry.get("started_at"),
        "end_time": entry.get("finished_at"),
        "processing_time": _seconds(entry.get("started_at"), entry.get("finished_at")),
    }


def metadata_in_scrapersky_keys(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """``metadata`` with its domain_statuses moved to domain_results; None when it has none."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get("domain_statuses"), dict):
        return None
    converted = {key: value for key, value in metadata.items() if key != "domain_statuses"}
    converted["domain_results"] = {
        domain: entry_in_scrapersky_keys(entry) if isinstance(entry, dict) else entry
        for domain, entry in metadata["domain_statuses"].items()
    }
    return converted


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(batch_jobs.c.id, batch_jobs.c.batch_metadata).where(batch_jobs.c.processor_type == OURS)
    ).all()
    for row_id, metadata in rows:
        converted = metadata_in_scrapersky_keys(metadata)
        if converted is not None:
            bind.execute(batch_jobs.update().where(batch_jobs.c.id == row_id).values(batch_metadata=converted))
    op.execute(
        sa.text(
            "UPDATE batch_jobs SET "
            "processor_type = 'domain_batch', "
            "progress = progress / 100.0, "
            "status = CASE WHEN status = 'running' THEN 'processing' ELSE status END "
            f"WHERE processor_type = '{OURS}'"
        )
    )


def downgrade() -> None:
    raise NotImplementedError(
        "0002 is not undone: a converted row cannot be told from one ScraperSky wrote"
    )
