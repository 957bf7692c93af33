"""One fetch of a name that /etc/hosts maps to loopback, in a process of its own.

    unshare --mount sh -c 'mount --bind HOSTS_FILE /etc/hosts && exec python tests/etc_hosts_check.py NAME'

Run by tests/test_hostile.py inside a private mount namespace, where HOSTS_FILE (the
real /etc/hosts plus the name) is bind-mounted over /etc/hosts: the name resolves
through ordinary name resolution, and the real /etc/hosts is never written. Prints
JSON: what the name resolved to and the fetch's outcome (error_type or "completed").
Names that are not in /etc/hosts are refused, as in the tests: no DNS query leaves.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

import scrapersky.web.guard
from scrapersky.batch import BatchOptions
from scrapersky.errors import DNSFailed, DomainError
from scrapersky.web import Fetcher, Reach


def hosts_only(host: str, port: int, real=scrapersky.web.guard.system_resolver) -> list[str]:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        names = {name for line in open("/etc/hosts") for name in line.split("#")[0].split()[1:]}
        if host not in names:
            raise DNSFailed(f"{host}: no DNS queries here (not in /etc/hosts)") from None
    return real(host, port)


def main(name: str) -> None:
    scrapersky.web.guard.system_resolver = hosts_only
    report = {"resolved": socket.gethostbyname(name)}
    options = BatchOptions(connect_timeout=2, read_timeout=1, total_timeout=4, max_redirects=3)
    with Fetcher(options, Reach()) as fetcher:
        try:
            page = fetcher.homepage(name)
        except DomainError as error:
            report.update(outcome=error.error_type, error=str(error))
        else:
            report.update(outcome="completed", url=page.url)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
