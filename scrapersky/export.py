"""A batch's domains as rows: CSV (flattened metadata) or JSON lines (nested)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

from scrapersky.metadata.contacts import SOCIAL_NETWORKS
from scrapersky.metadata.tech_stack import CATEGORIES as TECH_CATEGORIES

__all__ = ["CSV_COLUMNS", "flat_row", "write_csv", "write_jsonl"]

CSV_COLUMNS = (
    "domain", "status", "attempts", "http_status", "final_url", "elapsed_ms", "error_type", "error",
    "truncated", "started_at", "finished_at",
    "title", "description", "keywords", "language", "canonical_url", "site_name", "image",
    "favicon_url", "logo_url", "emails", "phones",
    *(f"social_{network}" for network in SOCIAL_NETWORKS),
    "organization_name", "organization_telephone", "organization_email", "organization_address",
    *(f"tech_{category}" for category in TECH_CATEGORIES),
)
_LIST_SEPARATOR = "; "


def _entries(report: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    return iter(sorted(report.domain_statuses.items()))


def _technologies(items: list[dict[str, Any]]) -> str:
    return _LIST_SEPARATOR.join(
        " ".join(part for part in (item.get("name"), item.get("version") or item.get("id")) if part)
        for item in items
    )


def flat_row(domain: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: the domain's status and its metadata, lists joined with '; '."""
    row: dict[str, Any] = {"domain": domain}
    row.update({key: entry.get(key) for key in CSV_COLUMNS[1:11]})
    # Entries ScraperSky wrote name their times as its status endpoint did.
    row["started_at"] = row["started_at"] or entry.get("start_time")
    row["finished_at"] = row["finished_at"] or entry.get("end_time")
    metadata = entry.get("metadata") or {}
    for key in ("title", "description", "language", "canonical_url", "site_name", "image",
                "favicon_url", "logo_url"):
        row[key] = metadata.get(key)
    for key in ("keywords", "emails", "phones"):
        row[key] = _LIST_SEPARATOR.join(metadata.get(key) or [])
    socials = metadata.get("social_links") or {}
    for network in SOCIAL_NETWORKS:
        row[f"social_{network}"] = socials.get(network)
    organization = metadata.get("organization") or {}
    for key in ("name", "telephone", "email", "address"):
        row[f"organization_{key}"] = organization.get(key)
    stack = metadata.get("tech_stack") or {}
    for category in TECH_CATEGORIES:
        row[f"tech_{category}"] = _technologies(stack.get(category) or [])
    return row


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    """Scraped text that a spreadsheet would run as a formula ("=HYPERLINK(...)") is
    prefixed with an apostrophe (OWASP's advice for CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(report: Any, out: IO[str]) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="raise")
    writer.writeheader()
    count = 0
    for domain, entry in _entries(report):
        writer.writerow({key: _inert(value) for key, value in flat_row(domain, entry).items()})
        count += 1
    return count


def write_jsonl(report: Any, out: IO[str]) -> int:
    count = 0
    for domain, entry in _entries(report):
        out.write(json.dumps({"batch_id": str(report.batch_id), "domain": domain, **entry},
                             ensure_ascii=False, default=str) + "\n")
        count += 1
    return count
