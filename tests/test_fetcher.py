"""The Fetcher and the guarded transport without a farm: httpx.MockTransport through
the ``transport=`` seam, stub resolvers, and a keep-alive server on loopback."""

from __future__ import annotations

import ast
import email.utils
import gzip
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpcore
import httpx
import pytest

from scrapersky.batch import BatchOptions
from scrapersky.errors import BlockedAddress, DNSFailed, DomainError, FetchTimeout, TooManyRedirects
from scrapersky.web import Fetcher, GuardedTransport, Reach, environment_proxies

Handler = Callable[[httpx.Request], httpx.Response]


def html(body: bytes = b"<title>x</title>", status: int = 200, **headers: str) -> httpx.Response:
    """A streamed response, as a network transport returns it."""
    headers = {"Content-Type": "text/html", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def fetcher_for(handler: Handler, **options) -> Fetcher:
    return Fetcher(BatchOptions(**options), transport=httpx.MockTransport(handler))


def outcome(handler: Handler, domain: str = "a.test", **options) -> tuple[str, object]:
    with fetcher_for(handler, **options) as fetcher:
        try:
            return "completed", fetcher.homepage(domain)
        except DomainError as error:
            return error.error_type, error


def raising(make: Callable[[], BaseException]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise make()

    return handler


# -- httpx errors -> the project's error_type -------------------------------------------------

TRANSLATIONS = [
    (lambda: httpx.ConnectError("refused"), "connect_error"),
    (lambda: httpx.ConnectTimeout("slow"), "timeout"),
    (lambda: httpx.ReadTimeout("slow"), "timeout"),
    (lambda: httpx.WriteTimeout("slow"), "timeout"),
    (lambda: httpx.PoolTimeout("busy"), "timeout"),
    (lambda: httpx.ReadError("reset"), "network_error"),
    (lambda: httpx.WriteError("broken pipe"), "network_error"),
    (lambda: httpx.RemoteProtocolError("garbage"), "network_error"),
    (lambda: httpx.LocalProtocolError("bad header"), "network_error"),
    (lambda: httpx.ProxyError("proxy said no"), "network_error"),
    (lambda: httpx.UnsupportedProtocol("ftp"), "bad_redirect"),
    (lambda: httpx.DecodingError("bad gzip"), "decoding_error"),
    (lambda: BlockedAddress("a.test resolves to 10.0.0.1"), "blocked_address"),
    (lambda: DNSFailed("a.test does not resolve"), "dns_error"),
]


@pytest.mark.parametrize(("make", "error_type"), TRANSLATIONS, ids=[t[1] + "-" + str(i) for i, t in enumerate(TRANSLATIONS)])
def test_each_failure_has_its_error_type(make: Callable[[], BaseException], error_type: str) -> None:
    found, error = outcome(raising(make))
    assert found == error_type, error


def test_connect_failures_fall_back_to_http_and_say_so() -> None:
    schemes = []

    def handler(request: httpx.Request) -> httpx.Response:
        schemes.append(request.url.scheme)
        raise httpx.ConnectError("refused")

    found, error = outcome(handler)
    assert (found, schemes) == ("connect_error", ["https", "http"])
    assert "https and http both failed" in str(error)


def test_a_certificate_problem_beats_the_missing_http_fallback() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("handshake") from ssl.SSLCertVerificationError("self-signed certificate")
        raise httpx.ConnectError("refused")

    found, error = outcome(handler)
    assert found == "tls_error", error


def test_http_is_used_when_https_cannot_connect() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            raise httpx.ConnectError("refused")
        return html()

    found, page = outcome(handler)
    assert found == "completed" and page.url == "http://a.test/"


def test_a_body_that_breaks_midway_is_a_network_error() -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"<html><title>half"
            raise httpx.ReadError("connection reset")

    found, error = outcome(lambda request: httpx.Response(200, headers={"Content-Type": "text/html"}, stream=Broken()))
    assert found == "network_error", error


# -- httpcore errors -> httpx errors, in GuardedTransport ---------------------------------------

CORE_TO_HTTPX = [
    (httpcore.ConnectTimeout, httpx.ConnectTimeout, "timeout"),
    (httpcore.ReadTimeout, httpx.ReadTimeout, "timeout"),
    (httpcore.WriteTimeout, httpx.WriteTimeout, "timeout"),
    (httpcore.PoolTimeout, httpx.PoolTimeout, "timeout"),
    (httpcore.TimeoutException, httpx.TimeoutException, "timeout"),
    (httpcore.ConnectError, httpx.ConnectError, "connect_error"),
    (httpcore.ReadError, httpx.ReadError, "network_error"),
    (httpcore.WriteError, httpx.WriteError, "network_error"),
    (httpcore.NetworkError, httpx.NetworkError, "network_error"),
    (httpcore.ProxyError, httpx.ProxyError, "network_error"),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol, "bad_redirect"),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError, "network_error"),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError, "network_error"),
    (httpcore.ProtocolError, httpx.ProtocolError, "network_error"),
]


@pytest.mark.parametrize(("core", "mapped", "error_type"), CORE_TO_HTTPX, ids=[c[0].__name__ for c in CORE_TO_HTTPX])
def test_the_transport_maps_httpcore_errors_to_httpx(
    core: type[Exception], mapped: type[httpx.HTTPError], error_type: str
) -> None:
    # The resolver runs inside the pool (the backend's connect_tcp): what it raises
    # comes out of httpcore as any connection failure would.
    def resolver(host: str, port: int) -> list[str]:
        raise core(f"{core.__name__} from the pool")

    with GuardedTransport(resolver=resolver) as transport, pytest.raises(httpx.HTTPError) as raised:
        transport.handle_request(httpx.Request("GET", "http://a.test/"))
    assert type(raised.value) is mapped  # the most specific one
    assert isinstance(raised.value.__cause__, core)
    opts = BatchOptions(connect_timeout=1, read_timeout=1, total_timeout=2)
    with Fetcher(opts, transport=GuardedTransport(resolver=resolver)) as fetcher, pytest.raises(DomainError) as failed:
        fetcher.homepage("a.test")
    assert failed.value.error_type == error_type


def test_the_transports_tls_failures_keep_their_cause() -> None:
    def resolver(host: str, port: int) -> list[str]:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as error:
            raise httpcore.ConnectError(str(error)) from error

    opts = BatchOptions(connect_timeout=1, read_timeout=1, total_timeout=2)
    with Fetcher(opts, transport=GuardedTransport(resolver=resolver)) as fetcher, pytest.raises(DomainError) as failed:
        fetcher.homepage("a.test")
    assert failed.value.error_type == "tls_error"


@pytest.mark.parametrize("answer", [["10.0.0.7"], ["127.0.0.1", "::1"], DNSFailed("nx.test does not resolve")])
def test_the_backends_own_errors_pass_through_the_transport_unchanged(answer: list[str] | DomainError) -> None:
    def resolver(host: str, port: int) -> list[str]:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    with GuardedTransport(resolver=resolver) as transport, pytest.raises(DomainError) as raised:
        transport.handle_request(httpx.Request("GET", "http://a.test/"))
    if isinstance(answer, BaseException):
        assert raised.value is answer
    else:
        assert type(raised.value) is BlockedAddress
    opts = BatchOptions(connect_timeout=1, read_timeout=1, total_timeout=2)
    with Fetcher(opts, transport=GuardedTransport(resolver=resolver)) as fetcher, pytest.raises(DomainError) as failed:
        fetcher.homepage("a.test")
    assert failed.value.error_type == ("dns_error" if isinstance(answer, BaseException) else "blocked_address")


# -- Retry-After ----------------------------------------------------------------------------------


def _http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("soon", None),
        ("-3", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
    ],
)
def test_retry_after_is_read(value: str, expected: float | None) -> None:
    headers = {"Retry-After": value} if value else {}
    found, error = outcome(lambda request: html(status=429, **headers))
    assert found == "http_error" and error.http_status == 429
    assert error.retry_after == expected
    assert error.retryable


def test_retry_after_as_an_http_date() -> None:
    when = _http_date(datetime.now(UTC) + timedelta(seconds=90))
    found, error = outcome(lambda request: html(status=503, Retry_After=when))
    assert found == "http_error" and 85 <= error.retry_after <= 90


# -- decompression, capped --------------------------------------------------------------------------

PAGE = b"<html><head><title>t</title></head><body>" + b"x" * 200_000 + b"</body></html>"
CAP = 4096


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(PAGE)),
        ("x-gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", _raw_deflate(PAGE)),  # some servers send raw deflate
        ("identity", PAGE),
    ],
)
def test_compressed_bodies_are_decoded_up_to_the_cap(encoding: str, body: bytes) -> None:
    found, page = outcome(lambda request: html(body, Content_Encoding=encoding), max_page_bytes=CAP)
    assert found == "completed", page
    assert page.truncated and len(page.body) == CAP
    assert page.body == PAGE[:CAP]


def test_a_small_compressed_page_is_whole() -> None:
    small = b"<html><title>small</title></html>"
    found, page = outcome(lambda request: html(gzip.compress(small), Content_Encoding="gzip"))
    assert found == "completed" and page.body == small and not page.truncated


def test_a_gzip_bomb_is_read_to_the_cap_only() -> None:
    bomb = gzip.compress(b"<html>" + b"\0" * 50_000_000)  # 50 MB of zeros, ~50 kB on the wire
    found, page = outcome(lambda request: html(bomb, Content_Encoding="gzip"), max_page_bytes=CAP)
    assert found == "completed" and page.truncated and len(page.body) == CAP


@pytest.mark.parametrize(("encoding", "body"), [("gzip", b"not gzip at all"), ("br", b"\x8b\x00"), ("deflate", b"\xff\xff\xff")])
def test_a_broken_or_unasked_encoding_is_a_decoding_error(encoding: str, body: bytes) -> None:
    found, error = outcome(lambda request: html(body, Content_Encoding=encoding))
    assert found == "decoding_error", error


# -- redirects ------------------------------------------------------------------------------------------


def test_the_redirect_chain_is_bounded_hop_by_hop() -> None:
    hops = []

    def handler(request: httpx.Request) -> httpx.Response:
        hops.append(str(request.url))
        return httpx.Response(302, headers={"Location": f"/{len(hops)}"})

    found, error = outcome(handler, max_redirects=3)
    assert found == "too_many_redirects" and isinstance(error, TooManyRedirects)
    assert hops == ["https://a.test/", "https://a.test/1", "https://a.test/2", "https://a.test/3"]
    assert error.final_url == "https://a.test/4"


def test_redirects_across_hosts_are_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test":
            return httpx.Response(301, headers={"Location": "https://www.b.test/home"})
        return html()

    found, page = outcome(handler)
    assert found == "completed" and page.url == "https://www.b.test/home"


def test_a_redirect_to_another_scheme_is_a_bad_redirect() -> None:
    found, error = outcome(lambda request: httpx.Response(302, headers={"Location": "ftp://a.test/file"}))
    assert found == "bad_redirect", error


def test_follow_fetches_a_meta_refresh_target() -> None:
    with fetcher_for(lambda request: html()) as fetcher:
        page = fetcher.follow("http://a.test/next")
    assert page.url == "http://a.test/next" and page.status_code == 200


def test_robots_txt_through_the_seam() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(200, headers={"Content-Type": "text/plain"},
                                  stream=httpx.ByteStream(b"User-agent: *\nDisallow: /\n"))
        return html()

    assert outcome(handler, respect_robots=True)[0] == "robots_disallowed"
    assert outcome(handler)[0] == "completed"


# -- environment proxies --------------------------------------------------------------------------------

PROXY_VARIABLES = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD"]


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_no_proxy_variables_no_mounts(clean_proxy_env: pytest.MonkeyPatch) -> None:
    assert environment_proxies() == {}


def test_proxy_variables_become_mounts(clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", "127.0.0.1:3128")
    clean_proxy_env.setenv("HTTPS_PROXY", "http://127.0.0.1:3129")
    clean_proxy_env.setenv("all_proxy", "socks5://127.0.0.1:1080")
    clean_proxy_env.setenv("NO_PROXY", "example.com, .internal.test,10.1.2.3,::1,localhost,http://only.test")
    assert environment_proxies() == {
        "http://": "http://127.0.0.1:3128",
        "https://": "http://127.0.0.1:3129",
        "all://": "socks5://127.0.0.1:1080",
        "all://*example.com": None,  # the name and its subdomains
        "all://*.internal.test": None,  # subdomains only
        "all://10.1.2.3": None,
        "all://[::1]": None,
        "all://localhost": None,
        "http://only.test": None,
    }


def test_no_proxy_star_turns_every_proxy_off(clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    clean_proxy_env.setenv("NO_PROXY", "a.test,*")
    assert environment_proxies() == {}


def test_lowercase_variables_win(clean_proxy_env: pytest.MonkeyPatch) -> None:
    clean_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    clean_proxy_env.setenv("http_proxy", "http://127.0.0.1:2")
    assert environment_proxies() == {"http://": "http://127.0.0.1:2"}


def test_a_given_transport_is_the_whole_network(clean_proxy_env: pytest.MonkeyPatch) -> None:
    # Like httpx: with a transport given, the environment's proxies are not mounted.
    clean_proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    clean_proxy_env.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert outcome(lambda request: html())[0] == "completed"


# -- per-host slots ---------------------------------------------------------------------------------------


def test_per_host_state_does_not_grow_with_the_hosts_fetched() -> None:
    seen_during: list[int] = []
    live: list[Fetcher] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_during.append(live[0].active_hosts)  # the slots while this request runs
        return html()

    with fetcher_for(handler) as fetcher:
        live.append(fetcher)
        hosts = [f"host-{i}.test" for i in range(10_000)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fetcher.homepage, hosts))
        assert fetcher.active_hosts == 0  # 10,000 hosts fetched, nothing left behind
    assert len(seen_during) == 10_000
    assert 1 <= min(seen_during) and max(seen_during) <= 8  # one slot per request in flight


def test_one_request_at_a_time_per_host_many_hosts_at_once() -> None:
    lock = threading.Lock()
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    overall = [0, 0]

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        with lock:
            running[host] = running.get(host, 0) + 1
            most[host] = max(most.get(host, 0), running[host])
            overall[0] += 1
            overall[1] = max(overall[1], overall[0])
        time.sleep(0.02)
        with lock:
            running[host] -= 1
            overall[0] -= 1
        return html()

    domains = [f"same-{i % 3}.test" for i in range(24)]
    with fetcher_for(handler) as fetcher, ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(fetcher.homepage, domains))
        assert fetcher.active_hosts == 0
    assert most == {"same-0.test": 1, "same-1.test": 1, "same-2.test": 1}
    assert overall[1] >= 2  # different hosts did run side by side


def test_waiting_for_a_busy_host_ends_at_the_deadline_and_leaves_no_slot() -> None:
    release = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return html()

    with fetcher_for(handler, total_timeout=0.5) as fetcher, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(fetcher.homepage, "busy.test")
        time.sleep(0.1)
        assert fetcher.active_hosts == 1
        started = time.monotonic()
        with pytest.raises(FetchTimeout, match="waited for another request"):
            fetcher.homepage("busy.test")
        assert time.monotonic() - started < 1.0
        release.set()
        try:
            first.result()
        except DomainError:
            pass  # its own deadline passed while it was held
        assert fetcher.active_hosts == 0


# -- closing ------------------------------------------------------------------------------------------------


class KeepAliveServer:
    """HTTP/1.1 on loopback that keeps connections open; records when a client closes one."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.opened = 0
        self.closed = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.opened += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        body = b"<html><title>kept</title></html>"
        buffer = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    self.closed.release()
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    _, buffer = buffer.split(b"\r\n\r\n", 1)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(body), body))

    def close(self) -> None:
        self.listener.close()


def _refused_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    port = probe.getsockname()[1]
    probe.close()
    return port


def test_close_closes_the_fetchers_connections() -> None:
    server = KeepAliveServer()
    reach = Reach(connect_to=(f"*.test:443:127.0.0.1:{_refused_port()}", f"*.test:80:127.0.0.1:{server.port}"))
    try:
        transport = GuardedTransport(reach)
        fetcher = Fetcher(BatchOptions(connect_timeout=2, read_timeout=2, total_timeout=5), reach, transport=transport)
        assert fetcher.homepage("kept-1.test").body == b"<html><title>kept</title></html>"
        assert fetcher.homepage("kept-1.test").url == "http://kept-1.test/"
        assert server.opened == 1  # kept alive and reused
        assert transport.connections == 1
        assert not server.closed.acquire(timeout=0.3)  # still open
        fetcher.close()
        assert fetcher.is_closed and transport.connections == 0
        assert server.closed.acquire(timeout=5)  # the server saw the connection end
    finally:
        server.close()


def test_close_closes_the_default_transport_too() -> None:
    server = KeepAliveServer()
    reach = Reach(connect_to=(f"*.test:443:127.0.0.1:{_refused_port()}", f"*.test:80:127.0.0.1:{server.port}"))
    try:
        with Fetcher(BatchOptions(connect_timeout=2, read_timeout=2, total_timeout=5), reach) as fetcher:
            fetcher.homepage("kept-2.test")
            assert not server.closed.acquire(timeout=0.3)
        assert server.closed.acquire(timeout=5)
    finally:
        server.close()


# -- boundaries -------------------------------------------------------------------------------------------------


def test_nothing_under_scrapersky_web_imports_settings() -> None:
    import scrapersky.web

    package = Path(scrapersky.web.__file__).parent
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            assert not any("settings" in name for name in names), (module.name, names)


def test_the_web_package_imports_without_deprecation_warnings_or_settings() -> None:
    run = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c",
         "import sys, scrapersky.web, scrapersky.web.transport, scrapersky.batch;"
         "from scrapersky.web import Fetcher;"
         "Fetcher(scrapersky.batch.BatchOptions()).close();"
         "assert 'scrapersky.settings' not in sys.modules, 'settings imported'"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr


def test_settings_still_give_the_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    from scrapersky.settings import Reach as SettingsReach, Settings

    monkeypatch.setenv("SCRAPERSKY_CONNECT_TO", "*.test::127.0.0.1:8080")
    monkeypatch.setenv("SCRAPERSKY_ALLOW_NETWORKS", "10.0.0.0/8")
    assert SettingsReach is Reach
    assert Settings().reach() == Reach(connect_to=("*.test::127.0.0.1:8080",), allow_networks=("10.0.0.0/8",))


# -- the whole fetch within its deadline: DNS too -----------------------------------------------------------


def test_a_slow_resolver_ends_at_the_fetchs_deadline() -> None:
    release = threading.Event()
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:  # getaddrinfo stuck on an unanswering server
        calls.append(host)
        release.wait(10)  # bounded; released at the end of the test
        raise DNSFailed(f"{host}: gave up")

    opts = BatchOptions(connect_timeout=30, read_timeout=30, total_timeout=1)
    started = time.monotonic()
    try:
        with Fetcher(opts, transport=GuardedTransport(resolver=resolver)) as fetcher, pytest.raises(FetchTimeout):
            fetcher.homepage("slow-dns.test")
        assert time.monotonic() - started < 1 + 1
    finally:
        release.set()
    assert 1 <= len(calls) <= 2


def test_a_resolver_within_the_deadline_still_answers_and_raises() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise DNSFailed(f"{host} does not resolve")

    opts = BatchOptions(connect_timeout=1, read_timeout=1, total_timeout=2)
    with Fetcher(opts, transport=GuardedTransport(resolver=resolver)) as fetcher, pytest.raises(DNSFailed):
        fetcher.homepage("nx.test")


# -- behind a proxy: literal private addresses are refused before the proxy is asked ------------------------


class ProxyStub:
    """A forward proxy on loopback that records the request lines it receives; it answers
    ``http://start.test/`` with a redirect to ``location`` and anything else with a page."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.requests: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        deadline = time.monotonic() + 30  # bounded in time and in connections
        while not self.stop.is_set() and time.monotonic() < deadline and len(self.requests) < 20:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                self.requests.append(line)
                if line.split()[1:2] == ["http://start.test/"]:
                    head = f"HTTP/1.1 301 Moved\r\nLocation: {self.location}\r\nContent-Length: 0\r\n"
                    conn.sendall(head.encode() + b"Connection: close\r\n\r\n")
                else:
                    body = b"<title>proxied</title>"
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def __enter__(self) -> "ProxyStub":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


PRIVATE_LITERALS = [
    "http://127.0.0.2/", "http://127.1/", "http://0x7f.0.0.1/", "http://2130706433/", "http://[::1]/",
    "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/",
]


@pytest.mark.parametrize("location", PRIVATE_LITERALS)
def test_a_proxy_is_never_asked_for_a_private_address(clean_proxy_env: pytest.MonkeyPatch, location: str) -> None:
    opts = BatchOptions(connect_timeout=2, read_timeout=2, total_timeout=5)
    with ProxyStub(location) as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        clean_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        with Fetcher(opts) as fetcher:
            with pytest.raises(BlockedAddress):
                fetcher.follow(location)  # a literal address, asked for directly
            with pytest.raises(BlockedAddress):
                fetcher.follow("http://start.test/")  # ... and as a redirect target
    assert proxy.requests == ["GET http://start.test/ HTTP/1.1"]


def test_a_proxy_is_asked_for_a_public_name(clean_proxy_env: pytest.MonkeyPatch) -> None:
    opts = BatchOptions(connect_timeout=2, read_timeout=2, total_timeout=5)
    with ProxyStub("http://elsewhere.test/") as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        with Fetcher(opts) as fetcher:
            page = fetcher.follow("http://start.test/")
    assert page.url == "http://elsewhere.test/"
    assert proxy.requests == ["GET http://start.test/ HTTP/1.1", "GET http://elsewhere.test/ HTTP/1.1"]


# -- a broken redirect target is the page's fault: bad_redirect, never retried, never a defect ----------

BROKEN_LOCATIONS = ["http://[::1", "http://a.test:99999/", "http://[::1]:0/", "ftp://a.test/", "//[::1"]


@pytest.mark.parametrize("location", BROKEN_LOCATIONS)
def test_a_broken_location_is_a_bad_redirect(location: str) -> None:
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        return httpx.Response(301, headers={"Location": location})

    found, error = outcome(handler)
    assert found == "bad_redirect", error
    assert not error.retryable
    assert requests == ["https://a.test/"]  # no hop after it, no http fallback


@pytest.mark.parametrize("url", ["http://[::1", "http://a.test:99999/", "http://a\x01b.test/", "javascript:x", "http://"])
def test_following_a_broken_url_is_a_bad_redirect(url: str) -> None:
    with fetcher_for(lambda request: html()) as fetcher, pytest.raises(DomainError) as raised:
        fetcher.start("a.test").follow(url)
    assert raised.value.error_type == "bad_redirect"


@pytest.mark.parametrize("target", ["http://[::1", "http://a.test:99999/", "http://a&#1;b.test/"])
def test_a_meta_refresh_to_a_broken_url_is_a_bad_redirect(target: str) -> None:
    from scrapersky.tasks.attempt import scrape_with_retries

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a.test" and request.url.port is None:
            return html(f"<html><head><meta http-equiv='refresh' content='0; url={target}'></head></html>".encode())
        return html()

    with fetcher_for(handler, retries=2, retry_backoff=0.1) as fetcher:
        result = scrape_with_retries("a.test", fetcher)
    assert (result.error_type, result.attempts) == ("bad_redirect", 1), result


# -- robots.txt as RFC 9309 reads it ----------------------------------------------------------------------

# (robots.txt, whether our user agent may fetch "/"): the homepage is the only path asked about.
ROBOTS_HOMEPAGE = [
    ("User-agent: *\nDisallow: /\n", False),
    ("User-agent: *\nDisallow: /\nAllow: /$\n", True),  # `$` ends the pattern: /$ is longer than /
    ("User-agent: *\nDisallow: /\nAllow: /\n", True),  # an Allow and a Disallow of one length: allowed
    ("User-agent: *\nDisallow: /*\n", False),  # `*` matches any characters, none included
    ("User-agent: *\nAllow: /\nDisallow: /*\n", False),  # the longest match wins, not the first
    ("User-agent: *\nDisallow: /$\n", False),
    ("User-agent: *\nDisallow: /*.php$\n", True),
    ("User-agent: *\nDisallow: /\n\nUser-agent: ScraperSkyBatch\nAllow: /\n", True),  # our own group wins
    ("User-agent: googlebot\nDisallow: /\n", True),  # another crawler's group
    ("User-agent: metadata\nDisallow: /\n", True),  # a word of our user agent's comment is no token
    ("User-agent: scraperskybatch\nDisallow: /\n", False),  # ours, in any case
    ("User-agent: other\nDisallow: /\n", True),
    ("", True),
]


@pytest.mark.parametrize(("robots", "allowed"), ROBOTS_HOMEPAGE)
def test_robots_txt_rules_for_the_homepage(robots: str, allowed: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/robots.txt":
            return httpx.Response(200, headers={"Content-Type": "text/plain"}, stream=httpx.ByteStream(robots.encode()))
        return html()

    found, error = outcome(handler, respect_robots=True)
    assert found == ("completed" if allowed else "robots_disallowed"), (robots, error)


# (status of robots.txt, outcome): RFC 9309 2.3.1.3-4, unavailable (4xx) allows, unreachable (5xx) disallows.
ROBOTS_STATUSES = [(404, "completed"), (403, "completed"), (410, "completed"), (500, "robots_disallowed"),
                   (503, "robots_disallowed")]


@pytest.mark.parametrize(("status", "expected"), ROBOTS_STATUSES)
def test_robots_txt_status(status: int, expected: str) -> None:
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        if request.url.path == "/robots.txt":
            return httpx.Response(status, stream=httpx.ByteStream(b"User-agent: *\nAllow: /\n"))
        return html()

    found, error = outcome(handler, respect_robots=True)
    assert found == expected, error
    assert requests == (["/robots.txt", "/"] if expected == "completed" else ["/robots.txt"])


# (path, allowed) for one robots.txt: longest match, `*`, `$`, Allow beating Disallow on a tie.
ROBOTS_RULES = "User-agent: *\nDisallow: /private\nAllow: /private/open\nDisallow: /*.pdf$\nDisallow: /tie\nAllow: /tie\n"
ROBOTS_PATHS = [
    ("/", True), ("/private", False), ("/private/x", False), ("/private/open/x", True),
    ("/a/b.pdf", False), ("/a/b.pdf?x=1", True), ("/tie", True), ("/privateer", False),
]


@pytest.mark.parametrize(("path", "allowed"), ROBOTS_PATHS)
def test_robots_allow_reads_rfc_9309(path: str, allowed: bool) -> None:
    from scrapersky.web.fetch import robots_allow

    assert robots_allow(ROBOTS_RULES.encode(), "ScraperSkyBatch/0.1", f"http://a.test{path}") is allowed
