"""curl-style ``--connect-to HOST1:PORT1:HOST2:PORT2`` overrides.

A request for HOST1:PORT1 opens its TCP connection to HOST2:PORT2 instead; the URL,
the Host header and the TLS server name stay the domain's own. This is how tests,
demos and benchmarks serve any number of virtual domains from one local server.

- an empty HOST1 matches every host, an empty PORT1 every port;
- ``*.suffix`` matches any name ending in ``.suffix``;
- an empty HOST2 or PORT2 keeps the requested one;
- the most specific rule wins: exact host, then the longest wildcard suffix, then any
  host; within those a rule naming the port beats one that does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from scrapersky.errors import ConfigError

__all__ = ["ConnectToRule", "ConnectTo"]

_RULE = re.compile(r"^(\[[^\]]*\]|[^:\[\]]*):(\d*):(\[[^\]]*\]|[^:\[\]]*):(\d*)$")


def _port(text: str, spec: str) -> int | None:
    if not text:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigError(f"connect-to rule {spec!r}: port {port} is out of range")
    return port


@dataclass(frozen=True)
class ConnectToRule:
    host: str  # "" for any host, "*.suffix" for a wildcard
    port: int | None
    target_host: str  # "" keeps the requested host
    target_port: int | None

    @classmethod
    def parse(cls, spec: str) -> ConnectToRule:
        match = _RULE.match(spec.strip())
        if not match:
            raise ConfigError(
                f"connect-to rule {spec!r} is not HOST1:PORT1:HOST2:PORT2 "
                "(e.g. '*.test:80:127.0.0.1:8080')"
            )
        host, port, target_host, target_port = match.groups()
        return cls(
            host=host.strip("[]").lower(),
            port=_port(port, spec),
            target_host=target_host.strip("[]"),
            target_port=_port(target_port, spec),
        )

    def rank(self, host: str, port: int) -> tuple[int, int, int] | None:
        """How specifically this rule matches host:port (higher wins), or None."""
        if self.port is not None and self.port != port:
            return None
        port_rank = 1 if self.port is not None else 0
        if self.host == host:
            return (3, 0, port_rank)
        if self.host.startswith("*.") and host.endswith(self.host[1:]):
            return (2, len(self.host), port_rank)
        if self.host == "":
            return (1, 0, port_rank)
        return None


class ConnectTo:
    """A set of connect-to rules."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self.rules = tuple(ConnectToRule.parse(spec) for spec in specs)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def target(self, host: str, port: int) -> tuple[str, int] | None:
        """Where to connect for host:port, or None when no rule applies."""
        host = host.lower()
        best: tuple[tuple[int, int, int], ConnectToRule] | None = None
        for rule in self.rules:
            rank = rule.rank(host, port)
            if rank is not None and (best is None or rank > best[0]):
                best = (rank, rule)
        if best is None:
            return None
        rule = best[1]
        return (rule.target_host or host, rule.target_port or port)
