"""Fetching a domain's homepage: the network edge of a batch.

A ``Fetcher`` is built from a batch's options and the operator's reach and serves
any number of threads. ``Fetcher.start(domain)`` begins one domain's ``Fetch``: its
homepage (https first, plain http when no https connection can be opened), then the
meta refreshes the caller follows, all within ONE deadline (total_timeout: DNS,
connects, TLS, headers, bodies) and ONE redirect budget (max_redirects, HTTP redirects
and refreshes together). Every hop is a request of its own: its connection goes
through the address check (``scrapersky.web.guard``, in ``GuardedTransport``), it waits
for the host's slot (one request at a time per host and Fetcher), and it must fit in
what is left of the fetch's deadline. The body is read raw and decompressed here, a
bounded amount at a time, so neither a 50 MB page nor a gzip bomb can hold more than
``max_page_bytes`` in memory. httpx errors become ``scrapersky.errors`` in
``_translate``; the transport has already made httpcore's into httpx's.
"""

from __future__ import annotations

import email.utils
import ipaddress
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import httpx
from protego import Protego

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

from .guard import Reach, fetch_deadline
from .transport import GuardedTransport

__all__ = ["Page", "Fetcher", "Fetch", "environment_proxies", "robots_allow", "HTML_MEDIA_TYPES"]

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


class _HostSlots:
    """One request at a time per host. A host has a slot only while a request to it
    waits or runs: the last one out removes it, so many hosts leave nothing behind."""

    class _Slot:
        __slots__ = ("lock", "users")

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.users = 0  # requests waiting for or holding the lock

    def __init__(self) -> None:
        self._slots: dict[str, _HostSlots._Slot] = {}
        self._guard = threading.Lock()

    def __len__(self) -> int:
        with self._guard:
            return len(self._slots)

    @contextmanager
    def hold(self, host: str, deadline: float) -> Iterator[None]:
        with self._guard:
            slot = self._slots.get(host)
            if slot is None:
                slot = self._slots[host] = self._Slot()
            slot.users += 1
        try:
            if not slot.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise FetchTimeout(f"waited for another request to {host} until the deadline")
            try:
                yield
            finally:
                slot.lock.release()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[host]


def environment_proxies() -> dict[str, str | None]:
    """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY (either case) as httpx mount
    patterns: pattern -> proxy URL, or None for "no proxy" (the way httpx itself reads
    them when it builds its own transport, which it does not when given one)."""
    found = urllib.request.getproxies()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        url = found.get(scheme)
        if url:
            mounts[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for entry in found.get("no", "").split(","):
        host = entry.strip()
        if not host:
            continue
        if host == "*":
            return {}  # no proxy for anything
        if "://" in host:
            pattern = host
        elif _is_ip(host, 4):
            pattern = f"all://{host}"
        elif _is_ip(host, 6):
            pattern = f"all://[{host}]"
        elif host.lower() == "localhost":
            pattern = f"all://{host}"
        else:
            # example.com: the name and its subdomains; .example.com: subdomains only
            pattern = f"all://*{host}"
        try:
            httpx.URL(pattern)
        except httpx.InvalidURL:
            continue  # not something httpx can match on
        mounts[pattern] = None
    return mounts


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text.split("/")[0]).version == version
    except ValueError:
        return False


class Fetcher:
    """Homepages for one batch's options, within the operator's reach.

    Owns an httpx client (one TLS context, one connection pool, thread-safe: share the
    Fetcher between threads) and the per-host slots. ``transport`` replaces the
    guarded transport - and the environment's proxies - (tests: ``httpx.MockTransport``).
    Close it (or use it as a context manager) to close its connections.
    """

    def __init__(
        self, options: BatchOptions, reach: Reach = Reach(), *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.options = options
        self.reach = reach
        self._slots = _HostSlots()
        mounts: dict[str, httpx.BaseTransport | None] = {}
        if transport is None:
            ssl_context = httpx.create_ssl_context()
            transport = GuardedTransport(
                reach,
                ssl_context=ssl_context,
                limits=httpx.Limits(
                    max_connections=options.concurrency * 2,
                    max_keepalive_connections=options.concurrency,
                    keepalive_expiry=5.0,
                ),
            )
            # Behind a proxy, the proxy resolves names: the address check cannot see
            # where it connects.
            # GuardedTransport refuses a literal private address before asking the proxy.
            mounts = {
                pattern: None if url is None else GuardedTransport(reach, ssl_context=ssl_context, proxy=url)
                for pattern, url in environment_proxies().items()
            }
        self._client = httpx.Client(
            transport=transport,
            mounts=mounts,
            timeout=httpx.Timeout(
                connect=options.connect_timeout,
                read=options.read_timeout,
                write=options.read_timeout,
                pool=options.total_timeout,
            ),
            follow_redirects=False,  # followed hop by hop in _get
            event_hooks={"response": [_check_location]},
            headers={"User-Agent": options.user_agent, "Accept": _ACCEPT, "Accept-Encoding": _ACCEPT_ENCODING},
        )

    @property
    def active_hosts(self) -> int:
        """Hosts with a request waiting or running now (each holds a slot)."""
        return len(self._slots)

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    def close(self) -> None:
        """Close the client: its pool's connections and the proxies' ones."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, domain: str) -> Fetch:
        """One fetch of ``domain``: its homepage, then whatever meta refreshes it
        follows, within one deadline (total_timeout) and one redirect budget."""
        return Fetch(self, domain)

    def homepage(self, domain: str) -> Page:
        """GET the domain's homepage; raises a DomainError subclass on failure."""
        return self.start(domain).homepage()

    def follow(self, url: str) -> Page:
        """GET one URL as a fetch of its own (a deadline and a redirect budget of its
        own); raises a DomainError subclass on failure. A meta refresh is followed within
        the fetch it came from: ``Fetch.follow``."""
        budget = _Budget(time.monotonic() + self.options.total_timeout, self.options.max_redirects)
        try:
            return self._get(url, budget=budget, options=self.options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise _translate(error) from None

    def _get(self, url: str, *, budget: _Budget, options: BatchOptions, html_only: bool = True) -> Page:
        """Follow the redirect chain from ``url`` hop by hop; the final page, read capped.
        Every hop counts against the budget's redirects and fits in its deadline."""
        client = self._client
        deadline = budget.deadline
        request = client.build_request("GET", _checked_url(url))
        with fetch_deadline(deadline):
            while True:
                request.extensions["timeout"] = _timeout(options, deadline, str(request.url))
                with self._slots.hold(request.url.host, deadline):
                    budget.requests += 1  # every request, counted (tests, logs)
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
                if budget.redirects_left <= 0:
                    raise TooManyRedirects(
                        f"more than {options.max_redirects} redirects (meta refreshes included)",
                        final_url=str(request.url),
                    )
                budget.redirects_left -= 1

    def _check_robots(self, domain: str, *, deadline: float) -> None:
        """robots.txt, when asked to respect it: a disallowed homepage is not fetched.

        RFC 9309 (read by Protego: longest match, ``*`` and ``$``, user-agent groups):
        a robots.txt that is missing (4xx) allows everything; one that is unreachable
        (5xx, no connection, a timeout) disallows everything."""
        options = self.options
        robots_options = options.model_copy(update={"max_page_bytes": _ROBOTS_MAX_BYTES})
        failed: httpx.HTTPError | None = None
        for scheme in ("https", "http"):
            url = f"{scheme}://{domain}/robots.txt"
            budget = _Budget(deadline, options.max_redirects)
            try:
                response = self._get(url, budget=budget, options=robots_options, html_only=False)
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failed = error
                continue  # no https: plain http, as for the homepage
            except HTTPStatusFailed as error:
                if error.http_status is not None and 400 <= error.http_status < 500:
                    return  # unavailable: everything is allowed
                raise RobotsDisallowed(
                    f"{url} is unreachable ({error}): everything is disallowed (RFC 9309)", final_url=url
                ) from None
            except (TooManyRedirects, BadRedirect):
                return  # unavailable, as RFC 9309 lets a crawler assume: allowed
            # Any other error (a timeout, a reset, a blocked address) ends the fetch as
            # it is: the homepage is not fetched, and a transient cause is retried.
            if not robots_allow(response.body, options.user_agent, f"{scheme}://{domain}/"):
                raise RobotsDisallowed(f"{url} disallows / for {options.user_agent!r}", final_url=url)
            return
        assert failed is not None
        raise _translate(failed) from None


@dataclass
class _Budget:
    """What one fetch may still spend: the time until its deadline, its redirects."""

    deadline: float
    redirects_left: int
    requests: int = 0


class Fetch:
    """One domain's fetch: ``homepage()`` then any number of ``follow(url)`` (meta
    refreshes), sharing ONE deadline (``total_timeout`` from ``Fetcher.start``) and ONE
    redirect budget (``max_redirects``, HTTP redirects and refreshes together): a chain
    makes at most ``max_redirects + 1`` requests and ends by the deadline, DNS,
    connects, TLS, headers and bodies included."""

    def __init__(self, fetcher: Fetcher, domain: str) -> None:
        self.fetcher = fetcher
        self.domain = domain
        options = fetcher.options
        self.budget = _Budget(time.monotonic() + options.total_timeout, options.max_redirects)

    @property
    def deadline(self) -> float:
        return self.budget.deadline

    @property
    def requests(self) -> int:
        """Requests made so far (robots.txt aside)."""
        return self.budget.requests

    def homepage(self) -> Page:
        """GET the domain's homepage (https, then http); raises a DomainError subclass."""
        fetcher, options, domain = self.fetcher, self.fetcher.options, self.domain
        if options.respect_robots:
            fetcher._check_robots(domain, deadline=self.deadline)
        try:
            return fetcher._get(f"https://{domain}/", budget=self.budget, options=options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as https_error:
            first = https_error
        try:
            return fetcher._get(f"http://{domain}/", budget=self.budget, options=options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as http_error:
            # A certificate problem says more than the missing plain-http fallback does.
            error = _translate(first if _tls_failure(first) else http_error)
            error.args = (f"{error} (https and http both failed)",)
            raise error from None

    def follow(self, url: str) -> Page:
        """GET a meta refresh's target: one more hop of this fetch, within its deadline
        and redirect budget; raises a DomainError subclass on failure."""
        options = self.fetcher.options
        if self.budget.redirects_left <= 0:
            raise TooManyRedirects(
                f"more than {options.max_redirects} redirects (meta refreshes included)", final_url=url
            )
        self.budget.redirects_left -= 1
        try:
            return self.fetcher._get(url, budget=self.budget, options=options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise _translate(error) from None


def robots_allow(body: bytes, user_agent: str, url: str) -> bool:
    """Whether robots.txt ``body`` lets ``user_agent`` fetch ``url`` (RFC 9309)."""
    parser = Protego.parse(body.decode("utf-8", "replace"))
    # Groups are matched on the product token ("ScraperSkyBatch"), not on the comment.
    token = (user_agent.split() or ["*"])[0].split("/")[0] or "*"
    return bool(parser.can_fetch(url, token))


def _usable(url: str) -> bool:
    try:
        _checked_url(url)
    except BadRedirect:
        return False
    return True


def _checked_url(url: str | httpx.URL, base: httpx.URL | None = None) -> httpx.URL:
    """``url`` (relative to ``base``) as an http(s) URL with a host and a valid port,
    or BadRedirect: an invalid target is the page's fault, never retried."""
    try:
        parsed = httpx.URL(url)
        if base is not None:
            if parsed.scheme and not parsed.host:  # "http:/path", as httpx reads it
                parsed = parsed.copy_with(host=base.host)
            if parsed.is_relative_url:
                parsed = base.join(parsed)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise BadRedirect(f"redirected to an invalid URL {str(url)[:200]!r}: {error}", final_url=None) from None
    if parsed.scheme not in ("http", "https") or not parsed.host or not (port is None or 0 < port < 65536):
        raise BadRedirect(f"redirected to an unusable URL: {str(parsed)[:200]}", final_url=str(parsed)[:2000])
    return parsed


def _check_location(response: httpx.Response) -> None:
    """A response hook: a redirect's Location must be a fetchable URL (else BadRedirect,
    before httpx builds the next request from it)."""
    if response.has_redirect_location:
        _checked_url(response.headers["Location"], base=response.request.url)


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
    raw_deflate_tried = False
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
                    if (
                        size == 0
                        and not raw_deflate_tried
                        and response.headers.get("content-encoding", "").strip().lower() == "deflate"
                    ):
                        decoder = zlib.decompressobj(-zlib.MAX_WBITS)  # some servers send raw deflate
                        raw_deflate_tried = True  # once: a body broken both ways is broken
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
