"""The farm's realistic web (``real-<i>``): the mix of behaviours fixed by a hash of
each name, in the proportions asked for, and each behaviour seen by a real HTTP client."""

from __future__ import annotations

import statistics
from collections import Counter

import httpx
import pytest

from scrapersky.farm import Farm
from scrapersky.farm_pages import REAL_DELAY_CAP, REAL_MIX, real_host, real_page, real_service_seconds, real_title

NAMES = [f"real-{i}.test" for i in range(2000)]


def _first(kind: str) -> str:
    return next(name for name in NAMES if real_host(name).kind == kind)


def test_the_mix_over_2000_names_has_the_shares_and_a_heavy_tailed_delay():
    hosts = [real_host(name) for name in NAMES]
    kinds = Counter(host.kind for host in hosts)
    for kind, share in REAL_MIX:
        assert abs(kinds[kind] / len(NAMES) - share) < 0.02, (kind, kinds)
    delays = [host.delay for host in hosts]
    assert 0.42 < statistics.median(delays) < 0.58
    assert statistics.mean(delays) > statistics.median(delays) * 1.1  # a tail to the right
    assert max(delays) == REAL_DELAY_CAP and min(delays) > 0.01
    # Fixed by the name: the same again, www. included; another kind of name is not one.
    assert real_host("real-7.test") == real_host("WWW.real-7.test") == real_host("real-7.example")
    assert real_host("site-7.test") is None and real_host("real-x.test") is None
    pages = [real_page(i) for i in range(40)]
    assert 45_000 <= min(map(len, pages)) and max(map(len, pages)) <= 80_000
    assert all(page.count(b"<") > len(page) / 40 for page in pages)  # dense with tags
    hang = _first("hang")
    assert real_service_seconds(hang, timeout=5, retries=1) == 10
    flaky = _first("flaky")
    assert real_service_seconds(flaky, timeout=5, retries=1) == pytest.approx(2 * real_host(flaky).delay)


def test_each_behaviour_seen_by_a_real_client():
    with Farm(latency=0.0) as farm, httpx.Client(trust_env=False, timeout=httpx.Timeout(5.0, read=4.0)) as client:
        base = f"http://127.0.0.1:{farm.port}/"

        def get(host: str, **kwargs) -> httpx.Response:
            return client.get(base, headers={"Host": host}, **kwargs)

        page = _first("page")
        i = real_host(page).index
        answer = get(page)
        assert answer.status_code == 200 and answer.content == real_page(i)
        assert f"<title>{real_title(i)}</title>" in answer.text

        flaky = _first("flaky")
        assert get(flaky).status_code == 503  # once,
        assert get(flaky).status_code == 200  # then the page
        moved = _first("www")
        answer = get(moved)
        assert answer.status_code == 301 and answer.headers["location"] == f"http://www.{moved}/"
        assert get(f"www.{moved}").status_code == 200
        assert get(_first("missing")).status_code == 404
        with pytest.raises(httpx.ReadTimeout):
            get(_first("hang"), timeout=httpx.Timeout(5.0, read=0.5))
        assert farm.stats()["hosts"] == 6
