"""The guarded transport: httpx on an httpcore pool whose every connection goes
through the address check (``scrapersky.web.guard.GuardedBackend``).

httpx's own ``HTTPTransport`` does not take a network backend, so this transport owns
its ``httpcore.ConnectionPool`` and does what ``HTTPTransport`` does around it: turn an
httpx request into an httpcore one and the answer back, and translate httpcore's
exceptions into httpx's, here and nowhere else (``_HTTPCORE_TO_HTTPX``). The
project's own errors raised inside the pool - ``BlockedAddress`` and ``DNSFailed``
from the backend, any other ``DomainError`` - pass through unchanged.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from scrapersky.errors import DomainError

from .guard import AddressPolicy, DeadlineBackend, GuardedBackend, Reach, Resolver, literal_address_blocked

__all__ = ["GuardedTransport", "DEFAULT_LIMITS"]

DEFAULT_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=5.0)

#: httpcore's exceptions and the httpx ones they become, the most specific first
#: (the first ``isinstance`` match wins).
_HTTPCORE_TO_HTTPX: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's; the project's own errors as they are."""
    try:
        yield
    except DomainError:
        raise  # BlockedAddress, DNSFailed, ...: already the project's word for it
    except Exception as exc:
        for source, target in _HTTPCORE_TO_HTTPX:
            if isinstance(exc, source):
                # The cause chain keeps the original (an ssl.SSLError says "TLS").
                raise target(str(exc) or type(exc).__name__) from exc
        raise


class _ResponseStream(httpx.SyncByteStream):
    """httpcore's response body, with its read errors translated too."""

    def __init__(self, stream: httpcore.Response) -> None:
        self._response = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._response.iter_stream()

    def close(self) -> None:
        with _httpx_errors():
            self._response.close()


class GuardedTransport(httpx.BaseTransport):
    """An httpx transport whose connections are made by ``GuardedBackend(reach)``.

    With ``proxy`` (the operator's HTTP_PROXY and the like), every request goes through
    that proxy instead, and the proxy resolves names: the address check cannot see where
    it connects. What it can see, it checks: a URL whose host is a literal address
    (``http://10.0.0.1/``, ``http://127.1/``) is refused before the proxy is asked.
    Either way every wait ends by the fetch's deadline (``guard.fetch_deadline``).

    Thread-safe (the pool is); ``close()`` closes every pooled connection.
    """

    def __init__(
        self,
        reach: Reach = Reach(),
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: httpx.Limits = DEFAULT_LIMITS,
        resolver: Resolver | None = None,
        proxy: str | None = None,
    ) -> None:
        ssl_context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        pool_options = dict(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=0,
        )
        self._policy = AddressPolicy(reach.allow_networks)
        self._proxied = proxy is not None
        self._pool: httpcore.ConnectionPool
        if proxy is None:
            self._pool = httpcore.ConnectionPool(
                **pool_options, network_backend=GuardedBackend(reach, resolver=resolver)
            )
            return
        url = httpx.URL(proxy)
        core_url = httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        auth = (url.username, url.password) if url.username or url.password else None
        if url.scheme in ("http", "https"):
            self._pool = httpcore.HTTPProxy(
                proxy_url=core_url, proxy_auth=auth, **pool_options, network_backend=DeadlineBackend()
            )
        elif url.scheme in ("socks5", "socks5h"):
            self._pool = httpcore.SOCKSProxy(
                proxy_url=core_url, proxy_auth=auth, **pool_options, network_backend=DeadlineBackend()
            )
        else:
            raise ValueError(f"proxy URL {proxy!r}: the scheme must be http, https, socks5 or socks5h")

    @property
    def connections(self) -> int:
        """Connections the pool holds now (open, opening or idle)."""
        return len(self._pool.connections)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        if self._proxied:
            literal_address_blocked(request.url.host, self._policy)  # raises BlockedAddress
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            core_response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response),
            extensions=core_response.extensions,
        )

    def close(self) -> None:
        with _httpx_errors():
            self._pool.close()
