"""Where a fetch may connect: resolve the name, check every address, connect to a
checked one. Never the private network, unless the operator says so.

The check is made on the address actually connected to, inside httpcore's network
backend, for every connection (redirect hops included): a name that resolves to
127.0.0.1, a DNS answer that changes between two lookups, or a redirect to
http://169.254.169.254/ cannot get around it. Connect-to rules are the operator's
explicit routing and bypass the check.

Every wait of the backend ends by the fetch's deadline (``fetch_deadline``, set by the
Fetcher around each request): the resolver runs in a thread waited for until then, and
each read, write and TLS handshake of a connection gets at most the time left. httpcore
gives each read its own timeout, so without this a server sending its headers a byte
at a time would hold a fetch as long as it liked.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore

from scrapersky.domains import ipv4_literal
from scrapersky.errors import BlockedAddress, ConfigError, ConnectFailed, DNSFailed, FetchTimeout

from .connect_to import ConnectTo

__all__ = [
    "Reach",
    "AddressPolicy",
    "Resolver",
    "system_resolver",
    "GuardedBackend",
    "DeadlineBackend",
    "fetch_deadline",
    "literal_address_blocked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses to try, in order
Resolver = Callable[[str, int], list[str]]

_NAME_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_ADDRESSES = 4  # addresses of one name tried at most

#: The monotonic time the current fetch must end by (``fetch_deadline``), or None.
_DEADLINE: ContextVar[float | None] = ContextVar("scrapersky_fetch_deadline", default=None)


@contextmanager
def fetch_deadline(deadline: float) -> Iterator[None]:
    """Every network wait in this thread (resolving, connecting, TLS, each read and
    write) ends by ``deadline`` (``time.monotonic()``) while the block runs."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _capped(timeout: float | None, expired: type[Exception], what: str) -> float | None:
    """``timeout`` shortened to what is left of the fetch's deadline; ``expired`` (an
    httpcore timeout) when nothing is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired(f"{what}: the fetch's deadline has passed (total_timeout)")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write waits no later than the fetch's
    deadline. httpcore reads a response's status line and headers with one timeout per
    read: a server sending a byte at a time would otherwise never time out."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _capped(timeout, httpcore.ReadTimeout, "reading"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _capped(timeout, httpcore.WriteTimeout, "writing"))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout, "TLS handshake")
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _resolve_in_time(resolve: Resolver, host: str, port: int, timeout: float | None) -> list[str]:
    """``resolve(host, port)``, waited for no longer than ``timeout`` capped at the
    fetch's deadline. getaddrinfo cannot be interrupted: it runs in a daemon thread
    of its own, which is abandoned on a timeout and ends when the resolver returns."""
    limit = _capped(timeout, httpcore.ConnectTimeout, f"resolving {host}")
    if limit is None:
        return resolve(host, port)
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, resolve(host, port)))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((False, error))
        finally:
            done.set()

    threading.Thread(target=run, name=f"resolve-{host}"[:60], daemon=True).start()
    if not done.wait(limit):
        if timeout is None or limit < timeout:  # the fetch's deadline, not connect_timeout
            raise FetchTimeout(f"resolving {host} took longer than the fetch's deadline (total_timeout)")
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than {limit:.1f}s (connect_timeout)")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


@dataclass(frozen=True)
class Reach:
    """Where fetches may connect: connect-to routing, and networks allowed beyond the
    public internet. The operator's (environment, CLI), never a run parameter: a
    tenant submitting a batch cannot point the scraper at an internal service.
    ``scrapersky.settings.Settings.reach()`` reads it from the environment; this
    package only ever receives it as a value."""

    connect_to: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()


def system_resolver(host: str, port: int) -> list[str]:
    """getaddrinfo's addresses for host, de-duplicated, in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        if error.errno in _NAME_NOT_FOUND:
            raise DNSFailed(f"{host} does not resolve: {error.strerror}") from None
        raise ConnectFailed(f"resolving {host} failed: {error.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, NAT64, 6to4), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


class AddressPolicy:
    """Public unicast addresses only, plus the networks the operator allows."""

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        try:
            self.allowed = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allow_networks)
        except ValueError as error:
            raise ConfigError(f"SCRAPERSKY_ALLOW_NETWORKS: {error}") from None

    def why_blocked(self, address: str) -> str | None:
        """None when ``address`` may be connected to, else what kind of address it is."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in network for network in self.allowed if network.version == ip.version):
            return None
        inner = _embedded_ipv4(ip)
        if inner is not ip and any(inner in n for n in self.allowed if n.version == 4):
            return None
        # An IPv6 address that carries an IPv4 one is judged by the IPv4 address.
        for candidate in (inner,):
            if candidate.is_unspecified:
                return "unspecified"
            if candidate.is_loopback:
                return "loopback"
            if candidate.is_link_local:
                return "link-local"
            if candidate.is_multicast:
                return "multicast"
            if candidate in ipaddress.ip_network("100.64.0.0/10"):
                return "shared (CGNAT)"
            if candidate.is_private:
                return "private"
            if candidate.is_reserved or not candidate.is_global:
                return "reserved"
        return None


def literal_address_blocked(host: str, policy: AddressPolicy) -> None:
    """Raise BlockedAddress when ``host`` is an address literal - in any form a
    resolver reads as one: ``::1``, ``127.1``, ``0x7f.0.0.1``, ``2130706433`` - the
    address policy refuses. For requests the address check cannot follow (a proxy
    resolves and connects for us)."""
    text = host.strip("[]").rstrip(".")
    try:
        address: IPAddress | None = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        address = ipv4_literal(text)
    if address is None:
        return
    kind = policy.why_blocked(str(address))
    if kind is not None:
        raise BlockedAddress(f"{host} is {address}, a {kind} address: not fetched (not even through the proxy)")


class DeadlineBackend(httpcore.SyncBackend):
    """httpcore's network backend, every wait of it within the fetch's deadline
    (``fetch_deadline``). The address check is ``GuardedBackend``'s; this one is for
    connections to the operator's proxy."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout, f"connecting to {host}")
        return _DeadlineStream(super().connect_tcp(host, port, timeout, local_address, socket_options))


class GuardedBackend(DeadlineBackend):
    """httpcore's network backend with connect-to routing and the address check, every
    wait within the fetch's deadline."""

    def __init__(self, reach: Reach, resolver: Resolver | None = None) -> None:
        self._connect_to = ConnectTo(reach.connect_to)
        self._policy = AddressPolicy(reach.allow_networks)
        self._resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        routed = self._connect_to.target(host, port)
        if routed is not None:  # the operator's explicit routing
            return super().connect_tcp(*routed, timeout, local_address, socket_options)
        resolve = self._resolver or system_resolver  # looked up late: tests may stub it
        addresses = _resolve_in_time(resolve, host, port, timeout)
        allowed = [a for a in addresses if self._policy.why_blocked(a) is None]
        if not allowed:
            first = addresses[0] if addresses else "nothing"
            kind = self._policy.why_blocked(first) if addresses else "no"
            raise BlockedAddress(f"{host} resolves to {first}, a {kind} address: not fetched")
        error: Exception | None = None
        for address in allowed[:_MAX_ADDRESSES]:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        assert error is not None
        raise error
