"""ScraperSky's old batch API, as its clients read it: the request and response models
of its ``batch_page_scraper`` router and the pure functions that turn our batch into
them.

The contract is the old code (``src/models/api_models.py``, ``src/schemas/job.py``,
``src/services/batch/batch_functions.py``), not its docstrings: ``progress`` is a
0-1 fraction; a batch ends ``completed`` or ``failed``, the words the old dashboard
polls for. Our words, mapped on these routes only:

    ours        old routes   why
    pending     pending
    processing  processing   (``running`` in rows our earlier versions wrote)
    completed   completed    (``complete`` in rows the old system wrote)
    partial     completed    some domains failed: ``failed_domains`` says how many
    failed      failed
    cancelled   failed       the reason in ``error``

Each domain's entry keeps ours (``started_at``, ``finished_at``, ``elapsed_ms``,
``error_type``, ``http_status``, ``final_url``, ``attempts``...) beside the old keys
``status``, ``start_time``, ``end_time``, ``processing_time`` (seconds) and ``error``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from scrapersky.db.batches import BatchStatusReport

from ..batch import BatchStatus
from ..settings import DEFAULT_MAX_BATCH_SIZE

__all__ = [
    "ROUTER_PREFIX",
    "MAX_DOMAIN_CHARS",
    "ENTRIES_PER_DOMAIN",
    "MAX_PAGES",
    "batch_request_model",
    "BatchRequest",
    "BatchResponse",
    "BatchStatusResponse",
    "SitemapScrapingRequest",
    "SitemapScrapingResponse",
    "JobStatusResponse",
    "legacy_status",
    "legacy_error",
    "legacy_domain_entry",
    "batch_status_url",
    "job_status_url",
    "batch_status_response",
    "job_status_response",
]

ROUTER_PREFIX = "/api/v3/batch_page_scraper"
#: Longer entries are refused, not recorded (no domain name or homepage URL is this long).
MAX_DOMAIN_CHARS = 2_048
#: A request carries at most this many entries for each domain a batch may have
#: (SCRAPERSKY_MAX_BATCH_SIZE): room for duplicates and invalid entries, no more.
ENTRIES_PER_DOMAIN = 2
#: The highest ``max_pages`` accepted (the old API's default; only the homepage is scraped).
MAX_PAGES = 1_000

DomainEntry = Annotated[str, StringConstraints(max_length=MAX_DOMAIN_CHARS)]

#: Where the old routes' words differ from ours (older stored words are read first).
_OLD_ROUTE_WORDS = {BatchStatus.PARTIAL: "completed", BatchStatus.CANCELLED: "failed"}


def legacy_status(status: str) -> str:
    """The old API's word for a batch status (an unknown word is passed on as it is)."""
    ours = BatchStatus.read(str(status))
    if ours is None:
        return str(status)
    return _OLD_ROUTE_WORDS.get(ours, ours.value)


def legacy_error(status: str, error: str | None) -> str | None:
    """The batch's ``error`` on the old routes: a cancelled batch, shown ``failed``
    there, always says why."""
    if str(status) == "cancelled":
        return f"cancelled: {error}" if error else "cancelled"
    return error


def batch_status_url(batch_id: UUID | str) -> str:
    return f"{ROUTER_PREFIX}/batch/{batch_id}/status"


def job_status_url(job_id: UUID | str) -> str:
    return f"{ROUTER_PREFIX}/status/{job_id}"


def _iso(moment: datetime | str | None) -> str | None:
    return moment.isoformat() if isinstance(moment, datetime) else moment


def _seconds(milliseconds: Any) -> float | None:
    return milliseconds / 1000.0 if isinstance(milliseconds, (int, float)) else None


def legacy_domain_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One domain's entry with the old keys beside ours. An entry the old system wrote
    (it has them already) is returned as it is."""
    old = {
        "status": legacy_status(entry["status"]) if entry.get("status") else entry.get("status"),
        "start_time": entry.get("started_at"),
        "end_time": entry.get("finished_at"),
        "processing_time": _seconds(entry.get("elapsed_ms")),
        "error": entry.get("error"),
    }
    return {**entry, **{key: value for key, value in old.items() if key not in entry or entry[key] is None}}


_DOMAINS_DESCRIPTION = (
    "Domains or homepage URLs to scrape: at most SCRAPERSKY_MAX_BATCH_SIZE distinct domains, and at most"
    " {entries} entries (twice that limit), each at most %d characters." % MAX_DOMAIN_CHARS
)


class _Legacy(BaseModel):
    # Unknown fields of old clients are accepted and ignored, as the old router did.
    model_config = ConfigDict(extra="ignore")


class BatchRequest(_Legacy):
    """The old ``POST /batch`` body."""

    domains: list[DomainEntry] = Field(
        ..., max_length=ENTRIES_PER_DOMAIN * DEFAULT_MAX_BATCH_SIZE,
        description=_DOMAINS_DESCRIPTION.format(entries=ENTRIES_PER_DOMAIN * DEFAULT_MAX_BATCH_SIZE),
        examples=[["ok-1.test", "ok-2.test"]],
    )
    max_pages: int = Field(
        MAX_PAGES, ge=1, le=MAX_PAGES,
        description="Recorded in the batch's options; only the homepage is scraped, as before.",
    )
    max_concurrent: int | None = Field(
        None, ge=1, le=256,
        description="Domains fetched at the same time (our `concurrency`); empty: the worker's setting.",
    )
    batch_id: UUID | None = Field(
        None, description="The batch id (a UUID; generated when empty). The same id again is the same batch."
    )
    tenant_id: UUID | None = Field(None, description="Must be the token's tenant when given.")


def batch_request_model(max_batch_size: int) -> type[BatchRequest]:
    """``BatchRequest`` taking at most ENTRIES_PER_DOMAIN x ``max_batch_size`` entries: a
    longer list is refused before any entry is read (pydantic checks a list's length
    before its items)."""
    entries = ENTRIES_PER_DOMAIN * max_batch_size
    domains = Field(..., max_length=entries, description=_DOMAINS_DESCRIPTION.format(entries=entries),
                    examples=[["ok-1.test", "ok-2.test"]])
    return create_model("BatchRequest", __base__=BatchRequest, __module__=__name__,
                        domains=(list[DomainEntry], domains))


class BatchResponse(BaseModel):
    """The old ``POST /batch`` answer."""

    batch_id: str = Field(..., description="Batch ID for tracking the scan")
    status_url: str = Field(..., description="URL to check the status of the batch")
    job_count: int = Field(..., description="Number of jobs in the batch")
    created_at: str | None = Field(None, description="When the batch was created")


class BatchStatusResponse(BaseModel):
    """The old ``GET /batch/{batch_id}/status`` answer, and our own status word."""

    batch_id: str
    status: str = Field(..., description="pending, processing, completed or failed (the old words)")
    total_domains: int = 0
    completed_domains: int = 0
    failed_domains: int = 0
    progress: float = Field(0.0, description="Domains done, as a fraction 0-1 (as the old code returned)")
    created_at: str | None = None
    updated_at: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    processing_time: float | None = Field(None, description="Seconds; while running, so far")
    domain_statuses: dict[str, Any] | None = Field(None, description="Every domain finished so far")
    error: str | None = None
    metadata: dict[str, Any] | None = None
    batch_status: str = Field(
        ..., description="The status in ScraperSky Batch's words (partial, cancelled... are told apart)"
    )


class SitemapScrapingRequest(_Legacy):
    """The old ``POST /scan`` body: one domain."""

    base_url: DomainEntry = Field(..., description="The domain or homepage URL", examples=["ok-1.test"])
    max_pages: int = Field(MAX_PAGES, ge=1, le=MAX_PAGES,
                           description="Recorded in the batch's options; only the homepage is scraped.")
    tenant_id: UUID | None = Field(None, description="Must be the token's tenant when given.")


class SitemapScrapingResponse(BaseModel):
    """The old ``POST /scan`` answer."""

    job_id: str
    status_url: str
    created_at: str | None = None


class JobStatusResponse(BaseModel):
    """The old ``GET /status/{job_id}`` answer (``src/schemas/job.py``), plus ``domain``
    as the old router returned it."""

    job_id: UUID
    status: str = Field(..., description="pending, processing, completed or failed (the old words)")
    progress: float = Field(0.0, description="0.0 to 1.0")
    domain_id: UUID | None = None
    created_by: UUID | None = None
    result_data: dict[str, Any] | None = Field(None, description="The homepage's site metadata, once scraped")
    error: str | None = None
    job_metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    domain: str | None = None


def _processing_time(report: BatchStatusReport, now: datetime) -> float | None:
    """Seconds the batch took, or has taken so far while it runs (as the old code did)."""
    if report.processing_time is not None:
        return report.processing_time
    if report.start_time is not None and report.end_time is None:
        return max(0.0, (now - report.start_time).total_seconds())
    return None


def batch_status_response(report: BatchStatusReport, *, now: datetime) -> BatchStatusResponse:
    """Our batch as the old status route returned it."""
    status = str(report.status)
    return BatchStatusResponse(
        batch_id=str(report.batch_id),
        status=legacy_status(status),
        total_domains=report.total_domains,
        completed_domains=report.completed_domains,
        failed_domains=report.failed_domains,
        progress=report.progress,
        created_at=_iso(report.created_at),
        updated_at=_iso(report.updated_at),
        start_time=_iso(report.start_time),
        end_time=_iso(report.end_time),
        processing_time=_processing_time(report, now),
        domain_statuses={domain: legacy_domain_entry(entry) for domain, entry in report.domain_statuses.items()},
        error=legacy_error(status, report.error),
        metadata=report.metadata,
        batch_status=status,
    )


def job_status_response(report: BatchStatusReport, *, domain: str | None) -> JobStatusResponse:
    """A batch of one domain as the old single-domain status route returned it: the
    domain's site metadata is ``result_data``, its outcome is in ``job_metadata``."""
    status = str(report.status)
    entry = dict(report.domain_statuses.get(domain) or {}) if domain else {}
    result_data = entry.pop("metadata", None)
    error = legacy_error(status, report.error)
    if error is None and entry.get("status") == "failed":
        error = f"{entry.get('error_type')}: {entry.get('error')}"
    return JobStatusResponse(
        job_id=report.batch_id,
        status=legacy_status(status),
        progress=report.progress,
        created_by=report.created_by,
        result_data=result_data,
        error=error,
        job_metadata={**report.metadata, "batch_status": status,
                      "outcome": legacy_domain_entry(entry) if entry else None},
        created_at=report.created_at,
        updated_at=report.updated_at,
        domain=domain,
    )
