"""The fetch edge against a real local server (virtual domains via connect-to)."""

import time

import pytest

from scrapersky.batch import BatchOptions
from scrapersky.errors import (
    ConnectFailed,
    FetchTimeout,
    HTTPStatusFailed,
    NotHTML,
    TooManyRedirects,
)
from scrapersky.farm import Farm
from scrapersky.web import Fetcher, Reach


def fetch(farm: Farm, domain: str, **options):
    with Fetcher(BatchOptions(**options), Reach(connect_to=tuple(farm.connect_to()))) as fetcher:
        return fetcher.homepage(domain)


def test_falls_back_to_http_and_keeps_the_domain_in_url_and_host(farm: Farm) -> None:
    page = fetch(farm, "ok-1.test")
    assert page.url == "http://ok-1.test/"
    assert page.status_code == 200
    assert b"<title>ok-1 | Farm</title>" in page.body
    assert farm.hits["ok-1.test"] == 1  # the Host header was the domain's own
    assert not page.truncated


def test_user_agent_names_the_project() -> None:
    import httpx

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["User-Agent"])
        return httpx.Response(200, headers={"Content-Type": "text/html"}, stream=httpx.ByteStream(b"<title>x</title>"))

    with Fetcher(BatchOptions(), transport=httpx.MockTransport(answer)) as fetcher:
        fetcher.homepage("ua.test")
    assert seen and "ScraperSky" in seen[0]


def test_follows_redirects(farm: Farm) -> None:
    page = fetch(farm, "moved-7.test")
    assert page.url == "http://ok-7.test/"
    assert farm.hits["moved-7.test"] == 1 and farm.hits["ok-7.test"] == 1


def test_redirect_loop_is_bounded(farm: Farm) -> None:
    with pytest.raises(TooManyRedirects) as raised:
        fetch(farm, "loop-1.test", max_redirects=3)
    assert not raised.value.retryable
    assert farm.hits["loop-1.test"] == 4


@pytest.mark.parametrize(("domain", "status", "retryable"), [("notfound-1.test", 404, False), ("err500-1.test", 500, True)])
def test_http_errors(farm: Farm, domain: str, status: int, retryable: bool) -> None:
    with pytest.raises(HTTPStatusFailed) as raised:
        fetch(farm, domain)
    assert raised.value.http_status == status
    assert raised.value.retryable is retryable
    assert raised.value.error_type == "http_error"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (403, False), (404, False), (410, False), (408, True), (429, True), (500, True), (502, True), (503, True), (504, True)])
def test_retry_policy_by_status(status: int, retryable: bool) -> None:
    assert HTTPStatusFailed("x", http_status=status).retryable is retryable


def test_connection_refused_is_transient(farm: Farm) -> None:
    with pytest.raises(ConnectFailed) as raised:
        fetch(farm, "down-1.refused.test")
    assert raised.value.retryable
    assert "https and http both failed" in str(raised.value)


def test_not_html(farm: Farm) -> None:
    with pytest.raises(NotHTML, match="application/octet-stream"):
        fetch(farm, "binary-1.test")


def test_page_size_cap_keeps_the_head(farm: Farm) -> None:
    page = fetch(farm, "big-1.test", max_page_bytes=100_000)
    assert page.truncated
    assert len(page.body) == 100_000
    assert b"<title>big-1 | Farm</title>" in page.body


@pytest.mark.parametrize(
    ("timeouts", "bound"),
    [
        # the TLS handshake counts against connect_timeout, the http request against read_timeout
        ({"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 30}, 2.5),
        # the whole fetch, https attempt and http fallback together, within total_timeout
        ({"connect_timeout": 30, "read_timeout": 30, "total_timeout": 1.5}, 3.0),
    ],
)
def test_a_silent_server_times_out_within_bounds(timeouts: dict, bound: float) -> None:
    import socket

    listener = socket.socket()  # accepts connections, never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        opts = BatchOptions(**timeouts)
        started = time.monotonic()
        reach = Reach(connect_to=(f"*.test::127.0.0.1:{port}",))
        with Fetcher(opts, reach) as fetcher, pytest.raises(FetchTimeout) as raised:
            fetcher.homepage("silent.test")
        assert time.monotonic() - started < bound
        assert raised.value.retryable
    finally:
        listener.close()


def test_errors_survive_pickling() -> None:
    import pickle

    error = HTTPStatusFailed("HTTP 503", http_status=503, final_url="http://a.test/")
    error.attempts = 3
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.http_status, copy.final_url, copy.attempts, copy.retryable) == (
        HTTPStatusFailed, "HTTP 503", 503, "http://a.test/", 3, True
    )


# -- one deadline and one redirect budget for the whole fetch ---------------------------------


def test_headers_sent_a_byte_at_a_time_end_at_the_deadline(farm: Farm) -> None:
    # Every byte arrives well within read_timeout: only a whole-fetch deadline stops it.
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        fetch(farm, "dribble-1.test", connect_timeout=1, read_timeout=1, total_timeout=2)
    assert time.monotonic() - started < 2 + 1


def scrape(farm: Farm, domain: str, **options):
    from scrapersky.tasks.attempt import scrape_page

    with Fetcher(BatchOptions(**options), Reach(connect_to=tuple(farm.connect_to()))) as fetcher:
        return scrape_page(domain, fetcher)


def requests_to(farm: Farm, prefix: str) -> int:
    return sum(count for host, count in farm.hits.items() if host.startswith(prefix))


@pytest.mark.parametrize("prefix", ["chain-", "hops-"])
def test_redirects_and_meta_refreshes_share_one_redirect_budget(farm: Farm, prefix: str) -> None:
    # hops-<n> alternates a 301 and a meta refresh; chain-<n> is meta refreshes only.
    with pytest.raises(TooManyRedirects):
        scrape(farm, f"{prefix}0.test", max_redirects=10, total_timeout=20)
    assert requests_to(farm, prefix) <= 11


def test_a_meta_refresh_chain_ends_within_total_timeout(farm: Farm) -> None:
    # 0.3 s a hop, 11 hops: 3.3 s, unless the refreshes share the fetch's deadline.
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        scrape(farm, "slowchain-0.test", max_redirects=10, total_timeout=1.5)
    assert time.monotonic() - started < 1.5 + 1
