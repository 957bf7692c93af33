"""The benchmark harness (benchmarks.bench) measures something: at a tiny N its raw
baseline, its Scrapy peer and the flow fetch every farm page once and extract every
title, and a contestant that measures nothing fails the run."""

from __future__ import annotations

import json

import httpx
import pytest

from benchmarks import bench, checks
from scrapersky.farm import Farm, site_page, site_page_size

N = 40


def _bench(tmp_path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = bench.main(["--n", str(N), "--latency", "0.02", "--concurrency", "10", "--timeout", "120",
                       "--json", str(out), "--quiet", *args])
    return code, json.loads(out.read_text())


def _assert_complete(document: dict, contestants: set[str]) -> None:
    runs = {run["contestant"]: run for run in document["runs"]}
    assert set(runs) == contestants
    for name, run in runs.items():
        assert run["exit_code"] == 0 and not run["timed_out"], (name, run["problems"])
        assert run["pages_ok"] == N and run["titles_ok"] == N, (name, run["problems"])
        # The farm saw each homepage exactly once: nothing skipped, nothing fetched twice.
        assert run["farm"]["hosts"] == N and run["farm"]["requests"] == N, (name, run["farm"])
        assert run["cpu_seconds"] > 0.05 and run["wall_seconds"] > 0.02, name
        assert 10 < run["max_rss_mb"] < 1000, name  # the contestant's own, not the harness's
        assert run["complete"] and not run["problems"], name
    assert {row["contestant"] for row in document["summary"]} == contestants


def test_raw_baseline_and_scrapy_peer_fetch_every_page_and_title(tmp_path):
    code, document = _bench(tmp_path, "--contestants", "raw,scrapy")
    _assert_complete(document, {"raw", "scrapy"})
    assert code == 0


def test_the_flow_on_a_real_prefect_server_fetches_every_page(tmp_path):
    code, document = _bench(tmp_path, "--contestants", "flow")
    _assert_complete(document, {"flow"})
    (run,) = document["runs"]
    assert run["state"] == "Completed" and run["batch"]["status"] == "completed"
    assert run["api_errors"] == 0, run["api_error_samples"]
    assert run["server_cpu_seconds"] > 0
    assert code == 0


def test_a_contestant_that_measures_nothing_fails_the_run(tmp_path, monkeypatch):
    class Elsewhere(bench.FarmProcess):  # the contestants are sent to a port nobody listens on
        @property
        def port(self) -> int:
            return int(self.connect_to[1].rsplit(":", 1)[1])

        @port.setter
        def port(self, value: int) -> None:
            pass

    monkeypatch.setattr(bench, "FarmProcess", Elsewhere)
    code, document = _bench(tmp_path, "--contestants", "raw")
    (run,) = document["runs"]
    assert run["pages_ok"] == 0 and not run["complete"] and run["problems"]
    assert document["summary"][0]["complete"] is False
    assert code == 1


def test_the_checks_see_missing_pages_and_wrong_titles(tmp_path):
    results = tmp_path / "results.jsonl"
    records = [
        {"domain": "site-0.test", "status": 200, "title": "Site 0"},
        {"domain": "site-1.test", "status": 200, "title": "Site 1 | Farm"},
        {"domain": "site-2.test", "status": 200, "title": "Site 20"},
        {"domain": "site-3.test", "error": "ConnectError: refused"},
    ]  # site-4.test: no record at all
    results.write_text("".join(json.dumps(record) + "\n" for record in records))
    ok, titles, problems = checks.check_records(results, 5)
    assert (ok, titles) == (3, 2)
    assert len(problems) == 3
    assert checks.check_records(tmp_path / "missing.jsonl", 5)[:2] == (0, 0)


def test_site_pages_on_the_farm():
    sizes = [len(site_page(i)) for i in range(50)]
    assert 30_000 <= min(sizes) and max(sizes) <= 100_000 and len(set(sizes)) > 40
    assert all(0 <= len(site_page(i)) - site_page_size(i) < 3_000 for i in range(50))
    assert site_page(7) == site_page(7)
    with Farm(latency=0.0) as farm, httpx.Client(trust_env=False, timeout=10) as client:
        base = f"http://127.0.0.1:{farm.port}"
        page = client.get(base + "/", headers={"Host": "site-7.test"})
        assert page.status_code == 200 and page.content == site_page(7)
        assert "<title>Site 7 | Farm</title>" in page.text
        assert client.get(base + "/robots.txt", headers={"Host": "site-7.test"}).status_code == 404
        assert farm.stats() == {"connections": 2, "requests": 2, "hosts": 1, "not_found": 1,
                                "bytes_sent": pytest.approx(len(site_page(7)) + 300, abs=300)}
        assert farm.stats(reset=True)["requests"] == 2 and farm.stats()["requests"] == 0 and not farm.hits


def test_a_peer_on_every_core_splits_the_domains_and_the_concurrency():
    from benchmarks.contestants import shard_indices, shard_of, shard_share
    from benchmarks.every_core import commands

    for n, shards, concurrency in ((2000, 2, 200), (10, 3, 5), (7, 4, 2)):
        parts = [list(shard_indices(n, k, shards)) for k in range(shards)]
        assert sorted(i for part in parts for i in part) == list(range(n))  # each domain once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        shares = [shard_share(concurrency, k, shards) for k in range(shards)]
        assert min(shares) >= 1 and (sum(shares) == concurrency or concurrency < shards)
    assert shard_of(None) == (0, 1) and shard_of("1/2") == (1, 2)
    with pytest.raises(ValueError):
        shard_of("2/2")
    assert commands(2, ["x", "--results", "r.{shard}.jsonl"]) == [
        ["x", "--results", "r.0.jsonl", "--shard", "0/2"], ["x", "--results", "r.1.jsonl", "--shard", "1/2"]]


def test_peers_on_every_core_fetch_the_realistic_web_with_retries_and_redirects(tmp_path):
    """raw-cores and scrapy-cores on real-<i>: every page a host serves (a 503 tried
    again, a 301 to www. followed), none of the hanging or missing ones."""
    out = tmp_path / "bench.json"
    code = bench.main(["--realistic", "--n", str(N), "--repeat", "1", "--concurrency", "20", "--cores", "2",
                       "--request-timeout", "3.5", "--contestants", "raw-cores,scrapy-cores", "--timeout", "120",
                       "--json", str(out), "--quiet"])
    document = json.loads(out.read_text())
    expected = checks.expected_pages(N, "real", 1)
    assert 0 < expected < N
    for run in document["runs"]:
        assert run["expected_pages"] == expected
        assert run["pages_ok"] == run["titles_ok"] == expected, (run["contestant"], run["problems"])
        assert run["farm"]["hosts"] > N  # the www. hosts too
    assert code == 0
    bounds = document["lower_bounds"][str(N)]
    assert bounds["lower_bound_s"] > 0
    assert bounds["in_order_floor_s"] >= bounds["network_bound_s"]


@pytest.mark.parametrize(("attempts", "concurrency", "floor"), [
    ([[1.0]] * 4, 2, 2.0),               # two rounds of two
    ([[5.0, 5.0], [1.0], [1.0]], 1, 12.0),  # one slot: the hang's retry after the two untried hosts
    ([[5.0, 5.0], [1.0], [1.0]], 2, 10.0),  # the retry takes the slot freed at 5 s
    ([[1.0], [1.0], [5.0, 5.0]], 2, 11.0),  # a hang found last: nothing left to overlap its retry
    ([[0.3]] * 1000, 50, 6.0),           # the fixed-delay row: N / concurrency x delay
])
def test_the_in_order_floor_schedules_untried_hosts_before_retries(attempts, concurrency, floor):
    assert bench.in_order_floor(attempts, concurrency) == pytest.approx(floor)
