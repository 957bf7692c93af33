"""Peak memory of fetching the gzip bomb and the 50 MB page, in a process of its own.

    python tests/hostile_memory.py CONNECT_TO_RULE...

Prints JSON: peak RSS (KiB) after a warm-up fetch of a normal page, then after the
bomb and after the huge page (each fetched and extracted), and their outcomes.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scrapersky.batch import BatchOptions  # noqa: E402
from scrapersky.errors import DomainError  # noqa: E402
from scrapersky.metadata.extract import extract_metadata  # noqa: E402
from scrapersky.web import Fetcher, Reach  # noqa: E402


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def scrape(fetcher: Fetcher, domain: str) -> str:
    try:
        page = fetcher.homepage(domain)
        extract_metadata(page.body, page.headers, page.url)
        return f"completed truncated={page.truncated} bytes={len(page.body)}"
    except DomainError as error:
        return error.error_type


def main() -> None:
    options = BatchOptions(total_timeout=60, read_timeout=20)
    with Fetcher(options, Reach(connect_to=tuple(sys.argv[1:]))) as fetcher:
        report = {"cap_bytes": options.max_page_bytes, "warm": scrape(fetcher, "ok-1.test")}
        report["baseline_kib"] = peak_kib()
        report["bomb"] = scrape(fetcher, "bomb-1.test")
        report["after_bomb_kib"] = peak_kib()
        report["huge"] = scrape(fetcher, "huge-1.test")
        report["after_huge_kib"] = peak_kib()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
