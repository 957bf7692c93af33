"""The vocabulary of a batch: its statuses, its run options and each domain's outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchStatus",
    "DomainStatus",
    "BatchOptions",
    "DomainOutcome",
    "BatchRequest",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USER_AGENT",
    "batch_status_for",
    "utcnow",
]

#: Tenant used when none is given (the embedded, single-user default).
DEFAULT_TENANT_ID = UUID("00000000-0000-0000-0000-000000000000")
DEFAULT_USER_AGENT = "ScraperSkyBatch/0.1 (+homepage metadata; batch scraper)"


def utcnow() -> datetime:
    return datetime.now(UTC)


class BatchStatus(StrEnum):
    """One vocabulary everywhere: pending -> running -> completed | partial | failed | cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (BatchStatus.PENDING, BatchStatus.RUNNING)


class DomainStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


def batch_status_for(*, completed: int, failed: int) -> BatchStatus:
    """The final status of a batch from its domain counts."""
    if failed == 0 and completed > 0:
        return BatchStatus.COMPLETED
    if completed == 0:
        return BatchStatus.FAILED
    return BatchStatus.PARTIAL


class BatchOptions(BaseModel):
    """How a batch fetches its domains. Shown as the run form in the Prefect UI."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(16, ge=1, le=256, description="Domains fetched at the same time.")
    connect_timeout: float = Field(10.0, gt=0, le=120, description="Seconds to open a connection.")
    read_timeout: float = Field(20.0, gt=0, le=300, description="Seconds to wait for each read.")
    total_timeout: float = Field(
        60.0, gt=0, le=900, description="Seconds for one whole fetch attempt, redirects included."
    )
    retries: int = Field(2, ge=0, le=10, description="Extra attempts after a transient failure.")
    retry_backoff: float = Field(
        2.0, ge=0, le=300, description="First retry delay in seconds; doubles each retry, with jitter."
    )
    max_page_bytes: int = Field(
        5_000_000,
        ge=1_024,
        le=100_000_000,
        description="Bytes of a page read at most; the rest is not downloaded (metadata lives in the head).",
    )
    max_redirects: int = Field(10, ge=0, le=30, description="Redirects followed at most.")
    user_agent: str = Field(DEFAULT_USER_AGENT, min_length=1, max_length=512)
    retry_after_max: float = Field(
        30.0, ge=0, le=600, description="Longest Retry-After (seconds) honoured before a retry."
    )
    respect_robots: bool = Field(
        False, description="Check robots.txt first; a disallowed homepage is robots_disallowed."
    )


class DomainOutcome(BaseModel):
    """What happened to one domain of a batch."""

    domain: str
    status: DomainStatus
    attempts: int = 0
    http_status: int | None = None
    final_url: str | None = None
    elapsed_ms: int | None = None
    error_type: str | None = None
    error: str | None = None
    truncated: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metadata: dict[str, Any] | None = None

    def status_entry(self) -> dict[str, Any]:
        """The compact entry kept under batch_metadata["domain_statuses"] (no metadata)."""
        return self.model_dump(mode="json", exclude={"domain", "metadata"})


class BatchRequest(BaseModel):
    """One batch to scrape: the flow's single parameter, shown as the run form in the
    Prefect UI, and what ``submit_batch`` sends to a deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    domains: list[str] = Field(
        min_length=1,
        description=(
            "Domains or homepage URLs (example.com, https://example.com/). Normalised and"
            " de-duplicated; an invalid entry is recorded as failed (invalid_domain), never"
            " dropped. At most SCRAPERSKY_MAX_BATCH_SIZE (10,000 by default)."
        ),
        examples=[["example.com", "example.org"]],
    )
    tenant_id: UUID = Field(DEFAULT_TENANT_ID, description="The tenant that owns the batch.")
    batch_id: UUID | None = Field(
        None,
        description=(
            "Adopt (or resume) this batch, e.g. one created pending by submit_batch."
            " Empty: the flow run's id becomes the batch id."
        ),
    )
    options: BatchOptions | None = Field(
        None, description="How to fetch. Empty: the worker's SCRAPERSKY_* settings."
    )
