"""Per-page CPU of this project's extraction beside the benchmark's Scrapy spider's
``parse``, on the farm's site pages (no network), interleaved, medians.

    .venv/bin/python tests/bench_parse_vs_scrapy.py
"""

from __future__ import annotations

import statistics
import time

from scrapy.http import HtmlResponse, Request

from benchmarks.spider import HomepageSpider
from scrapersky.farm import site_page
from scrapersky.metadata.extract import extract_metadata

HEADERS = {"content-type": "text/html; charset=utf-8"}


def main(pages: int = 60, repeat: int = 5) -> None:
    bodies = [site_page(i) for i in range(pages)]
    spider = HomepageSpider(port=0, n=0)
    ours: list[float] = []
    scrapy: list[float] = []
    for _ in range(repeat):
        for i, body in enumerate(bodies):
            url = f"http://site-{i}.test/"
            started = time.process_time()
            extract_metadata(body, HEADERS, url).model_dump(mode="json")
            ours.append(time.process_time() - started)
            started = time.process_time()
            request = Request(url, meta={"host": f"site-{i}.test"})
            spider.parse(HtmlResponse(url=url, body=body, headers=HEADERS, request=request))
            scrapy.append(time.process_time() - started)
    a, b = statistics.median(ours) * 1000, statistics.median(scrapy) * 1000
    print(f"median CPU ms/page: extract_metadata {a:.2f}, Scrapy spider parse {b:.2f}, ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
