"""Where a fetch may connect: resolve the name, check every address, connect to a
checked one. Never the private network, unless the operator says so.

The check is made on the address actually connected to, inside httpcore's network
backend, for every connection (redirect hops included): a name that resolves to
127.0.0.1, a DNS answer that changes between two lookups, or a redirect to
http://169.254.169.254/ cannot get around it. Connect-to rules are the operator's
explicit routing and bypass the check.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore

from scrapersky.errors import BlockedAddress, ConfigError, ConnectFailed, DNSFailed

from .connect_to import ConnectTo

__all__ = ["Reach", "AddressPolicy", "Resolver", "system_resolver", "GuardedBackend"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses to try, in order
Resolver = Callable[[str, int], list[str]]

_NAME_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_ADDRESSES = 4  # addresses of one name tried at most


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


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's network backend with connect-to routing and the address check."""

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
        addresses = resolve(host, port)
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
