"""domain_batch vocabulary: our earlier rows converted to ScraperSky's meanings.

Before this revision ScraperSky Batch wrote ``processor_type='domain_metadata'``,
``progress`` as a percentage (0-100) and ``running`` for a batch being worked on; the
code now writes ScraperSky's own vocabulary: ``processor_type='domain_batch'``,
``progress`` as a 0-1 fraction and ``processing``. Only rows with
``processor_type='domain_metadata'`` are converted (they are ours: ScraperSky never
wrote that value), so ScraperSky's rows are never touched, and a row converted once is
never converted again. ``updated_at`` is left as it was.

Revision ID: 0002_domain_batch_vocabulary
Revises: 0001_baseline
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_domain_batch_vocabulary"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE batch_jobs SET "
            "processor_type = 'domain_batch', "
            "progress = progress / 100.0, "
            "status = CASE WHEN status = 'running' THEN 'processing' ELSE status END "
            "WHERE processor_type = 'domain_metadata'"
        )
    )


def downgrade() -> None:
    raise NotImplementedError(
        "0002 is not undone: a converted row cannot be told from one ScraperSky wrote"
    )
