"""The tables: ``batch_jobs`` (one row a batch) and ``domain_results`` (one row a scraped domain).

``batch_jobs`` matches the existing ScraperSky table so it can be adopted as is.
Per-domain entries live in ``batch_metadata["domain_results"]`` (ScraperSky's key;
compact: status, error, timings), written when the batch ends; there is no
``domain_statuses`` column. The extracted metadata,
the bulky part, lives in ``domain_results`` keyed by (batch_id, domain).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from scrapersky.batch import utcnow

__all__ = ["Base", "BatchJob", "DomainResult"]


class Base(AsyncAttrs, DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON().with_variant(JSONB(), "postgresql"),
        datetime: DateTime(timezone=True),
        uuid.UUID: Uuid(),
        str: Text(),
    }


class BatchJob(Base):
    """One batch: its progress, its outcome and every domain's status."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(index=True)
    processor_type: Mapped[str]
    status: Mapped[str]  # scrapersky.batch.BatchStatus: pending, processing, completed...
    created_by: Mapped[uuid.UUID | None]
    total_domains: Mapped[int] = mapped_column(default=0)
    completed_domains: Mapped[int] = mapped_column(default=0)
    failed_domains: Mapped[int] = mapped_column(default=0)
    progress: Mapped[float] = mapped_column(default=0.0)  # a fraction, 0-1 (ScraperSky's meaning)
    batch_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    processing_time: Mapped[float | None]  # seconds
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )


class DomainResult(Base):
    """One domain of one batch: its outcome as soon as it is known (saved while the batch
    runs, so a killed run loses nothing) and the site metadata extracted."""

    __tablename__ = "domain_results"

    # No foreign key: ScraperSky's own batch_jobs.batch_id has no unique constraint.
    batch_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(primary_key=True)
    final_url: Mapped[str | None]
    outcome: Mapped[dict[str, Any] | None]  # the compact status entry
    site_metadata: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now()
    )
