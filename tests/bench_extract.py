"""Extraction speed against a bare full parse, side by side on the same pages.

    .venv/bin/python tests/bench_extract.py [--repeat N]

For every corpus page (``shared/corpus``), interleaved: ``extract_metadata(bytes, ...)``
(the project's whole extraction: decoding, every field) and a bare
``BeautifulSoup(bytes, "lxml")`` (a parse and nothing else). Prints the median
per-page time of each and their ratio; the goal is a ratio of 0.5 or less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bs4 import BeautifulSoup  # noqa: E402

from scrapersky.metadata.extract import extract_metadata  # noqa: E402

HEADERS = {"content-type": "text/html; charset=utf-8"}


def corpus_pages() -> list[bytes]:
    import os

    root = Path(os.environ.get("SCRAPERSKY_CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    return [path.read_bytes() for path in sorted(root.glob("cases/*/page.html"))]


def measure(pages: list[bytes], repeat: int) -> dict[str, float]:
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(repeat):
        for page in pages:
            started = time.perf_counter()
            extract_metadata(page, HEADERS, "https://example.com/")
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            BeautifulSoup(page, "lxml")
            bare.append(time.perf_counter() - started)
    ours_ms, bare_ms = statistics.median(ours) * 1000, statistics.median(bare) * 1000
    return {"pages": len(pages), "repeat": repeat, "ours_ms": ours_ms, "bare_ms": bare_ms, "ratio": ours_ms / bare_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    result = measure(corpus_pages(), args.repeat)
    print(f"pages: {result['pages']} x {result['repeat']} (interleaved)")
    print(f"median per page: extract_metadata {result['ours_ms']:.2f} ms, bare BeautifulSoup(html, 'lxml') {result['bare_ms']:.2f} ms")
    print(f"ratio extraction / bare full parse: {result['ratio']:.2f} (goal <= 0.50)")


if __name__ == "__main__":
    main()
