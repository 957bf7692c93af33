"""The benchmark harness (benchmarks.bench) measures something: at a tiny N its raw
baseline and its Scrapy peer fetch every farm page once and extract every title, and
its checks see a missing page or a wrong title."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from benchmarks import bench

N = 40


def test_raw_baseline_and_scrapy_peer_fetch_every_page_and_title(tmp_path):
    out = tmp_path / "bench.json"
    code = bench.main([
        "--n", str(N), "--latency", "0.02", "--concurrency", "10", "--contestants", "raw,scrapy",
        "--timeout", "50", "--json", str(out), "--quiet",
    ])
    document = json.loads(out.read_text())
    runs = {run["contestant"]: run for run in document["runs"]}
    assert set(runs) == {"raw", "scrapy"}
    for name, run in runs.items():
        assert run["exit_code"] == 0 and not run["timed_out"], (name, run["problems"])
        assert run["pages_ok"] == N, (name, run["problems"])
        assert run["titles_ok"] == N, (name, run["problems"])
        # The farm saw each homepage exactly once: nothing skipped, nothing fetched twice.
        assert run["farm"]["unique_homepages"] == N and run["farm"]["duplicate_homepages"] == 0, name
        assert run["cpu_seconds"] > 0 and run["max_rss_mb"] > 10 and run["wall_seconds"] > 0.02, name
        assert run["complete"], name
    assert {row["contestant"] for row in document["summary"]} == {"raw", "scrapy"}
    assert code == 0


def test_the_checks_see_missing_pages_and_wrong_titles(tmp_path):
    results = tmp_path / "results.jsonl"
    records = [
        {"domain": "site-0.test", "status": 200, "title": "Site 0"},
        {"domain": "site-1.test", "status": 200, "title": "Site 1 | Farm"},
        {"domain": "site-2.test", "status": 200, "title": "Site 20"},
        {"domain": "site-3.test", "error": "ConnectError: refused"},
    ]  # site-4.test: no record at all
    results.write_text("".join(json.dumps(record) + "\n" for record in records))
    ok, titles, problems = bench._check_records(results, 5)
    assert (ok, titles) == (3, 2)
    assert len(problems) == 3


def test_farm_pages_and_routes(tmp_path):
    sizes = [len(bench.page_for(i)) for i in range(50)]
    assert 30_000 <= min(sizes) and max(sizes) <= 100_000 and len(set(sizes)) > 40
    assert bench.page_for(7) == bench.page_for(7)

    farm = bench.BenchFarm(latency=0.0, keep_alive=False, max_seconds=60, logs=tmp_path)
    try:
        base = f"http://127.0.0.1:{farm.port}"
        with httpx.Client(trust_env=False, timeout=10) as client:
            page = client.get(base + "/", headers={"Host": "site-7.test"})
            assert page.status_code == 200 and page.content == bench.page_for(7)
            assert "<title>Site 7 | Farm</title>" in page.text
            assert client.get(base + "/robots.txt", headers={"Host": "site-7.test"}).status_code == 404
            assert client.get(base + "/", headers={"Host": "elsewhere.example"}).status_code == 404
        assert farm.stats()["homepages"] == 1
        with pytest.raises(ConnectionRefusedError):  # where the flow's https attempts go
            socket.create_connection(("127.0.0.1", farm.refused_port), timeout=5).close()
    finally:
        farm.stop()
