"""What the benchmark checks after each run: every page fetched and every title right
(from a contestant's JSON lines, or from the flow's batch in the database), and the
lines of a log that say the Prefect API went wrong."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

from scrapersky.farm import real_host, real_title, site_title

#: Lines that say the Prefect API (or the client's talk with it) went wrong.
API_ERROR_PATTERNS: dict[str, re.Pattern[str]] = {
    "503": re.compile(r"(?<![\w.:-])503(?![\w:-])|Service Unavailable"),
    "subscription queue full": re.compile(r"Subscription queue is full"),
    "PrefectHTTPStatusError": re.compile(r"PrefectHTTPStatusError"),
    "httpx error": re.compile(r"httpx\.\w*(?:Error|Timeout)|\b(?:Read|Connect|Pool|Write)Timeout\b|RemoteProtocolError"),
    "ERROR": re.compile(r"\bERROR\b"),
    # "Error flushing 3 events (0 to retry, 3 dropped)", "... dropping message for topic=..."
    "dropped events": re.compile(r"\b[1-9]\d* dropped\b|dropping message|(?i:\bevents? (?:were |was )?dropped)"),
    "Traceback": re.compile(r"Traceback \(most recent call last\)"),
}


def count_api_errors(text: str) -> tuple[int, dict[str, int], list[str]]:
    """(lines matching any pattern, lines per pattern, the first few such lines)."""
    lines, per, samples = 0, dict.fromkeys(API_ERROR_PATTERNS, 0), []
    for line in text.splitlines():
        hits = [name for name, pattern in API_ERROR_PATTERNS.items() if pattern.search(line)]
        if hits:
            lines += 1
            for name in hits:
                per[name] += 1
            if len(samples) < 8 and line.strip() not in samples:
                samples.append(line.strip()[:300])
    return lines, {k: v for k, v in per.items() if v}, samples


def title_ok(i: int, title: str | None, kind: str = "site") -> bool:
    """The <title> as written, or without its site-name suffix (og:title says "Site i")."""
    if kind == "real":
        return title in (f"Real {i}", real_title(i))
    return title in (f"Site {i}", site_title(i))


def serves_a_page(domain: str, retries: int) -> bool:
    """Whether a client with ``retries`` gets a page from this farm domain: every
    ``site-<i>``; a ``real-<i>`` unless it hangs or is missing (a 503 needs a retry)."""
    real = real_host(domain)
    if real is None:
        return True
    return real.kind in ("page", "www") or (real.kind == "flaky" and retries > 0)


def expected_pages(n: int, kind: str = "site", retries: int = 0) -> int:
    return sum(serves_a_page(f"{kind}-{i}.test", retries) for i in range(n))


def _tally(n: int, outcome: Any, kind: str = "site", retries: int = 0) -> tuple[int, int, list[str]]:
    """(pages OK, titles right, the first problems) over <kind>-0 .. <kind>-(n-1);
    ``outcome(domain)`` is (error or None, title). A domain that serves no page (a
    realistic host that hangs or is missing) failing is no problem."""
    ok = titles = 0
    problems: list[str] = []
    for i in range(n):
        domain = f"{kind}-{i}.test"
        error, title = outcome(domain)
        if error:
            if serves_a_page(domain, retries):
                problems.append(f"{domain}: {error}")
            continue
        ok += 1
        if title_ok(i, title, kind):
            titles += 1
        else:
            problems.append(f"{domain}: title {title!r}")
    return ok, titles, problems[:5]


def check_records(paths: Path | list[Path], n: int, kind: str = "site", retries: int = 0) -> tuple[int, int, list[str]]:
    """(pages fetched OK, titles right, a few problems) from a contestant's JSON lines
    (several files: one a process of a peer on every core)."""
    records: dict[str, dict[str, Any]] = {}
    try:
        for path in paths if isinstance(paths, list) else [paths]:
            with path.open() as lines:
                for line in lines:
                    if line.strip():
                        record = json.loads(line)
                        records[str(record.get("domain"))] = record
    except (OSError, ValueError) as error:
        return 0, 0, [f"results unreadable: {error}"]

    def outcome(domain: str) -> tuple[Any, Any]:
        record = records.get(domain)
        if record is None:
            return "no record", None
        if record.get("error") or record.get("status") != 200:
            return record.get("error") or record.get("status"), None
        return None, record.get("title")

    return _tally(n, outcome, kind, retries)


def check_batch(database_url: str, batch_id: str, n: int, kind: str = "site", retries: int = 0) -> dict[str, Any]:
    """The batch as the database has it (``get_batch_status``), its titles checked."""
    from scrapersky.batch import DEFAULT_TENANT_ID
    from scrapersky.db.batches import get_batch_status
    from scrapersky.db.engine import unit_of_work

    async def read() -> Any:
        async with unit_of_work(database_url) as session:
            return await get_batch_status(session, uuid.UUID(batch_id), DEFAULT_TENANT_ID)

    try:
        report = asyncio.run(read())
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}", "pages_ok": 0, "titles_ok": 0,
                "problems": [f"batch unreadable: {type(error).__name__}: {error}"]}
    error_types: dict[str, int] = {}

    def outcome(domain: str) -> tuple[Any, Any]:
        entry = report.domain_statuses.get(domain) or {}
        if entry.get("status") != "completed":
            kind = entry.get("error_type") or "missing"
            error_types[kind] = error_types.get(kind, 0) + 1
            return f"{kind}: {entry.get('error')}", None
        return None, (entry.get("metadata") or {}).get("title")

    ok, titles, problems = _tally(n, outcome, kind, retries)
    return {
        "status": str(report.status), "total_domains": report.total_domains,
        "completed_domains": report.completed_domains, "failed_domains": report.failed_domains,
        "processing_time": report.processing_time, "error": report.error, "error_types": error_types,
        "pages_ok": ok, "titles_ok": titles, "problems": problems,
    }
