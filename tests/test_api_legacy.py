"""The API's pure parts, as tables: the old status words, the old domain-entry keys, the
old status responses, and reading a bearer token into a caller."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from scrapersky.api.auth import Authenticator, service_user
from scrapersky.api.legacy import (
    batch_status_response,
    job_status_response,
    legacy_domain_entry,
    legacy_error,
    legacy_status,
)
from scrapersky.db.batches import BatchStatusReport
from scrapersky.errors import NotAuthenticated
from scrapersky.settings import Settings

TENANT = uuid.UUID("11111111-1111-1111-1111-111111111111")
DEFAULT = uuid.UUID("00000000-0000-0000-0000-000000000000")
SECRET = "table-test-secret-of-at-least-32-bytes"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("ours", "old"), [
    ("pending", "pending"),
    ("processing", "processing"),
    ("running", "processing"),  # rows our earlier versions wrote
    ("completed", "completed"),
    ("complete", "completed"),  # rows the old system wrote
    ("partial", "completed"),  # the failed count tells
    ("failed", "failed"),
    ("error", "failed"),
    ("cancelled", "failed"),  # the reason in error
    ("something-new", "something-new"),
])
def test_status_words_on_the_old_routes(ours: str, old: str) -> None:
    assert legacy_status(ours) == old


@pytest.mark.parametrize(("status", "error", "shown"), [
    ("cancelled", "cancelled by a user", "cancelled: cancelled by a user"),
    ("cancelled", None, "cancelled"),
    ("failed", "could not start deployment", "could not start deployment"),
    ("partial", None, None),
    ("completed", None, None),
])
def test_a_cancelled_batch_says_why(status: str, error: str | None, shown: str | None) -> None:
    assert legacy_error(status, error) == shown


OURS = {"status": "completed", "attempts": 1, "http_status": 200, "final_url": "https://ok-1.test/",
        "elapsed_ms": 1250, "error_type": None, "error": None, "truncated": False,
        "started_at": "2026-01-02T03:04:05+00:00", "finished_at": "2026-01-02T03:04:06.250000+00:00"}
THEIRS = {"status": "completed", "job_id": "j-1", "start_time": "2025-05-01T10:00:00",
          "end_time": "2025-05-01T10:00:02", "processing_time": 2.0, "error": None}


@pytest.mark.parametrize(("entry", "expected"), [
    (OURS, {**OURS, "start_time": OURS["started_at"], "end_time": OURS["finished_at"], "processing_time": 1.25}),
    ({**OURS, "status": "failed", "error_type": "timeout", "error": "no answer", "elapsed_ms": 0},
     {**OURS, "status": "failed", "error_type": "timeout", "error": "no answer", "elapsed_ms": 0,
      "start_time": OURS["started_at"], "end_time": OURS["finished_at"], "processing_time": 0.0}),
    ({"status": "failed", "error_type": "invalid_domain", "error": "not a domain", "attempts": 0},
     {"status": "failed", "error_type": "invalid_domain", "error": "not a domain", "attempts": 0,
      "start_time": None, "end_time": None, "processing_time": None}),
    (THEIRS, THEIRS),  # the old system's entry: already in the old keys
])
def test_domain_entries_carry_the_old_keys_beside_ours(entry: dict, expected: dict) -> None:
    assert legacy_domain_entry(entry) == expected


def report(**fields) -> BatchStatusReport:
    values = dict(
        batch_id=uuid.uuid4(), status="processing", total_domains=4, completed_domains=1, failed_domains=1,
        progress=0.5, created_at=T0, updated_at=T0 + timedelta(seconds=3), start_time=T0 + timedelta(seconds=1),
        end_time=None, processing_time=None, domain_statuses={"ok-1.test": {**OURS, "metadata": {"title": "One"}}},
        error=None, metadata={"flow_run_id": "f-1"},
    )
    values.update(fields)
    return BatchStatusReport(**values)


@pytest.mark.parametrize(("fields", "status", "error", "processing_time"), [
    ({}, "processing", None, 9.0),  # running: the time so far, as the old code computed
    ({"status": "pending", "start_time": None}, "pending", None, None),
    ({"status": "partial", "end_time": T0 + timedelta(seconds=5), "processing_time": 4.0, "progress": 1.0},
     "completed", None, 4.0),
    ({"status": "cancelled", "error": "stopped", "end_time": T0 + timedelta(seconds=5), "processing_time": 4.0},
     "failed", "cancelled: stopped", 4.0),
    ({"status": "failed", "error": "every domain failed", "processing_time": 2.5}, "failed", "every domain failed", 2.5),
])
def test_the_old_batch_status_response(fields: dict, status: str, error: str | None,
                                       processing_time: float | None) -> None:
    ours = report(**fields)
    old = batch_status_response(ours, now=T0 + timedelta(seconds=10))
    assert (old.status, old.error, old.processing_time) == (status, error, processing_time)
    assert old.batch_status == ours.status and old.batch_id == str(ours.batch_id)
    assert old.progress == ours.progress and old.created_at == T0.isoformat()
    assert old.start_time == (ours.start_time.isoformat() if ours.start_time else None)
    entry = old.domain_statuses["ok-1.test"]
    assert entry["processing_time"] == 1.25 and entry["metadata"] == {"title": "One"}


@pytest.mark.parametrize(("fields", "domain", "status", "result", "error"), [
    ({"status": "completed", "progress": 1.0}, "ok-1.test", "completed", {"title": "One"}, None),
    ({"status": "pending", "progress": 0.0, "domain_statuses": {}}, "ok-1.test", "pending", None, None),
    ({"status": "failed", "progress": 1.0, "domain_statuses": {"down.test": {
        "status": "failed", "error_type": "connect_error", "error": "refused", "metadata": None}}},
     "down.test", "failed", None, "connect_error: refused"),
    ({"status": "completed"}, None, "completed", None, None),  # not a batch of one: no domain
])
def test_the_old_job_status_response(fields: dict, domain: str | None, status: str, result: dict | None,
                                     error: str | None) -> None:
    job = job_status_response(report(**fields), domain=domain)
    assert (job.status, job.result_data, job.error, job.domain) == (status, result, error, domain)
    assert job.job_metadata["batch_status"] == fields["status"]
    assert "metadata" not in (job.job_metadata["outcome"] or {})


def authenticator(**settings) -> Authenticator:
    values = {"api_tokens": f"tok-1={TENANT}, scraper_sky_2024={DEFAULT}", "jwt_secret": SECRET}
    values.update(settings)
    return Authenticator(Settings(**values))


def token(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    # Built when the tables are collected, maybe long before the test runs: a day ahead.
    # A signed-in user's claims (Supabase's), unless the table says otherwise.
    return jwt.encode({"exp": time.time() + 86_400, "aud": "authenticated", "role": "authenticated", **claims},
                      secret, algorithm=algorithm)


USER = uuid.uuid4()


@pytest.mark.parametrize(("header", "tenant", "created_by"), [
    ("Bearer tok-1", TENANT, service_user(TENANT, "api-token")),
    ("bearer  tok-1 ", TENANT, service_user(TENANT, "api-token")),
    ("Bearer scraper_sky_2024", DEFAULT, service_user(DEFAULT, "api-token")),
    (f"Bearer {token({'sub': str(USER), 'tenant_id': str(TENANT)})}", TENANT, USER),
    (f"Bearer {token({'sub': str(USER), 'app_metadata': {'tenant_id': str(TENANT)}})}", TENANT, USER),
    (f"Bearer {token({'role': 'service_role', 'tenant_id': str(TENANT)})}", TENANT,
     service_user(TENANT, "jwt-role:service_role")),
])
def test_accepted_tokens(header: str, tenant: uuid.UUID, created_by: uuid.UUID) -> None:
    caller = authenticator().caller(header)
    assert (caller.tenant_id, caller.created_by) == (tenant, created_by)


@pytest.mark.parametrize(("header", "reason"), [
    (None, "no bearer token"),
    ("", "no bearer token"),
    ("Basic tok-1", "not 'Bearer <token>'"),
    ("Bearer", "not 'Bearer <token>'"),
    ("Bearer tok-2", "not accepted"),
    ("Bearer TOK-1", "not accepted"),
    (f"Bearer {token({'sub': str(USER)}, secret='another-secret-of-at-least-32-bytes')}", "not valid"),
    (f"Bearer {token({'sub': str(USER), 'exp': time.time() - 60})}", "expired"),  # past the leeway
    (f"Bearer {jwt.encode({'sub': str(USER)}, SECRET)}", "'exp'"),
    (f"Bearer {token({'sub': str(USER)}, secret=None, algorithm='none')}", "not valid"),
    (f"Bearer {token({'sub': 'bob'})}", "sub claim"),
    (f"Bearer {token({'tenant_id': 'acme'})}", "tenant_id claim"),
    (f"Bearer {token({'sub': str(USER), 'aud': 'elsewhere', 'tenant_id': str(TENANT)})}", "audience"),
])
def test_refused_tokens(header: str | None, reason: str) -> None:
    with pytest.raises(NotAuthenticated, match=reason) as refused:
        authenticator().caller(header)
    assert "tok-1" not in str(refused.value) and SECRET not in str(refused.value)


def test_the_audience_is_checked_unless_any_is_accepted() -> None:
    for_others = token({"aud": "elsewhere", "tenant_id": str(TENANT)})
    with pytest.raises(NotAuthenticated, match="audience"):
        authenticator().caller(f"Bearer {for_others}")
    assert authenticator(jwt_audience="*").caller(f"Bearer {for_others}").tenant_id == TENANT


def test_without_a_jwt_secret_a_jwt_is_not_accepted_and_nothing_configured_refuses_all() -> None:
    with pytest.raises(NotAuthenticated):
        authenticator(jwt_secret=None).caller(f"Bearer {token({'sub': str(USER)})}")
    nothing = authenticator(api_tokens="", jwt_secret=None)
    assert not nothing.accepts_anything
    with pytest.raises(NotAuthenticated):
        nothing.caller("Bearer tok-1")


@pytest.mark.parametrize("tokens", ["tok-1", "tok-1=not-a-uuid", "=" + str(TENANT), "a=b=c"])
def test_a_malformed_token_list_is_refused_without_showing_it(tokens: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings(api_tokens=tokens)
    assert "entry 1 is not TOKEN=TENANT_UUID" in str(refused.value)
    assert tokens not in str(refused.value)
