"""The hostile web, on loopback only: every case ends with its error_type (or success)
within a bounded time, big bodies stay within bounded memory, and nothing reaches an
address that is not on the public internet unless the operator allows it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import scrapersky.web.guard
from scrapersky.db.batches import get_batch_status
from scrapersky.batch import BatchOptions, BatchRequest
from scrapersky.errors import BlockedAddress, DNSFailed, DomainError
from scrapersky.farm import Farm
from scrapersky.settings import Settings
from scrapersky.web import AddressPolicy, Fetcher, GuardedBackend, Reach

NX_SUFFIX = ".scrapersky-nx.example"
FAST = dict(connect_timeout=2, read_timeout=1, total_timeout=4, retries=1, retry_backoff=0.1, max_redirects=3)


@pytest.fixture
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names under NX_SUFFIX do not exist; nothing else is resolved through the stub."""
    real = scrapersky.web.guard.system_resolver

    def resolve(host: str, port: int) -> list[str]:
        if host.endswith(NX_SUFFIX):
            raise DNSFailed(f"{host} does not resolve: Name or service not known")
        return real(host, port)

    monkeypatch.setattr(scrapersky.web.guard, "system_resolver", resolve)


def fetch(farm: Farm, domain: str, **overrides) -> tuple[str, float, object]:
    options = BatchOptions(**{**FAST, **overrides})
    started = time.monotonic()
    with Fetcher(options, Reach(connect_to=tuple(farm.connect_to()))) as fetcher:
        try:
            page = fetcher.homepage(domain)
        except DomainError as error:
            return error.error_type, time.monotonic() - started, error
    return "completed", time.monotonic() - started, page


# (domain, error_type of one attempt, seconds it may take at most)
CASES = [
    ("slowheaders-1.test", "timeout", 3),
    ("trickle-1.test", "timeout", 6),
    ("dribble-1.test", "timeout", 5),  # its headers a byte at a time: the whole-fetch deadline
    ("loop-1.test", "too_many_redirects", 3),
    ("tolocal-1.test", "blocked_address", 3),
    ("binary-1.test", "not_html", 3),
    ("ratelimited-1.test", "http_error", 3),
    ("flaky-1.test", "http_error", 3),
    ("reset-1.test", "network_error", 3),
    ("site.selfsigned.test", "tls_error", 3),
    ("nothing-here" + NX_SUFFIX, "dns_error", 3),
    ("ok-1.test", "completed", 3),
    ("xn--bcher-kva.test", "completed", 3),
    ("badcharset-1.test", "completed", 3),
]


@pytest.mark.parametrize(("domain", "outcome", "bound"), CASES)
def test_one_attempt_at_each_hostile_case(farm: Farm, stub_dns: None, domain: str, outcome: str, bound: float) -> None:
    found, elapsed, _ = fetch(farm, domain)
    assert found == outcome
    assert elapsed < bound


def test_retry_classification() -> None:
    from scrapersky.errors import (
        BadRedirect, BlockedAddress, ConnectFailed, DecodingFailed, EmptyBody, FetchTimeout,
        HTTPStatusFailed, InvalidDomain, NetworkFailed, NotHTML, TLSFailed, TooManyRedirects,
    )

    transient = [ConnectFailed("x"), FetchTimeout("x"), NetworkFailed("x")] + [
        HTTPStatusFailed("x", http_status=s) for s in (408, 429, 500, 502, 503, 504)
    ]
    permanent = [InvalidDomain("x"), DNSFailed("x"), NotHTML("x"), EmptyBody("x"), BlockedAddress("x"),
                 TLSFailed("x"), DecodingFailed("x"), TooManyRedirects("x"), BadRedirect("x")] + [
        HTTPStatusFailed("x", http_status=s) for s in (400, 401, 403, 404, 410, 451)
    ]
    assert all(error.retryable for error in transient)
    assert not any(error.retryable for error in permanent)


def test_retry_after_is_parsed(farm: Farm) -> None:
    found, _, error = fetch(farm, "ratelimited-2.test")
    assert found == "http_error" and error.http_status == 429 and error.retry_after == 1.0


def test_the_redirect_to_loopback_never_connects(farm: Farm) -> None:
    found, _, error = fetch(farm, "tolocal-2.test")
    assert found == "blocked_address" and "127.0.0.2" in str(error) and "loopback" in str(error)
    time.sleep(0.3)
    assert farm.trap.connections == 0


def _private_mounts_work() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_name_resolving_to_loopback_through_etc_hosts_is_blocked(tmp_path: Path) -> None:
    """Ordinary name resolution (/etc/hosts), no connect-to rule: blocked, no connection.

    The fetch runs in a child process with a private mount namespace, where a copy of
    /etc/hosts with the name in it is bind-mounted over /etc/hosts: the real file is
    never written, so a crash cannot leave it changed."""
    if not _private_mounts_work():
        pytest.skip("needs `unshare --mount` (root, CAP_SYS_ADMIN)")
    name = f"ssrf-{uuid.uuid4().hex[:8]}.scrapersky-check.example"
    hosts = tmp_path / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {name}\n")
    listeners = []
    try:
        for port in (443, 80):
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))  # the tests run as root, like CI
            listener.listen(4)
            listener.setblocking(False)
            listeners.append(listener)
        child = Path(__file__).with_name("etc_hosts_check.py")
        run = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh", str(hosts), sys.executable, str(child), name],
            capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["resolved"] == "127.0.0.1"  # the name really resolves there, through /etc/hosts
        assert report["outcome"] == "blocked_address", report
        assert "loopback" in report["error"]
        for listener in listeners:
            with pytest.raises(BlockingIOError):
                listener.accept()  # no connection ever arrived
    finally:
        for listener in listeners:
            listener.close()
    assert name not in Path("/etc/hosts").read_text()  # the real file never saw the name


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
        ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
        ("100.64.0.1", "shared (CGNAT)"), ("fc00::1", "private"), ("fd12:3456::1", "private"),
        ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
        ("240.0.0.1", "private"), ("192.0.2.1", "private"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.1.2.3", "private"), ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"),
        ("93.184.216.34", None), ("2606:2800:220:1:248:1893:25c8:1946", None), ("::ffff:93.184.216.34", None),
    ],
)
def test_address_policy(address: str, kind: str | None) -> None:
    assert AddressPolicy().why_blocked(address) == kind


def test_allowed_networks_are_the_operators_choice() -> None:
    policy = AddressPolicy(["10.20.0.0/16", "fd00::/8"])
    assert policy.why_blocked("10.20.3.4") is None and policy.why_blocked("::ffff:10.20.3.4") is None
    assert policy.why_blocked("fd00::5") is None
    assert policy.why_blocked("10.21.0.1") == "private"


def test_the_check_is_on_the_resolved_address_with_a_stub_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stub resolver stands in for DNS; the blocked addresses are never connected to.
    import httpcore

    answers = {"internal.example": ["10.0.0.7"], "metadata.example": ["169.254.169.254"],
               "mixed.example": ["10.0.0.7", "fc00::2"], "v6mapped.example": ["::ffff:127.0.0.1"]}
    asked: list[str] = []
    connected: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    def connect(self, host: str, port: int, *args, **kwargs):
        connected.append((host, port))
        raise httpcore.ConnectError("the test allows no connection")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect)
    backend = GuardedBackend(Reach(), resolver=resolver)
    for host in answers:
        with pytest.raises(BlockedAddress, match=f"{host} resolves to {answers[host][0]}"):
            backend.connect_tcp(host, 80, timeout=1)
    assert asked == list(answers)  # the stub answered, not DNS
    assert connected == []


def test_an_allowed_network_is_reached(farm: Farm) -> None:
    # With 127.0.0.0/8 allowed, a name resolving to the farm's address is fetched.
    backend = GuardedBackend(Reach(allow_networks=("127.0.0.0/8",)), resolver=lambda host, port: ["127.0.0.1"])
    stream = backend.connect_tcp("anything.example", farm.port, timeout=2)
    stream.write(b"GET / HTTP/1.0\r\nHost: ok-9.test\r\n\r\n")
    assert b"200" in stream.read(100)
    stream.close()


def test_bomb_and_huge_page_stay_within_bounded_memory(farm: Farm) -> None:
    script = Path(__file__).with_name("hostile_memory.py")
    run = subprocess.run([sys.executable, str(script), *farm.connect_to()], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["bomb"] == "not_html"  # 1 GB of zeros, read up to the cap only
    assert report["huge"] == "completed truncated=True bytes=5000000"
    cap_kib = report["cap_bytes"] // 1024
    # The size cap plus the parsers' overhead on a capped page; without the cap the bomb
    # alone would take 1 GB and the page 50 MB.
    assert report["after_bomb_kib"] - report["baseline_kib"] < cap_kib + 20_000, report
    assert report["after_huge_kib"] - report["baseline_kib"] < cap_kib + 60_000, report


def test_proxy_environment_variables_are_used(farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    # The farm answers absolute-form requests like a forward proxy would.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{farm.port}")
    monkeypatch.setenv("NO_PROXY", "")
    options = BatchOptions(**FAST)
    reach = Reach(connect_to=(f"*.example:443:127.0.0.1:{farm.refused_port}",))
    with Fetcher(options, reach) as fetcher:
        page = fetcher.homepage("ok-proxied.example")
    assert page.url == "http://ok-proxied.example/"
    assert farm.hits["ok-proxied.example"] == 1


def test_robots_txt_is_respected_when_asked(farm: Farm) -> None:
    found, _, _ = fetch(farm, "robots-1.test", respect_robots=True)
    assert found == "robots_disallowed"
    assert farm.hits["robots-1.test"] == 1  # robots.txt only, never the homepage
    assert fetch(farm, "robots-2.test")[0] == "completed"  # off by default


@pytest.mark.usefixtures("prefect_api")
def test_a_batch_of_hostile_and_good_domains_completes(
    farm: Farm, stub_dns: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from scrapersky.flows.batch_scrape import batch_scrape

    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'hostile.db'}")
    expected = {
        "slowheaders-1.test": "timeout", "trickle-1.test": "timeout", "bomb-1.test": "not_html",
        "huge-1.test": "completed", "loop-1.test": "too_many_redirects", "tolocal-1.test": "blocked_address",
        "binary-1.test": "not_html", "binaryhtml-1.test": "not_html", "badcharset-1.test": "completed",
        "ratelimited-1.test": "completed", "flaky-1.test": "completed", "reset-1.test": "network_error",
        "site.selfsigned.test": "tls_error", "nothing-here" + NX_SUFFIX: "dns_error",
        "bücher.test": "completed",
    }
    good = [f"ok-{i}.test" for i in range(100)]
    started = time.monotonic()
    state = batch_scrape(BatchRequest(domains=good + list(expected), options=BatchOptions(**FAST, concurrency=16)),
                         return_state=True)
    elapsed = time.monotonic() - started

    async def read():
        async with Settings().database().session() as session:
            return await get_batch_status(session, uuid.UUID(str(state.state_details.flow_run_id)), uuid.UUID(int=0))

    report = asyncio.run(read())
    statuses = report.domain_statuses
    assert all(statuses[d]["status"] == "completed" for d in good)
    for domain, outcome in expected.items():
        key = "xn--bcher-kva.test" if domain == "bücher.test" else domain
        entry = statuses[key]
        assert (entry["error_type"] or "completed") == outcome, (domain, entry)
        # one attempt never outlives total_timeout (plus the Retry-After wait)
        assert entry["elapsed_ms"] <= FAST["total_timeout"] * 1000 + 1500, (domain, entry)
    assert statuses["ratelimited-1.test"]["attempts"] == 2
    assert statuses["huge-1.test"]["truncated"] is True
    assert statuses["reset-1.test"]["attempts"] == 2  # transient: retried
    assert statuses["tolocal-1.test"]["attempts"] == 1  # permanent: not retried
    assert report.completed_domains == 100 + 5 and report.status == "partial"
    assert farm.trap.connections == 0
    assert elapsed < 90
