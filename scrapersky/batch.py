"""The vocabulary of a batch: its statuses, its run options and each domain's outcome."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "BatchStatus",
    "ACTIVE_STATUS_WORDS",
    "DomainStatus",
    "BatchOptions",
    "DomainOutcome",
    "BatchRequest",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USER_AGENT",
    "batch_status_for",
    "utcnow",
    "stored_text",
    "stored_value",
    "fit_metadata",
    "MAX_ERROR_CHARS",
    "MAX_METADATA_BYTES",
]

#: Tenant used when none is given (the embedded, single-user default).
DEFAULT_TENANT_ID = UUID("00000000-0000-0000-0000-000000000000")
DEFAULT_USER_AGENT = "ScraperSkyBatch/0.1 (+homepage metadata; batch scraper)"


def utcnow() -> datetime:
    return datetime.now(UTC)


class BatchStatus(StrEnum):
    """One vocabulary everywhere, ScraperSky's own words as its ``batch_jobs`` holds them:
    pending -> processing -> completed | partial | failed | cancelled."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (BatchStatus.PENDING, BatchStatus.PROCESSING)

    @classmethod
    def read(cls, word: str | None) -> BatchStatus | None:
        """A stored status word as this vocabulary: ours, ScraperSky's older words
        (``complete``, ``error``) and ours of earlier versions (``running``); None for a
        word no one defined."""
        if word is None:
            return None
        try:
            return cls(word)
        except ValueError:
            return _OLDER_WORDS.get(word)


#: Status words other writers of batch_jobs used: ScraperSky's model wrote ``complete``
#: and its service ``error``; earlier versions of ours wrote ``running``.
_OLDER_WORDS = {
    "complete": BatchStatus.COMPLETED,
    "error": BatchStatus.FAILED,
    "running": BatchStatus.PROCESSING,
}

#: Every stored word of a batch still to be worked on (for queries on the column).
ACTIVE_STATUS_WORDS = ("pending", "processing", "running")


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

    # Defaults for the real web (README, "Scale"): it is network-bound, a host that hangs
    # holds a slot for a whole timeout on every attempt, and 16 at a time left the cores idle.
    concurrency: int = Field(100, ge=1, le=256, description="Domains fetched at the same time.")
    connect_timeout: float = Field(5.0, gt=0, le=120, description="Seconds to open a connection.")
    read_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to wait for each read.")
    total_timeout: float = Field(
        30.0, gt=0, le=900, description="Seconds for one whole fetch attempt, redirects included."
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

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> BatchOptions:
        """The options a batch_jobs row keeps: the keys other writers put beside ours
        (the old API's ``max_pages``, ScraperSky's ``max_concurrent``) are not options."""
        return cls(**{key: value for key, value in stored.items() if key in cls.model_fields})


#: What one domain's outcome may store. PostgreSQL refuses NUL (and lone surrogates,
#: which are not UTF-8) in text and jsonb; a batch must never fail on one bad string.
MAX_ERROR_CHARS = 1_000  # a failed domain's error message
MAX_URL_CHARS = 8_192  # the final URL (a real fetched URL; longer ones are cut)
MAX_METADATA_BYTES = 65_536  # the site metadata of one domain, as compact UTF-8 JSON
#: Domains a flow-run parameter carries at most (JSON); Prefect refuses parameters over
#: 512 KiB. A larger batch is registered first and its run reads the recorded domains.
MAX_INLINE_DOMAINS_BYTES = 256 * 1024
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def stored_text(text: str, limit: int | None = None) -> str:
    """``text`` as the database can keep it: NUL removed, a lone surrogate replaced by
    U+FFFD, at most ``limit`` characters (the cut ends with "…")."""
    if _UNSTORABLE.search(text):
        text = _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def stored_value(value: Any) -> Any:
    """A JSON value with every string (keys included) made storable by ``stored_text``."""
    if isinstance(value, str):
        return stored_text(value)
    if isinstance(value, dict):
        return {stored_text(str(key)): stored_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored_value(item) for item in value]
    return value


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "replace"))


def _shrink(value: Any) -> Any:
    """About half of a value: the first half of a string, a list or a dict; None when
    nothing smaller is left (the field is then dropped: a reader gets its default)."""
    if isinstance(value, str) and len(value) > 1:
        return value[: len(value) // 2]
    if isinstance(value, list) and len(value) > 1:
        return value[: len(value) // 2]
    if isinstance(value, dict) and len(value) > 1:
        return dict(list(value.items())[: len(value) // 2])
    return None


def fit_metadata(metadata: dict[str, Any], max_bytes: int = MAX_METADATA_BYTES) -> dict[str, Any]:
    """Metadata whose JSON fits ``max_bytes``: the largest field is halved (strings,
    lists and dicts keep their beginning), at last dropped, until it fits; each field
    cut is named in ``truncated_fields``."""
    if _json_size(metadata) <= max_bytes:
        return metadata
    fitted = dict(metadata)
    truncated: list[str] = [str(name) for name in fitted.get("truncated_fields") or []][:64]
    sizes = {key: _json_size(value) for key, value in fitted.items() if key != "truncated_fields"}
    while sizes and sum(sizes.values()) + _json_size(truncated) + 32 * len(fitted) > max_bytes:
        key = max(sizes, key=sizes.__getitem__)
        if key not in truncated:
            truncated.append(key)
        shrunk = _shrink(fitted[key])
        if shrunk is None:
            del fitted[key], sizes[key]
        else:
            fitted[key] = shrunk
            sizes[key] = _json_size(shrunk)
    fitted["truncated_fields"] = truncated
    return fitted


class DomainOutcome(BaseModel):
    """What happened to one domain of a batch.

    Built, every string is storable (``stored_text``: no NUL, no lone surrogate), the
    error message is at most MAX_ERROR_CHARS characters and the metadata at most
    MAX_METADATA_BYTES of JSON (``fit_metadata``): what reaches the database is made
    safe here, once."""

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

    @field_validator("domain", "error_type")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        return None if value is None else stored_text(value, 2_048)

    @field_validator("final_url")
    @classmethod
    def _storable_url(cls, value: str | None) -> str | None:
        return None if value is None else stored_text(value, MAX_URL_CHARS)

    @field_validator("error")
    @classmethod
    def _storable_error(cls, value: str | None) -> str | None:
        return None if value is None else stored_text(value, MAX_ERROR_CHARS)

    @field_validator("metadata")
    @classmethod
    def _storable_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else fit_metadata(stored_value(value))

    def status_entry(self) -> dict[str, Any]:
        """The compact entry kept for this domain (no metadata): ours, and beside it the
        keys ScraperSky's readers know (``start_time``, ``end_time``, ``processing_time``
        in seconds; ``status`` and ``error`` are shared)."""
        entry = self.model_dump(mode="json", exclude={"domain", "metadata"})
        entry["start_time"] = entry["started_at"]
        entry["end_time"] = entry["finished_at"]
        entry["processing_time"] = (
            round((self.finished_at - self.started_at).total_seconds(), 3)
            if self.started_at is not None and self.finished_at is not None else None
        )
        return entry


class BatchRequest(BaseModel):
    """One batch to scrape: the flow's single parameter, shown as the run form in the
    Prefect UI, and what ``submit_batch`` sends to a deployment."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        # The rule of _domains_or_a_registered_batch, for whoever validates the JSON schema
        # alone (Prefect refuses such a run with 409 before it exists).
        json_schema_extra={"anyOf": [
            {"required": ["domains"], "properties": {"domains": {"minItems": 1}}},
            {"required": ["batch_id"], "properties": {"batch_id": {"type": "string"}}},
        ]},
    )

    domains: list[str] = Field(
        default_factory=list,
        description=(
            "Domains or homepage URLs (ok-1.test, https://ok-1.test/). Normalised and"
            " de-duplicated; an invalid entry is recorded as failed (invalid_domain), never"
            " dropped. At most SCRAPERSKY_MAX_BATCH_SIZE (10,000 by default). Empty with a"
            " batch_id: the domains that batch was registered with (submit_batch)."
        ),
        examples=[["ok-1.test", "ok-2.test"]],
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
    generation: int | None = Field(
        None, ge=0,
        description=(
            "Which run of the batch this is (set by submit_batch and the recovery: a run of a"
            " submission that was answered already, or replaced, does nothing). Empty: a"
            " person's own start, which may also resume a batch that ended failed or cancelled."
        ),
    )

    @model_validator(mode="after")
    def _domains_or_a_registered_batch(self) -> BatchRequest:
        if not self.domains and self.batch_id is None:
            raise ValueError("domains: give at least one domain (or the batch_id of a registered batch)")
        return self

    @property
    def by_reference(self) -> bool:
        """The domains are the batch's recorded ones (a large batch travels this way:
        Prefect refuses flow-run parameters over 512 KiB)."""
        return not self.domains

    @staticmethod
    def fits_parameters(domains: list[str]) -> bool:
        """Whether these entries may travel inline as a flow-run parameter."""
        return _json_size(domains) <= MAX_INLINE_DOMAINS_BYTES
