"""The HTTP service end to end: `scrapersky api` (uvicorn) on a loopback port, in front of
the session's Prefect stack (tests/stack.py: a real server, work pool, deployments and
worker; PostgreSQL through PgBouncer), driven over real HTTP as ScraperSky's old clients
drive it. Every scraped domain is a farm domain (*.test on loopback).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from scrapersky.db.engine import unit_of_work
from scrapersky.db.models import BatchJob

from stack import BIN, ROOT, Stack, free_port, stop

PREFIX = "/api/v3/batch_page_scraper"
TENANT_A = uuid.uuid4()
TENANT_B = uuid.uuid4()
TENANT_C = uuid.uuid4()  # the bad-input test's: no batch of it may ever exist
DEFAULT_TENANT = uuid.UUID("00000000-0000-0000-0000-000000000000")
TOKEN_A = f"tok-a-{secrets.token_hex(12)}"
TOKEN_B = f"tok-b-{secrets.token_hex(12)}"
TOKEN_C = f"tok-c-{secrets.token_hex(12)}"
OLD_DASHBOARD_TOKEN = "scraper_sky_2024"
JWT_SECRET = f"jwt-{secrets.token_hex(16)}"
DB_PASSWORD = f"pw-{secrets.token_hex(8)}"  # PgBouncer trusts loopback: any password is accepted
MAX_BATCH_SIZE = 50
SECRETS = (TOKEN_A, TOKEN_B, TOKEN_C, JWT_SECRET, DB_PASSWORD)


@dataclass
class Api:
    """One `scrapersky api` process and every answer it gave (checked for secrets at the end)."""

    url: str
    log: Path
    process: subprocess.Popen
    answers: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with httpx.Client(base_url=self.url, trust_env=False, timeout=60) as client:
            response = client.request(method, path, headers=headers, **kwargs)
        self.answers.append(str(response.headers) + response.text)
        return response

    def poll(self, path: str, token: str, *, until: tuple[str, ...] = ("completed", "failed"),
             timeout: float = 120, every: float = 0.25) -> list[dict[str, Any]]:
        """Every status answer until the status is one of ``until`` (bounded in time)."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.call("GET", path, token=token)
            assert response.status_code == 200, response.text
            seen.append(response.json())
            if seen[-1]["status"] in until:
                return seen
            time.sleep(every)
        raise AssertionError(f"{path} not {until} after {timeout} s: {seen[-1] if seen else None}\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


all_apis: list[Api] = []


@contextmanager
def serving(stack: Stack, tmp: Path, name: str, *args: str, **env: str) -> Iterator[Api]:
    """`scrapersky api` on a free loopback port, with the stack's environment, the
    tests' tokens and ``env`` on top; stopped (by its pid) at the end. The service, as
    the worker, reaches PostgreSQL through PgBouncer in transaction mode (Supavisor's
    stand-in), with a password in its URL."""
    port = free_port()
    database_url = make_url(stack.database_url).set(
        password=DB_PASSWORD).render_as_string(hide_password=False)
    environment = stack.env | {
        "DATABASE_URL": database_url,
        "SCRAPERSKY_API_TOKENS": f"{TOKEN_A}={TENANT_A}, {TOKEN_B}={TENANT_B} {TOKEN_C}={TENANT_C} "
                                 f"{OLD_DASHBOARD_TOKEN}={DEFAULT_TENANT}",
        "SCRAPERSKY_JWT_SECRET": JWT_SECRET,
        "SCRAPERSKY_MAX_BATCH_SIZE": str(MAX_BATCH_SIZE),
        "PREFECT_LOGGING_LEVEL": "DEBUG",
    } | env
    log = tmp / f"api-{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "scrapersky"), "api", "--host", "127.0.0.1", "--port", str(port), *args],
                                   env=environment, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    api = Api(url=f"http://127.0.0.1:{port}", log=log, process=process)
    all_apis.append(api)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"scrapersky api exited: {api.tail()}"
            try:
                if httpx.get(f"{api.url}/openapi.json", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"scrapersky api did not answer: {api.tail()}"
            time.sleep(0.2)
        yield api
    finally:
        stop(process)


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with serving(stack, tmp_path_factory.mktemp("api"), "main") as running:
        yield running


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api"  # bound a moment ago, nobody listening


def a_jwt(*, sub: uuid.UUID | None = None, tenant: uuid.UUID | None = None, secret: str = JWT_SECRET,
          expires_in: float = 600, **claims: Any) -> str:
    payload: dict[str, Any] = {"exp": datetime.now(UTC) + timedelta(seconds=expires_in), "role": "authenticated",
                               "aud": "authenticated", **claims}
    if sub is not None:
        payload["sub"] = str(sub)
    if tenant is not None:
        payload["app_metadata"] = {"tenant_id": str(tenant)}
    return jwt.encode(payload, secret, algorithm="HS256")


def rows(stack: Stack, **where: Any) -> list[BatchJob]:
    async def read() -> list[BatchJob]:
        async with unit_of_work(stack.database_url) as session:
            query = select(BatchJob)
            for name, value in where.items():
                query = query.where(getattr(BatchJob, name) == value)
            return list((await session.scalars(query)).all())

    return asyncio.run(read())


def count_rows(stack: Stack, tenant_id: uuid.UUID) -> int:
    async def read() -> int:
        async with unit_of_work(stack.database_url) as session:
            return await session.scalar(select(func.count()).select_from(BatchJob).where(BatchJob.tenant_id == tenant_id))

    return asyncio.run(read())


def flow_runs_keyed(stack: Stack, key: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=stack.api_url, trust_env=False, timeout=30) as prefect:
        found = prefect.post("/flow_runs/filter", json={"limit": 200}).json()
    return [run for run in found if run.get("idempotency_key") == key]


OLD_ENTRY_KEYS = {"status", "start_time", "end_time", "processing_time", "error"}
OUR_ENTRY_KEYS = {"started_at", "finished_at", "elapsed_ms", "error_type", "http_status", "final_url", "attempts"}


def test_a_batch_is_submitted_polled_live_and_ends_as_its_row_says(api: Api, stack: Stack) -> None:
    user = uuid.uuid4()
    token = a_jwt(sub=user, tenant=TENANT_A)
    domains = [f"delay-api-{i}.test" for i in range(24)] + ["notfound-api.test"]
    submitted = api.call("POST", f"{PREFIX}/batch", token=token,
                         json={"domains": domains, "max_pages": 7, "max_concurrent": 1, "old_field": "ignored"})
    assert submitted.status_code == 200, submitted.text
    body = submitted.json()
    batch_id = body["batch_id"]
    assert body["status_url"] == f"{PREFIX}/batch/{batch_id}/status"
    assert body["job_count"] == 25 and datetime.fromisoformat(body["created_at"])

    seen = api.poll(body["status_url"], token, every=0.2)
    final = seen[-1]
    live = [s for s in seen if s["status"] == "processing" and 0 < len(s["domain_statuses"]) < 25]
    assert live, [(s["status"], len(s["domain_statuses"] or {})) for s in seen]  # live while it ran
    assert all(0 <= s["progress"] <= 1 for s in seen)
    assert live[0]["processing_time"] is not None and live[0]["end_time"] is None
    assert {s["status"] for s in seen} <= {"pending", "processing", "completed"}

    # One domain failed: "partial" in our words, "completed" on the old route.
    assert (final["status"], final["batch_status"]) == ("completed", "partial")
    assert (final["total_domains"], final["completed_domains"], final["failed_domains"]) == (25, 24, 1)
    assert final["progress"] == 1.0
    failed = final["domain_statuses"]["notfound-api.test"]
    assert failed["status"] == "failed" and failed["error_type"] == "http_error" and failed["http_status"] == 404
    for entry in final["domain_statuses"].values():
        assert OLD_ENTRY_KEYS | OUR_ENTRY_KEYS <= set(entry)
        started, finished = datetime.fromisoformat(entry["started_at"]), datetime.fromisoformat(entry["finished_at"])
        assert entry["processing_time"] == pytest.approx((finished - started).total_seconds(), abs=0.002)
        assert entry["start_time"] == entry["started_at"] and entry["end_time"] == entry["finished_at"]
    assert final["domain_statuses"]["delay-api-3.test"]["metadata"]["title"]

    [row] = rows(stack, batch_id=uuid.UUID(batch_id))
    assert row.tenant_id == TENANT_A and row.created_by == user
    assert row.processor_type == "domain_batch"
    assert (row.status, row.completed_domains, row.failed_domains, row.total_domains) == ("partial", 24, 1, 25)
    assert row.progress == final["progress"] == 1.0
    assert row.options["concurrency"] == 1 and row.options["max_pages"] == 7
    assert final["end_time"] == row.end_time.isoformat() and final["processing_time"] == row.processing_time
    assert final["error"] == row.error is None
    assert final["metadata"]["flow_run_id"] == row.batch_metadata["flow_run_id"]


def test_the_same_request_twice_is_one_batch_and_one_run(api: Api, stack: Stack) -> None:
    batch_id = str(uuid.uuid4())
    request = {"domains": ["ok-api-twice-1.test", "ok-api-twice-2.test"], "batch_id": batch_id}
    first = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json=request)
    second = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json=request)
    assert first.status_code == second.status_code == 200, first.text + second.text
    assert first.json()["batch_id"] == second.json()["batch_id"] == batch_id
    assert first.json()["created_at"] == second.json()["created_at"]

    final = api.poll(first.json()["status_url"], TOKEN_A)[-1]
    assert (final["status"], final["completed_domains"]) == ("completed", 2)
    assert len(rows(stack, batch_id=uuid.UUID(batch_id))) == 1
    assert len(flow_runs_keyed(stack, batch_id)) == 1
    assert stack.farm.hits["ok-api-twice-1.test"] == 1
    # A run form the deployment refuses never reaches it: our own models refuse first.
    again = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json=request)
    assert again.status_code == 200 and len(flow_runs_keyed(stack, batch_id)) == 1


def test_a_tenant_cannot_read_or_take_another_tenants_batch(api: Api, stack: Stack) -> None:
    submitted = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json={"domains": ["ok-api-tenant.test"]})
    assert submitted.status_code == 200, submitted.text
    batch_id = submitted.json()["batch_id"]
    api.poll(f"{PREFIX}/batch/{batch_id}/status", TOKEN_A)

    unknown = uuid.uuid4()
    for path in (f"{PREFIX}/batch/{{}}/status", f"{PREFIX}/status/{{}}"):
        theirs = api.call("GET", path.format(batch_id), token=TOKEN_B)
        nobodys = api.call("GET", path.format(unknown), token=TOKEN_B)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json() == {"error": "batch_not_found", "detail": f"batch {batch_id} not found"}
        assert nobodys.json()["detail"] == f"batch {unknown} not found"
    # A JWT whose tenant is B is refused the same way; the default tenant's token too.
    assert api.call("GET", f"{PREFIX}/batch/{batch_id}/status", token=a_jwt(tenant=TENANT_B)).status_code == 404
    assert api.call("GET", f"{PREFIX}/batch/{batch_id}/status", token=OLD_DASHBOARD_TOKEN).status_code == 404

    # Naming another tenant than the token's: 403, and nothing registered.
    other = str(uuid.uuid4())
    refused = api.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                       json={"domains": ["ok-api-x.test"], "tenant_id": str(TENANT_B), "batch_id": other})
    assert refused.status_code == 403 and refused.json()["error"] == "wrong_tenant"
    assert rows(stack, batch_id=uuid.UUID(other)) == []
    # Tenant B submitting A's batch id: refused, A's batch untouched.
    taken = api.call("POST", f"{PREFIX}/batch", token=TOKEN_B, json={"domains": ["ok-api-y.test"], "batch_id": batch_id})
    assert taken.status_code == 409 and taken.json()["error"] == "batch_id_taken", taken.text
    [row] = rows(stack, batch_id=uuid.UUID(batch_id))
    assert (row.tenant_id, row.status, row.total_domains) == (TENANT_A, "completed", 1)


def test_no_token_or_a_bad_one_is_401(api: Api) -> None:
    path = f"{PREFIX}/batch/{uuid.uuid4()}/status"
    header_sets = {
        "no header": {},
        "not bearer": {"Authorization": f"Basic {TOKEN_A}"},
        "empty bearer": {"Authorization": "Bearer"},
        "unknown token": {"Authorization": "Bearer not-a-known-token"},
        "a token one character short": {"Authorization": f"Bearer {TOKEN_A[:-1]}"},
        "wrong secret": {"Authorization": f"Bearer {a_jwt(sub=uuid.uuid4(), secret='not-the-secret-but-as-long-as-one-should-be')}"},
        "expired": {"Authorization": f"Bearer {a_jwt(sub=uuid.uuid4(), expires_in=-90)}"},  # past the leeway
        "no exp": {"Authorization": "Bearer " + jwt.encode({"sub": str(uuid.uuid4())}, JWT_SECRET, algorithm="HS256")},
        "alg none": {"Authorization": "Bearer " + jwt.encode({"sub": str(uuid.uuid4()), "exp": time.time() + 600},
                                                             None, algorithm="none")},
        "sub not a uuid": {"Authorization": f"Bearer {jwt.encode({'sub': 'bob', 'exp': time.time() + 600}, JWT_SECRET)}"},
    }
    reasons = {}
    for case, headers in header_sets.items():
        for method, url, body in (("GET", path, None), ("POST", f"{PREFIX}/batch", {"domains": ["ok-1.test"]}),
                                  ("POST", f"{PREFIX}/scan", {"base_url": "ok-1.test"})):
            response = api.call(method, url, headers=headers, json=body)
            assert response.status_code == 401, (case, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "not_authenticated", case
            reasons[case] = response.json()["detail"]
    assert "expired" in reasons["expired"] and "exp" in reasons["no exp"]
    assert "no bearer token" in reasons["no header"]
    # The valid tokens of the same shapes are accepted (the test can fail the other way).
    assert api.call("GET", path, token=TOKEN_A).status_code == 404
    assert api.call("GET", path, token=a_jwt(sub=uuid.uuid4(), tenant=TENANT_A)).status_code == 404


def test_bad_input_is_refused_and_leaves_no_batch(api: Api, stack: Stack) -> None:
    batch = f"{PREFIX}/batch"
    json_headers = {"Content-Type": "application/json"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"domains": ["'
        for _ in range(9):
            yield b"a" * (1024 * 1024)

    cases: dict[str, tuple[int, str, dict[str, Any]]] = {
        "malformed JSON": (400, "malformed_json", {"content": b'{"domains": ["ok-1.test",', "headers": json_headers}),
        "empty list": (422, "empty_batch", {"json": {"domains": []}}),
        "no domains field": (422, "invalid_request", {"json": {"max_pages": 3}}),
        "domains not a list": (422, "invalid_request", {"json": {"domains": "ok-1.test"}}),
        "body not an object": (422, "invalid_request", {"json": ["ok-1.test"]}),
        "oversized list": (422, "batch_too_large", {"json": {"domains": [f"ok-{i}.test" for i in range(MAX_BATCH_SIZE + 1)]}}),
        "non-UUID batch_id": (422, "invalid_request", {"json": {"domains": ["ok-1.test"], "batch_id": "batch-7"}}),
        "non-UUID tenant_id": (422, "invalid_request", {"json": {"domains": ["ok-1.test"], "tenant_id": "acme"}}),
        "max_concurrent 0": (422, "invalid_request", {"json": {"domains": ["ok-1.test"], "max_concurrent": 0}}),
        "max_concurrent 257": (422, "invalid_request", {"json": {"domains": ["ok-1.test"], "max_concurrent": 257}}),
        "a 3000-character domain": (422, "invalid_request", {"json": {"domains": ["a" * 3000 + ".test"]}}),
        "huge body": (413, "request_too_large", {"content": b'{"domains": ["' + b"a" * (9 * 1024 * 1024) + b'"]}',
                                                 "headers": json_headers}),
        "huge chunked body": (413, "request_too_large", {"content": chunks(), "headers": json_headers}),
    }
    for case, (status, error, request) in cases.items():
        response = api.call("POST", batch, token=TOKEN_C, **request)
        assert response.status_code == status, (case, response.text)
        assert response.json()["error"] == error, (case, response.text)
        assert response.json()["detail"], case
    assert "batch_id" in api.call("POST", batch, token=TOKEN_C, **cases["non-UUID batch_id"][2]).json()["detail"]
    assert "max_concurrent" in api.call("POST", batch, token=TOKEN_C, **cases["max_concurrent 257"][2]).json()["detail"]
    assert str(MAX_BATCH_SIZE) in api.call("POST", batch, token=TOKEN_C, **cases["oversized list"][2]).json()["detail"]
    scan = api.call("POST", f"{PREFIX}/scan", token=TOKEN_C, json={"max_pages": 1})
    assert scan.status_code == 422 and "base_url" in scan.json()["detail"]
    for path in (f"{PREFIX}/batch/not-a-uuid/status", f"{PREFIX}/status/12345"):
        response = api.call("GET", path, token=TOKEN_C)
        assert response.status_code == 422 and "UUID" in response.json()["detail"], response.text
    assert count_rows(stack, TENANT_C) == 0
    # The service still answers after all of that, and the same token can submit.
    assert api.call("GET", "/docs").status_code == 200


def test_scan_is_a_batch_of_one_read_as_a_job(api: Api, stack: Stack) -> None:
    user = uuid.uuid4()
    token = a_jwt(sub=user, tenant=TENANT_B)
    submitted = api.call("POST", f"{PREFIX}/scan", token=token, json={"base_url": "https://ok-api-scan.test/", "max_pages": 3})
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.json()["status_url"] == f"{PREFIX}/status/{job_id}"
    final = api.poll(submitted.json()["status_url"], token)[-1]
    assert (final["status"], final["progress"], final["domain"]) == ("completed", 1.0, "ok-api-scan.test")
    assert final["job_id"] == job_id and final["created_by"] == str(user) and final["domain_id"] is None
    assert final["result_data"]["title"] and final["error"] is None
    assert final["job_metadata"]["outcome"]["status"] == "completed"
    # The job is a batch like any other: its status route reads it too.
    batch = api.call("GET", f"{PREFIX}/batch/{job_id}/status", token=token).json()
    assert (batch["status"], batch["total_domains"]) == ("completed", 1)
    [row] = rows(stack, batch_id=uuid.UUID(job_id))
    assert (row.tenant_id, row.created_by, row.options["max_pages"]) == (TENANT_B, user, 3)


def test_prefect_down_is_503_and_the_batch_is_failed_not_pending(stack: Stack, tmp_path: Path) -> None:
    with serving(stack, tmp_path, "prefect-down", PREFECT_API_URL=dead_url()) as down:
        batch_id = uuid.uuid4()
        started = time.monotonic()
        response = down.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                             json={"domains": ["ok-api-down.test"], "batch_id": str(batch_id)})
        assert time.monotonic() - started < 60
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "submit_failed"
        assert "could not start deployment batch-scrape/batch-scrape" in response.json()["detail"]
        [row] = rows(stack, batch_id=batch_id)
        assert row.status == "failed" and "could not start deployment" in row.error
        status = down.call("GET", f"{PREFIX}/batch/{batch_id}/status", token=TOKEN_A).json()
        assert status["status"] == "failed" and status["error"] == row.error  # an old poller stops
        health = down.call("GET", "/health")
        assert health.status_code == 503
        checks = health.json()["checks"]
        assert checks["prefect_api"]["status"] == checks["worker"]["status"] == "error"
        assert checks["database"]["status"] == checks["service"]["status"] == "ok"


def test_a_prefect_api_that_never_answers_is_a_503_within_15_s_and_the_row_says_why(
    stack: Stack, tmp_path: Path
) -> None:
    from helpers import silent_server

    with silent_server() as port, serving(stack, tmp_path, "prefect-hung",
                                          PREFECT_API_URL=f"http://127.0.0.1:{port}/api") as hung:
        batch_id = uuid.uuid4()
        started = time.monotonic()
        response = hung.call("POST", f"{PREFIX}/batch", token=TOKEN_A,
                             json={"domains": ["ok-api-hung.test"], "batch_id": str(batch_id)})
        elapsed = time.monotonic() - started
    assert response.status_code == 503 and elapsed < 15, (response.status_code, elapsed, response.text)
    assert "did not answer within 10 s" in response.json()["detail"]
    [row] = rows(stack, batch_id=batch_id)
    assert row.status == "failed" and "the Prefect API did not answer within 10 s" in row.error


def test_a_database_that_never_answers_is_a_503_within_10_s(stack: Stack, tmp_path: Path) -> None:
    from helpers import silent_server

    with silent_server() as port:
        hung_database = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{port}/scrapersky"
        with serving(stack, tmp_path, "database-hung", DATABASE_URL=hung_database) as hung:
            for method, path, body in (
                ("POST", f"{PREFIX}/batch", {"domains": ["ok-db-hung.test"]}),
                ("GET", f"{PREFIX}/batch/{uuid.uuid4()}/status", None),
            ):
                started = time.monotonic()
                response = hung.call(method, path, token=TOKEN_A, json=body)
                elapsed = time.monotonic() - started
                assert response.status_code == 503 and elapsed < 10, (path, response.status_code, elapsed)
                assert response.json()["error"] == "database_unavailable", response.text
                assert DB_PASSWORD not in response.text


def test_health_names_each_part_and_is_503_when_one_is_down(api: Api, stack: Stack, tmp_path: Path) -> None:
    healthy = api.call("GET", "/health")
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["status"] == "ok"
    assert set(healthy.json()["checks"]) == {"service", "database", "prefect_api", "worker"}
    assert all(check["status"] == "ok" and check["reason"] for check in healthy.json()["checks"].values())
    assert api.call("GET", f"{PREFIX}/health").status_code == 200  # the old router's path

    # A work pool nobody serves: no live worker.
    created = stack.prefect("work-pool", "create", "api-no-workers", "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stderr
    with serving(stack, tmp_path, "no-worker", "--pool", "api-no-workers") as lonely:
        response = lonely.call("GET", "/health")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["worker"] == {"status": "error", "reason": "no worker of work pool 'api-no-workers' is online"}
        assert checks["database"]["status"] == checks["prefect_api"]["status"] == "ok"

    # The database unreachable (its URL with a password): named, and the password nowhere.
    dead_database = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    with serving(stack, tmp_path, "db-down", DATABASE_URL=dead_database) as cut_off:
        response = cut_off.call("GET", "/health")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"]["status"] == "error" and checks["database"]["reason"]
        assert checks["prefect_api"]["status"] == checks["worker"]["status"] == "ok"
        status = cut_off.call("GET", f"{PREFIX}/batch/{uuid.uuid4()}/status", token=TOKEN_A)
        assert status.status_code == 503 and status.json()["error"] == "database_unavailable"
        submit = cut_off.call("POST", f"{PREFIX}/batch", token=TOKEN_A, json={"domains": ["ok-api-nodb.test"]})
        assert submit.status_code == 503, submit.text
        assert "nowhere" not in response.text + status.text + submit.text  # not even the URL


def test_docs_and_openapi_are_served(api: Api) -> None:
    docs = api.call("GET", "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = api.call("GET", "/openapi.json").json()
    for path in ("/batch", "/batch/{batch_id}/status", "/scan", "/status/{job_id}", "/health"):
        assert f"{PREFIX}{path}" in spec["paths"], path
    request = spec["components"]["schemas"]["BatchRequest"]
    assert {"domains", "max_pages", "max_concurrent", "batch_id", "tenant_id"} <= set(request["properties"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_no_secret_in_any_answer_or_log(api: Api, stack: Stack) -> None:
    """Last: every answer of every instance above, and each one's log (Prefect at DEBUG)."""
    api.call("GET", f"{PREFIX}/batch/{uuid.uuid4()}/status", token=TOKEN_A)  # at least one, with a token
    assert len(all_apis) >= 2 and sum(len(a.answers) for a in all_apis) > 50
    for each in all_apis:
        seen = "".join(each.answers) + each.log.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in seen, f"a secret in {each.log.name}"
    assert "Uvicorn running" in api.log.read_text()  # the log really is the service's
