"""What the API answers when a request is not one it can serve, through `scrapersky api`
processes in front of the session's stack (tests/test_api.py's ``serving``): a huge
list refused before any entry is read while status reads go on; one error shape for
every 4xx and 5xx, Starlette's own included; nothing dropped without a word (a
finished batch is not grown, the dashboard shows the entries the API refused); no
token in the access log; the row's id in a 503; ``max_pages`` bounded; an invalid
entry's reason found in the entry as it was sent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack import Stack
from test_api import (
    DB_PASSWORD,
    OLD_DASHBOARD_TOKEN,
    PREFIX,
    TENANT_A,
    TOKEN_A,
    TOKEN_B,
    Api,
    a_jwt,
    rows,
    serving,
)

#: The keys an answer may have besides ``error`` and ``detail``, by its code.
EXTRA_KEYS = {"invalid_request": {"errors"}, "submit_failed": {"batch_id", "job_id"}}


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(stack, tmp_path_factory.mktemp("api-answers"), "answers") as running:
        yield running


def refusal(response: httpx.Response, status: int, error: str) -> dict[str, Any]:
    """The answer's body, once it is the refusal ``status`` / ``error`` in our one shape."""
    assert response.status_code == status, (status, error, response.text)
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert body["error"] == error and isinstance(body["detail"], str) and body["detail"], body
    assert set(body) - {"error", "detail"} <= EXTRA_KEYS.get(error, set()), body
    return body


# -- refusal before work -------------------------------------------------------------

def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _figures(latencies: list[float]) -> str:
    return (f"{len(latencies)} GETs, p50 {_percentile(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {_percentile(latencies, 0.99) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")


#: A client of its own (a process: the test's own work never delays it) that says "ready"
#: after a first GET, then sends a GET of the path every 20 ms (each on time, whether the
#: ones before were answered or not) until its stdin closes, and prints each one's
#: [sent at (wall clock), latency, status] as JSON.
_READER = """
import asyncio, json, sys, time
import httpx
url, path, token = sys.argv[1:4]

async def main():
    closed = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, sys.stdin.read))
    seen = []
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30,
                                 limits=httpx.Limits(max_connections=50),
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        async def get():
            at, sent = time.time(), time.monotonic()
            status = (await client.get(path)).status_code
            seen.append([at, time.monotonic() - sent, status])

        await get()
        seen.clear()
        print("ready", flush=True)
        sending = []
        for _ in range(3_000):
            if closed.done():
                break
            sending.append(asyncio.ensure_future(get()))
            await asyncio.sleep(0.02)
        await asyncio.gather(*sending)
    print(json.dumps(seen))

asyncio.run(main())
"""


class StatusReads:
    """GETs of one batch's status from another process while the block runs."""

    def __init__(self, api: Api, path: str, token: str) -> None:
        self.command = [sys.executable, "-c", _READER, api.url, path, token]
        self.seen: list[tuple[float, float, int]] = []

    def latencies(self, during: list[tuple[float, float]] | None = None) -> list[float]:
        """Of every GET, or of those sent ``during`` one of these (start, end) wall-clock spans."""
        return [latency for at, latency, _ in self.seen
                if during is None or any(start <= at <= end for start, end in during)]

    def __enter__(self) -> StatusReads:
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.process.communicate(input="", timeout=60)
        self.seen = [tuple(each) for each in json.loads(out.strip().splitlines()[-1])]
        self.statuses = {status for *_, status in self.seen}


def test_a_huge_list_is_refused_before_any_entry_is_read_and_status_reads_go_on(
    stack: Stack, postgres_url: str, tmp_path: Path
) -> None:
    """At the default batch size limit (10,000): 8 MB of one domain repeated, 100,000
    distinct entries and 20,000 distinct ones (the entry cap, so each is normalised
    before the batch is refused), one at a time, are each answered within 1 s; the
    status reads sent every 20 ms meanwhile keep their p99 under 200 ms (above what it
    is with nothing else sent: the machine may be busy with more than this test). This
    service reaches PostgreSQL directly: the reads measure it, not the tests' pooler."""
    bodies = {
        "8 MB of duplicates": json.dumps({"domains": ["abc.test"] * 666_666}).encode(),
        "100,000 distinct": json.dumps({"domains": [f"d{i}.test" for i in range(100_000)]}).encode(),
        "20,000 distinct": json.dumps({"domains": [f"d{i}.test" for i in range(20_000)]}).encode(),
    }
    assert 7_900_000 < len(bodies["8 MB of duplicates"]) <= 8 * 1024 * 1024
    with serving(stack, tmp_path, "caps", DATABASE_URL=postgres_url, SCRAPERSKY_MAX_BATCH_SIZE="10000",
                 SCRAPERSKY_RATE_LIMIT="0") as api:
        # The batch read: one domain, no page metadata (its status is a few hundred bytes).
        created = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json={"domains": ["notfound-caps.test"]})
        assert created.status_code == 200, created.text
        answers: dict[str, list[float]] = {case: [] for case in bodies}
        spans: dict[str, list[tuple[float, float]]] = {case: [] for case in bodies}
        api.poll(created.json()["status_url"], TOKEN_A)
        with StatusReads(api, created.json()["status_url"], TOKEN_A) as alone:
            time.sleep(1.5)
        with StatusReads(api, created.json()["status_url"], TOKEN_A) as reads, httpx.Client(
                base_url=api.url, trust_env=False, timeout=30,
                headers={"Authorization": f"Bearer {TOKEN_B}", "Content-Type": "application/json"}) as client:
            for _ in range(8):
                for case, body in bodies.items():
                    time.sleep(0.3)
                    at, started = time.time(), time.monotonic()
                    response = client.post(f"{PREFIX}/batch", content=body)
                    answers[case].append(time.monotonic() - started)
                    spans[case].append((at, time.time()))
                    expected = ("batch_too_large" if case == "20,000 distinct" else "invalid_request")
                    answer = refusal(response, 422, expected)
                    assert "20000" in answer["detail"] or "10000" in answer["detail"], answer
                    assert answers[case][-1] < 1.0, answers

    p99_alone = _percentile(alone.latencies(), 0.99)
    meanwhile = reads.latencies(during=[span for each in spans.values() for span in each])
    print(f"\nanswer times (s): { {case: [round(t, 3) for t in times] for case, times in answers.items()} }"
          f"\nstatus reads alone: {_figures(alone.latencies())}\nstatus reads meanwhile: {_figures(meanwhile)}"
          + "".join(f"\n  during {case}: {_figures(reads.latencies(during=spans[case]))}" for case in bodies))
    assert reads.statuses == alone.statuses == {200}, (reads.statuses, alone.statuses)
    assert len(meanwhile) >= 40, len(meanwhile)
    assert _percentile(meanwhile, 0.99) < 0.2 + p99_alone, (_figures(meanwhile), p99_alone)


# -- one error shape -----------------------------------------------------------------

def test_every_refusal_has_one_shape(api: Api) -> None:
    batch = f"{PREFIX}/batch"
    json_headers = {"Content-Type": "application/json"}
    refusal(api.call("GET", f"{PREFIX}/batch/{uuid.uuid4()}/status"), 401, "not_authenticated")
    refusal(api.call("POST", batch, token=TOKEN_A, json={"domains": ["ok-1.test"], "tenant_id": str(uuid.uuid4())}),
            403, "wrong_tenant")
    refusal(api.call("GET", "/no/such/path", token=TOKEN_A), 404, "not_found")
    refusal(api.call("GET", f"{PREFIX}/batches", token=TOKEN_A), 404, "not_found")
    refusal(api.call("GET", "/static/no-such-page.html"), 404, "not_found")
    refusal(api.call("GET", f"{PREFIX}/batch/{uuid.uuid4()}/status", token=TOKEN_A), 404, "batch_not_found")
    wrong_method = api.call("DELETE", batch, token=TOKEN_A)
    refusal(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    refusal(api.call("PUT", f"{PREFIX}/batch/{uuid.uuid4()}/status", token=TOKEN_A), 405, "method_not_allowed")
    refusal(api.call("POST", batch, token=TOKEN_A, content=b'{"domains": [', headers=json_headers),
            400, "malformed_json")
    # Bytes that are not UTF-8 inside JSON: Starlette's own "error parsing the body".
    refusal(api.call("POST", batch, token=TOKEN_A, content=b'{"domains": ["\xff"]}', headers=json_headers),
            400, "bad_request")
    refusal(api.call("POST", batch, token=TOKEN_A, content=b"x" * (9 * 1024 * 1024), headers=json_headers),
            413, "request_too_large")
    refusal(api.call("POST", batch, token=TOKEN_A, json={"domains": "ok-1.test"}), 422, "invalid_request")
    refusal(api.call("POST", batch, token=TOKEN_A, content=b'{"domains": ["ok-1.test"]}',
                     headers={"Content-Type": "text/plain"}), 422, "invalid_request")
    refusal(api.call("POST", batch, token=TOKEN_A, json={"domains": []}), 422, "empty_batch")
    refusal(api.call("POST", batch, token=TOKEN_A, json={"domains": ["a.test"] * 101}), 422, "invalid_request")
    mine = api.call("POST", batch, token=TOKEN_A, json={"domains": ["ok-shape.test"]})
    assert mine.status_code == 200, mine.text
    refusal(api.call("POST", batch, token=TOKEN_B, json={"domains": ["ok-shape.test"],
                                                           "batch_id": mine.json()["batch_id"]}),
            409, "batch_id_taken")


def test_a_submission_prefect_does_not_take_is_a_503_naming_its_row_and_a_crowd_a_429(
    stack: Stack, tmp_path: Path
) -> None:
    """Prefect's API accepts connections and never answers: every submission waits 10 s
    for it, 8 at a time, and is then a 503 that names the batch it created (failed,
    with the reason). The ninth waits 5 s for a turn: 429. Meanwhile, the same batch
    id with another domain is refused at once: a batch is not grown."""
    from helpers import silent_server

    grown = uuid.uuid4()
    with silent_server() as port, serving(stack, tmp_path, "prefect-silent",
                                          PREFECT_API_URL=f"http://127.0.0.1:{port}/api") as hung:
        def post(path: str, body: dict[str, Any]) -> httpx.Response:
            return hung.call("POST", f"{PREFIX}{path}", token=TOKEN_A, json=body)

        with ThreadPoolExecutor(max_workers=9) as pool:
            first = [pool.submit(post, "/batch", {"domains": [f"ok-silent-{i}.test"]}) for i in range(5)]
            scan = pool.submit(post, "/scan", {"base_url": "ok-silent-scan.test"})
            named = pool.submit(post, "/batch", {"domains": ["ok-silent-grown.test"], "batch_id": str(grown)})
            time.sleep(1.0)
            refused = post("/batch", {"domains": ["ok-silent-grown.test", "ok-silent-new.test"],
                                      "batch_id": str(grown)})
            last = pool.submit(post, "/batch", {"domains": ["ok-silent-last.test"]})
            time.sleep(0.5)
            crowd = post("/batch", {"domains": ["ok-silent-crowd.test"]})
            answers = [f.result(timeout=60) for f in [*first, named, last]]
            scanned = scan.result(timeout=60)

        body = refusal(refused, 409, "batch_running")
        assert "ok-silent-new.test" in body["detail"]
        refusal(crowd, 429, "busy")
        assert crowd.headers["retry-after"]
        for answer in answers:
            body = refusal(answer, 503, "submit_failed")
            assert set(body) == {"error", "detail", "batch_id"}, body
            [row] = rows(stack, batch_id=uuid.UUID(body["batch_id"]))
            assert row.status == "failed" and "did not answer" in row.error
        assert json.loads(answers[5].text)["batch_id"] == str(grown)
        body = refusal(scanned, 503, "submit_failed")
        assert body["job_id"] == body["batch_id"]
        [row] = rows(stack, batch_id=uuid.UUID(body["job_id"]))
        assert row.status == "failed"
        # It ended failed: the same id with another domain is refused as finished.
        refusal(post("/batch", {"domains": ["ok-silent-grown.test", "ok-silent-new.test"], "batch_id": str(grown)}),
                409, "batch_finished")
    [row] = rows(stack, batch_id=grown)
    assert row.total_domains == 1


# -- nothing dropped without a word --------------------------------------------------

def test_a_finished_batch_is_not_grown_but_its_own_domains_are_the_same_batch(api: Api, stack: Stack) -> None:
    batch_id = str(uuid.uuid4())
    domains = ["ok-finished-1.test", "ok-finished-2.test"]
    first = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                     json={"domains": domains, "batch_id": batch_id, "max_pages": 1000})
    assert first.status_code == 200, first.text
    assert api.poll(first.json()["status_url"], TOKEN_A)[-1]["status"] == "completed"

    grown = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                     json={"domains": [*domains, "ok-finished-new.test"], "batch_id": batch_id})
    body = refusal(grown, 409, "batch_finished")
    assert "ok-finished-new.test" in body["detail"] and "new batch" in body["detail"]
    for same in (domains, domains[:1], ["https://OK-finished-2.test/"]):
        again = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json={"domains": same, "batch_id": batch_id})
        assert again.status_code == 200 and again.json()["job_count"] == 2, again.text
    [row] = rows(stack, batch_id=uuid.UUID(batch_id))
    assert (row.status, row.total_domains, row.completed_domains) == ("completed", 2, 2)
    assert stack.farm.hits["ok-finished-new.test"] == 0


def test_an_invalid_entry_is_failed_with_the_reason_found_in_it_as_sent(api: Api) -> None:
    submitted = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                         json={"domains": ["\u0000x.com", "", "ok-reason.test", "not a domain"]})
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["job_count"] == 4
    # Recorded at once, before any run: the dashboard shows them from its first poll.
    pending = api.call("GET", submitted.json()["status_url"], token=TOKEN_A).json()
    assert {"\\x00x.com", "<empty>", "not a domain"} <= set(pending["domain_statuses"]), pending
    final = api.poll(submitted.json()["status_url"], TOKEN_A)[-1]
    statuses = final["domain_statuses"]
    assert (final["total_domains"], final["completed_domains"], final["failed_domains"]) == (4, 1, 3), final
    assert "contains a control character" in statuses["\\x00x.com"]["error"]
    assert statuses["<empty>"]["error"] == "empty entry"
    assert "contains whitespace" in statuses["not a domain"]["error"]
    for key in ("\\x00x.com", "<empty>", "not a domain"):
        entry = statuses[key]
        assert (entry["status"], entry["error_type"], entry["attempts"]) == ("failed", "invalid_domain", 0), entry
        assert "Codepoint" not in entry["error"], entry


def test_the_dashboard_sends_every_line_and_shows_each_refused_one_with_its_reason(api: Api) -> None:
    from flow_run_screenshot import chromium, open_page

    if chromium() is None:
        pytest.skip("chromium is not installed (tests/services.sh installs it)")
    lines = ["ok-dash-1.test", "not a domain", "ok-dash-2.test"]
    with open_page(window="1200,900") as page:
        page.call("Page.navigate", url=f"{api.url}/static/batch-domain-scanner.html")
        page.wait_for("document.readyState === 'complete' && !!window.scanner", 30)
        page.evaluate(f"document.getElementById('token').value = {json.dumps(OLD_DASHBOARD_TOKEN)}")
        page.evaluate(f"document.getElementById('domainList').value = {json.dumps(chr(10).join(lines))}")
        page.evaluate("document.getElementById('importBtn').click()")
        page.wait_for("!!window.scanner.batchId || !!window.scanner.error", 30)
        assert page.evaluate("window.scanner.error") is None
        done = "window.scanner.lastStatus && ['completed', 'failed'].includes(window.scanner.lastStatus.status)"
        page.wait_for(f"({done}) || !!window.scanner.error", 120)
        shown = json.loads(page.evaluate(
            "JSON.stringify({t: document.getElementById('progressText').textContent, rows: [...document."
            "getElementById('domainRows').rows].map(r => [...r.cells].map(c => c.textContent))})"))
    assert shown["t"].startswith("100% (3/3)"), shown
    by_entry = {cells[0]: cells for cells in shown["rows"]}
    assert set(by_entry) == set(lines), shown
    assert by_entry["not a domain"][1] == "failed" and "contains whitespace" in by_entry["not a domain"][3], shown
    assert by_entry["ok-dash-1.test"][1] == "completed", shown


# -- small leaks ---------------------------------------------------------------------

def test_max_pages_is_bounded(api: Api) -> None:
    for path, body in (("/batch", {"domains": ["ok-1.test"]}), ("/scan", {"base_url": "ok-1.test"})):
        for too_many in (1001, 10**30):  # 10**30: a JSON integer, as one was stored once
            answer = refusal(api.call("POST", f"{PREFIX}{path}", token=TOKEN_A, json={**body, "max_pages": too_many}),
                             422, "invalid_request")
            assert "max_pages" in answer["detail"] and "1000" in answer["detail"], answer


def test_no_token_sent_in_a_query_string_or_a_path_reaches_the_access_log(api: Api) -> None:
    token = a_jwt(sub=uuid.uuid4(), tenant=TENANT_A)
    plain = f"plain-{uuid.uuid4().hex}"
    status = f"{PREFIX}/batch/{uuid.uuid4()}/status"
    for path in (f"{status}?access_token={TOKEN_A}", f"{status}?token={token}", f"{status}?apikey={plain}",
                 f"{status}?{TOKEN_B}", f"{PREFIX}/batch/{token}/status", f"/nowhere?x=1&jwt={token}"):
        assert api.call("GET", path).status_code in (401, 404, 422)
    assert api.call("GET", status, token=TOKEN_A).status_code == 404  # a request with its token where it belongs
    deadline = time.monotonic() + 10
    while "/nowhere?x=***&jwt=***" not in api.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = api.log.read_text(errors="replace")
    assert f"{status}?access_token=*** HTTP/1.1\" 401" in logged, logged[-2000:]
    assert f"{PREFIX}/batch/***/status" in logged
    for secret in (TOKEN_A, TOKEN_B, token, token.split(".")[1], plain, DB_PASSWORD):
        assert secret not in logged
