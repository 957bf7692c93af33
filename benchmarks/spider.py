"""The benchmark's Scrapy peer: a plain spider that fetches every farm homepage once
and extracts the same site metadata as ``scrapersky.metadata.extract`` with Scrapy's own selectors.

    python -m benchmarks.spider --port PORT --n N --concurrency C --results FILE
        [--kind site|real] [--timeout S] [--retries R] [--shard K/M]

Run by ``benchmarks.bench`` as a subprocess (its CPU and memory are measured from
outside). Every domain ``<kind>-<i>.test`` is requested at ``http://<kind>-<i>.test:PORT/``
with its own download slot (one slot a host, as for real domains): ``FarmResolver``
answers 127.0.0.1 for every ``.test`` name and refuses any other (nothing is resolved,
everything stays on loopback), so Scrapy's redirects (a 301 to ``www.``) are followed
as for real sites. No robots.txt, no autothrottle; ``--retries`` (default 0, as the
flow in the fixed-delay rows) with Scrapy's own RetryMiddleware, ``--timeout`` as
DOWNLOAD_TIMEOUT. ``--shard K/M``: one of M processes (``benchmarks.every_core``), the
domains with ``i % M == K`` at its share of the concurrency. Items, failures included,
go to FILE as JSON lines through Scrapy's own feed exporter; the last line printed on
stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import sys
import time
from typing import Any
from urllib.parse import urljoin

import scrapy
from scrapy.crawler import CrawlerProcess
from twisted.internet import defer
from twisted.internet.interfaces import IResolverSimple
from zope.interface import implementer

from benchmarks.contestants import shard_indices, shard_of, shard_share

__all__ = ["HomepageSpider", "FarmResolver", "main"]


@implementer(IResolverSimple)
class FarmResolver:
    """Every ``.test`` name is the farm on 127.0.0.1; any other name is refused."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> FarmResolver:
        return cls(reactor)

    def install_on_reactor(self) -> None:
        self.reactor.installResolver(self)

    def getHostByName(self, name: str, timeout: Any = ()) -> defer.Deferred:  # noqa: N802 - Twisted's name
        if name.lower().endswith(".test"):
            return defer.succeed("127.0.0.1")
        return defer.fail(OSError(f"{name}: only .test names (the farm) are resolved here"))

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,24}")
_SOCIAL = re.compile(
    r"(facebook\.com|twitter\.com|x\.com|linkedin\.com|instagram\.com|youtube\.com|tiktok\.com|pinterest\.|github\.com)",
    re.IGNORECASE,
)
_TEXT_LIMIT = 200_000  # characters of visible text searched for addresses (as scrapersky.metadata.extract)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


class HomepageSpider(scrapy.Spider):
    """One request a domain; one item a domain (an error item when the fetch fails)."""

    name = "bench-homepages"
    custom_settings: dict[str, Any] = {}

    def __init__(self, port: int, indices: range, kind: str = "site", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.port = int(port)
        self.indices = indices
        self.kind = kind

    def _requests(self):
        for i in self.indices:
            host = f"{self.kind}-{i}.test"
            # The slot is the host (one a site, as for real domains); "host" names the
            # item's domain, carried through redirects.
            yield scrapy.Request(f"http://{host}:{self.port}/", meta={"host": host},
                                 callback=self.parse, errback=self.failed)

    async def start(self):  # Scrapy >= 2.13
        for request in self._requests():
            yield request

    def start_requests(self):  # Scrapy < 2.13
        yield from self._requests()

    def parse(self, response: scrapy.http.Response) -> dict[str, Any]:
        host = response.meta["host"]
        base = f"http://{host}/"

        def meta(key: str) -> str | None:
            return _clean(
                response.xpath(f"//meta[@name='{key}' or @property='{key}']/@content").get()
            )

        open_graph = {}
        for tag in response.xpath("//meta[starts-with(@property, 'og:')]"):
            prop, content = tag.attrib.get("property"), _clean(tag.attrib.get("content"))
            if prop and content and prop not in open_graph:
                open_graph[prop] = content
        twitter = {}
        for tag in response.xpath("//meta[starts-with(@name, 'twitter:')]"):
            key, content = tag.attrib.get("name"), _clean(tag.attrib.get("content"))
            if key and content and key not in twitter:
                twitter[key] = content

        json_ld: list[Any] = []
        organization = None
        for text in response.xpath("//script[@type='application/ld+json']/text()").getall():
            try:
                data = json.loads(text)
            except ValueError:
                continue
            json_ld.append(data)
            for item in data if isinstance(data, list) else data.get("@graph", [data]):
                if isinstance(item, dict) and item.get("@type") == "Organization" and organization is None:
                    organization = item

        hrefs = response.xpath("//a/@href").getall()
        text = " ".join(
            response.xpath("//body//text()[not(ancestor::script) and not(ancestor::style)]").getall()
        )[:_TEXT_LIMIT]
        emails = [h[7:].split("?")[0] for h in hrefs if h.lower().startswith("mailto:")]
        emails += _EMAIL.findall(text)
        phones = [h[4:] for h in hrefs if h.lower().startswith("tel:")]
        social = {}
        for href in hrefs:
            match = _SOCIAL.search(href)
            if match and match.group(1).lower() not in social:
                social[match.group(1).lower()] = href
        icon = response.xpath("//link[contains(@rel, 'icon')]/@href").get()
        canonical = response.xpath("//link[@rel='canonical']/@href").get() or meta("og:url")
        image = meta("og:image") or meta("twitter:image")
        keywords = meta("keywords")
        return {
            "domain": host,
            "status": response.status,
            "title": _clean(response.xpath("//title/text()").get()),
            "description": meta("description") or meta("og:description"),
            "keywords": [k.strip() for k in keywords.split(",") if k.strip()] if keywords else [],
            "language": response.xpath("/html/@lang").get(),
            "canonical_url": urljoin(base, canonical) if canonical else None,
            "site_name": meta("og:site_name") or (organization or {}).get("name"),
            "image": urljoin(base, image) if image else None,
            "favicon_url": urljoin(base, icon) if icon else urljoin(base, "/favicon.ico"),
            "open_graph": open_graph,
            "twitter_card": twitter,
            "organization": organization,
            "emails": list(dict.fromkeys(emails)),
            "phones": list(dict.fromkeys(phones)),
            "social_links": social,
            "generator": meta("generator"),
        }

    def failed(self, failure: Any) -> dict[str, Any]:
        request = failure.request
        return {"domain": request.meta.get("host"), "error": f"{failure.type.__name__}: {failure.value}"}


def settings_for(concurrency: int, results: str, *, timeout: float = 60.0, retries: int = 0) -> dict[str, Any]:
    return {
        "DNS_RESOLVER": "benchmarks.spider.FarmResolver",
        # One request a host, thousands of hosts: Scrapy's default DownloaderAwarePriorityQueue
        # looks at every host's queue for each request it pops (quadratic: on 2 cores,
        # 318 s for 10,000 realistic hosts), the plain priority queue does not. The
        # strongest peer uses it.
        "SCHEDULER_PRIORITY_QUEUE": "scrapy.pqueues.ScrapyPriorityQueue",
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "CONCURRENT_REQUESTS_PER_IP": 0,
        "DOWNLOAD_DELAY": 0,
        "AUTOTHROTTLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "RETRY_ENABLED": retries > 0,
        "RETRY_TIMES": retries,
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "DOWNLOAD_TIMEOUT": timeout,
        "USER_AGENT": "ScraperSkyBench/0.1 (scrapy peer)",
        "FEEDS": {results: {"format": "jsonlines", "encoding": "utf-8", "overwrite": True}},
    }


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--results", required=True, help="JSON lines file, one item a domain")
    parser.add_argument("--kind", choices=("site", "real"), default="site")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--shard", default=None, help="K/M: this process's share of the domains")
    args = parser.parse_args(argv)
    shard, shards = shard_of(args.shard)

    process = CrawlerProcess(settings=settings_for(shard_share(args.concurrency, shard, shards), args.results,
                                                   timeout=args.timeout, retries=args.retries))
    crawler = process.create_crawler(HomepageSpider)
    process.crawl(crawler, port=args.port, indices=shard_indices(args.n, shard, shards), kind=args.kind)
    cpu, started = _cpu_self(), time.perf_counter()
    process.start()  # blocks until the crawl is done
    work, work_cpu = time.perf_counter() - started, _cpu_self() - cpu
    stats = crawler.stats.get_stats() if crawler.stats else {}
    summary = {
        "work_seconds": work,
        "work_cpu_seconds": work_cpu,
        "items": stats.get("item_scraped_count", 0),
        "responses": stats.get("response_received_count", 0),
        "download_errors": stats.get("downloader/exception_count", 0),
        "log_errors": stats.get("log_count/ERROR", 0),
        "finish_reason": stats.get("finish_reason"),
    }
    print(json.dumps(summary), flush=True)
    gc.freeze()  # no last garbage collections at exit, for every contestant alike (as the CLI)
    return 0


if __name__ == "__main__":
    sys.exit(main())
