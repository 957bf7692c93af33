"""Fetching a domain's homepage: the network edge of a batch.

https first, plain http when no https connection can be opened; separate connect,
read and whole-fetch deadlines; bounded redirects; at most ``max_page_bytes`` read.
httpx errors are translated into ``scrapersky.errors`` here, where they enter.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from scrapersky.batch import BatchOptions
from scrapersky.connect_to import ConnectTo
from scrapersky.errors import (
    ConnectFailed,
    DNSFailed,
    DomainError,
    FetchTimeout,
    HTTPStatusFailed,
    NetworkFailed,
    NotHTML,
    TooManyRedirects,
)

__all__ = ["Page", "build_client", "client_for", "fetch_homepage", "fetch_url", "HTML_MEDIA_TYPES"]

HTML_MEDIA_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
_CHUNK = 64 * 1024
_NAME_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


@dataclass(frozen=True)
class Page:
    """A fetched homepage: the final URL, status, headers and the bytes read."""

    url: str
    status_code: int
    headers: httpx.Headers
    body: bytes
    truncated: bool


class _ConnectToBackend(httpcore.SyncBackend):
    """Opens TCP connections where the connect-to rules say; the URL stays the domain's."""

    def __init__(self, connect_to: ConnectTo) -> None:
        self._connect_to = connect_to

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        host, port = self._connect_to.target(host, port) or (host, port)
        return super().connect_tcp(host, port, timeout, local_address, socket_options)


def build_client(options: BatchOptions) -> httpx.Client:
    """An httpx client configured by the batch options (thread-safe, share it)."""
    transport = httpx.HTTPTransport(retries=0)
    # httpx does not expose httpcore's network backend: swap in a pool that has ours.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=options.concurrency * 2,
        max_keepalive_connections=options.concurrency,
        keepalive_expiry=5.0,
        network_backend=_ConnectToBackend(ConnectTo(options.connect_to)),
    )
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            pool=options.total_timeout,
        ),
        follow_redirects=True,
        max_redirects=options.max_redirects,
        headers={"User-Agent": options.user_agent, "Accept": _ACCEPT},
        trust_env=True,  # HTTP(S)_PROXY / NO_PROXY work as usual
    )


_clients: dict[BatchOptions, httpx.Client] = {}
_clients_lock = threading.Lock()


def client_for(options: BatchOptions) -> httpx.Client:
    """The process's shared client for these options (one TLS context, one pool)."""
    with _clients_lock:
        client = _clients.get(options)
        if client is None:
            client = _clients[options] = build_client(options)
        return client


def fetch_homepage(client: httpx.Client, domain: str, *, options: BatchOptions) -> Page:
    """GET the domain's homepage; raises a DomainError subclass on failure."""
    deadline = time.monotonic() + options.total_timeout
    try:
        return _get(client, f"https://{domain}/", deadline=deadline, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as https_error:
        if _name_not_found(https_error):
            raise _translate(https_error) from None
    try:
        return _get(client, f"http://{domain}/", deadline=deadline, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as http_error:
        error = _translate(http_error)
        error.args = (f"{error} (https and http both failed)",)
        raise error from None


def fetch_url(client: httpx.Client, url: str, *, options: BatchOptions) -> Page:
    """GET one URL (a meta refresh target); raises a DomainError subclass on failure."""
    try:
        return _get(client, url, deadline=time.monotonic() + options.total_timeout, options=options)
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        raise _translate(error) from None


def _get(client: httpx.Client, url: str, *, deadline: float, options: BatchOptions) -> Page:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout(f"no time left for {url} (total_timeout={options.total_timeout}s)")
    timeout = httpx.Timeout(
        connect=min(options.connect_timeout, remaining),
        read=min(options.read_timeout, remaining),
        write=min(options.read_timeout, remaining),
        pool=remaining,
    )
    try:
        with client.stream("GET", url, timeout=timeout) as response:
            final_url = str(response.url)
            if not response.is_success:
                raise HTTPStatusFailed(
                    f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                    http_status=response.status_code,
                    final_url=final_url,
                )
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type and media_type not in HTML_MEDIA_TYPES:
                raise NotHTML(
                    f"content type is {media_type}, not HTML",
                    http_status=response.status_code,
                    final_url=final_url,
                )
            body, truncated = _read_capped(response, deadline=deadline, options=options)
            return Page(final_url, response.status_code, response.headers, body, truncated)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise  # the caller decides on the http fallback
    except httpx.HTTPError as exc:
        raise _translate(exc) from None


def _read_capped(
    response: httpx.Response, *, deadline: float, options: BatchOptions
) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes(_CHUNK):
        chunks.append(chunk)
        size += len(chunk)
        if size >= options.max_page_bytes:
            return b"".join(chunks)[: options.max_page_bytes], True
        if time.monotonic() > deadline:
            raise FetchTimeout(
                f"page still arriving after {options.total_timeout}s (total_timeout)",
                http_status=response.status_code,
                final_url=str(response.url),
            )
    return b"".join(chunks), False


def _name_not_found(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return seen.errno in _NAME_NOT_FOUND
        seen = seen.__cause__ or seen.__context__
    return False


def _translate(exc: httpx.HTTPError) -> DomainError:
    """The project's error for an httpx error."""
    detail = str(exc) or type(exc).__name__
    try:
        url = str(exc.request.url)
    except RuntimeError:
        url = None
    if isinstance(exc, httpx.TooManyRedirects):
        return TooManyRedirects(detail, final_url=url)
    if isinstance(exc, httpx.TimeoutException):
        return FetchTimeout(f"{type(exc).__name__}: {detail}", final_url=url)
    if isinstance(exc, httpx.ConnectError):
        if _name_not_found(exc):
            return DNSFailed(f"the name does not resolve: {detail}", final_url=url)
        return ConnectFailed(detail, final_url=url)
    return NetworkFailed(f"{type(exc).__name__}: {detail}", final_url=url)
