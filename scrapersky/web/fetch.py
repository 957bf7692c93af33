"""Fetching a domain's homepage: the network edge of a batch.

https first, plain http when no https connection can be opened. Every hop of a
redirect chain is a request of its own: its connection goes through the address
check (``scrapersky.web.guard``), it waits for the host's slot (one request at a time per
host), and it must fit in what is left of the fetch's deadline. The body is read raw
and decompressed here, a bounded amount at a time, so neither a 50 MB page nor a gzip
bomb can hold more than ``max_page_bytes`` in memory. httpx errors are translated
into ``scrapersky.errors`` where they enter.
"""

from __future__ import annotations

import email.utils
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.robotparser import RobotFileParser

import httpcore
import httpx

from scrapersky.batch import BatchOptions
from scrapersky.errors import (
    BadRedirect,
    ConnectFailed,
    DecodingFailed,
    DomainError,
    FetchTimeout,
    HTTPStatusFailed,
    NetworkFailed,
    NotHTML,
    RobotsDisallowed,
    TLSFailed,
    TooManyRedirects,
)

from .guard import GuardedBackend, Reach

__all__ = ["Page", "build_client", "client_for", "fetch_homepage", "fetch_url", "HTML_MEDIA_TYPES"]

HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
_ACCEPT_ENCODING = "gzip, deflate"  # decoded here, with a bound (see _read_capped)
_ROBOTS_MAX_BYTES = 500_000


@dataclass(frozen=True)
class Page:
    """A fetched homepage: the final URL, status, headers and the bytes read."""

    url: str
    status_code: int
    headers: httpx.Headers
    body: bytes
    truncated: bool


def build_client(options: BatchOptions, reach: Reach = Reach()) -> httpx.Client:
    """An httpx client for these options and this reach (thread-safe, share it)."""
    transport = httpx.HTTPTransport(retries=0)
    # httpx does not expose httpcore's network backend: swap in a pool that has ours.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=options.concurrency * 2,
        max_keepalive_connections=options.concurrency,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(reach),
    )
    return httpx.Client(
        transport=transport,
        mounts=_environment_proxies(options),
        timeout=httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            pool=options.total_timeout,
        ),
        follow_redirects=False,  # followed hop by hop in _get
        headers={"User-Agent": options.user_agent, "Accept": _ACCEPT, "Accept-Encoding": _ACCEPT_ENCODING},
    )


def _environment_proxies(options: BatchOptions) -> dict[str, httpx.HTTPTransport | None]:
    """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY, as httpx reads them. (httpx
    ignores them once a transport is given, so they are mounted here.) Behind a proxy,
    the proxy resolves names: the address check cannot see where it connects."""
    from httpx._utils import get_environment_proxies

    return {
        pattern: None if url is None else httpx.HTTPTransport(proxy=url, retries=0)
        for pattern, url in get_environment_proxies().items()
    }


_clients: dict[tuple[BatchOptions, Reach], httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(options: BatchOptions, reach: Reach) -> httpx.Client:
    """The process's shared client for these options (one TLS context, one pool)."""
    with _clients_lock:
        client = _clients.get((options, reach))
        if client is None:
            client = _clients[(options, reach)] = build_client(options, reach)
        return client


_host_slots: dict[str, threading.Lock] = {}
_host_slots_lock = threading.Lock()


@contextmanager
def _host_slot(host: str, deadline: float) -> Iterator[None]:
    """One request at a time per host, across the whole process."""
    with _host_slots_lock:
        slot = _host_slots.setdefault(host, threading.Lock())
    if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise FetchTimeout(f"waited for another request to {host} until the deadline")
    try:
        yield
    finally:
        slot.release()


def fetch_homepage(client: httpx.Client, domain: str, *, options: BatchOptions) -> Page:
    """GET the domain's homepage; raises a DomainError subclass on failure."""
    deadline = time.monotonic() + options.total_timeout
    if options.respect_robots:
        _check_robots(client, domain, options=options, deadline=deadline)
    try:
        return _get(client, f"https://{domain}/", deadline=deadline, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as https_error:
        first = https_error
    try:
        return _get(client, f"http://{domain}/", deadline=deadline, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as http_error:
        # A certificate problem says more than the missing plain-http fallback does.
        error = _translate(first if _tls_failure(first) else http_error)
        error.args = (f"{error} (https and http both failed)",)
        raise error from None


def fetch_url(client: httpx.Client, url: str, *, options: BatchOptions) -> Page:
    """GET one URL (a meta refresh target); raises a DomainError subclass on failure."""
    try:
        return _get(client, url, deadline=time.monotonic() + options.total_timeout, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise _translate(error) from None


def _timeout(options: BatchOptions, deadline: float, url: str) -> dict[str, float]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout(f"no time left for {url} (total_timeout={options.total_timeout}s)")
    return httpx.Timeout(
        connect=min(options.connect_timeout, remaining),
        read=min(options.read_timeout, remaining),
        write=min(options.read_timeout, remaining),
        pool=remaining,
    ).as_dict()


def _get(
    client: httpx.Client, url: str, *, deadline: float, options: BatchOptions, html_only: bool = True
) -> Page:
    """Follow the redirect chain from ``url`` hop by hop; the final page, read capped."""
    request = client.build_request("GET", url)
    for _ in range(options.max_redirects + 1):
        request.extensions["timeout"] = _timeout(options, deadline, str(request.url))
        with _host_slot(request.url.host, deadline):
            try:
                response = client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                raise  # the caller decides on the http fallback
            except httpx.HTTPError as exc:
                raise _translate(exc) from None
            try:
                if response.next_request is None:
                    return _page(response, deadline=deadline, options=options, html_only=html_only)
                request = response.next_request
            finally:
                response.close()
    raise TooManyRedirects(f"more than {options.max_redirects} redirects", final_url=str(request.url))


def _page(response: httpx.Response, *, deadline: float, options: BatchOptions, html_only: bool) -> Page:
    final_url = str(response.url)
    if not response.is_success:
        raise HTTPStatusFailed(
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            http_status=response.status_code,
            final_url=final_url,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if html_only and media_type and media_type not in HTML_MEDIA_TYPES:
        raise NotHTML(
            f"content type is {media_type}, not HTML", http_status=response.status_code, final_url=final_url
        )
    try:
        body, truncated = _read_capped(response, deadline=deadline, options=options)
    except httpx.HTTPError as exc:
        raise _translate(exc) from None
    return Page(final_url, response.status_code, response.headers, body, truncated)


def _decoder(response: httpx.Response) -> zlib._Decompress | None:
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped; raw deflate is retried below
    raise DecodingFailed(f"content encoding {encoding!r} was not asked for", final_url=str(response.url))


def _read_capped(response: httpx.Response, *, deadline: float, options: BatchOptions) -> tuple[bytes, bool]:
    """At most max_page_bytes of the decoded body; memory never holds more than that."""
    cap = options.max_page_bytes
    decoder = _decoder(response)
    chunks: list[bytes] = []
    size = 0
    for raw in response.iter_raw():  # as received: a chunk size would wait to fill it
        pending = raw
        while pending:
            if decoder is None:
                data, pending = pending[: cap - size], b""
            else:
                try:
                    data = decoder.decompress(pending, cap - size)
                except zlib.error as error:
                    if size == 0 and response.headers.get("content-encoding", "").strip().lower() == "deflate":
                        decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # some servers send raw deflate
                        continue
                    raise DecodingFailed(f"broken compressed body: {error}", final_url=str(response.url)) from None
                pending = decoder.unconsumed_tail
            chunks.append(data)
            size += len(data)
            if size >= cap:
                return b"".join(chunks), True
            if not data:
                break
        if time.monotonic() > deadline:
            raise FetchTimeout(
                f"page still arriving after {options.total_timeout}s (total_timeout)",
                http_status=response.status_code,
                final_url=str(response.url),
            )
    return b"".join(chunks), False


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _check_robots(client: httpx.Client, domain: str, *, options: BatchOptions, deadline: float) -> None:
    """robots.txt, when asked to respect it: a disallowed homepage is not fetched.
    A robots.txt that cannot be read allows everything (the usual convention)."""
    robots_options = options.model_copy(update={"max_page_bytes": _ROBOTS_MAX_BYTES})
    for scheme in ("https", "http"):
        url = f"{scheme}://{domain}/robots.txt"
        try:
            response = _get(client, url, deadline=deadline, options=robots_options, html_only=False)
        except (httpx.HTTPError, DomainError):
            continue
        parser = RobotFileParser()
        parser.parse(response.body.decode("utf-8", "replace").splitlines())
        if not parser.can_fetch(options.user_agent, f"{scheme}://{domain}/"):
            raise RobotsDisallowed(f"{url} disallows / for {options.user_agent!r}", final_url=url)
        return


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _translate(exc: httpx.HTTPError) -> DomainError:
    """The project's error for an httpx error."""
    detail = str(exc) or type(exc).__name__
    try:
        url = str(exc.request.url)
    except RuntimeError:
        url = None
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeout(f"{type(exc).__name__}: {detail}", final_url=url)
    if isinstance(exc, httpx.ConnectError):
        if _tls_failure(exc):
            return TLSFailed(f"TLS: {detail}", final_url=url)
        return ConnectFailed(detail, final_url=url)
    if isinstance(exc, httpx.DecodingError):
        return DecodingFailed(detail, final_url=url)
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return BadRedirect(f"redirected to an unusable URL: {detail}", final_url=url)
    return NetworkFailed(f"{type(exc).__name__}: {detail}", final_url=url)


class Fetcher:  # interim: replaced by the fetch layer's own (wt-fetch)
    def __init__(self, options: BatchOptions, reach: Reach = Reach()) -> None:
        self.options = options
        self.client = build_client(options, reach)

    def homepage(self, domain: str) -> Page:
        return fetch_homepage(self.client, domain, options=self.options)

    def follow(self, url: str) -> Page:
        return fetch_url(self.client, url, options=self.options)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
