"""Whole batches through real Prefect runs, a real local web farm and both databases."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from scrapersky.settings import Settings

from scrapersky.db.batches import BatchStatusReport, get_batch_status
from scrapersky.flows.batch_scrape import batch_scrape
from scrapersky.batch import BatchOptions, BatchRequest
from scrapersky.errors import BatchNotFound
from scrapersky.farm import Farm

pytestmark = pytest.mark.usefixtures("prefect_api")

TENANT = uuid.UUID("11111111-1111-1111-1111-111111111111")
OTHER_TENANT = uuid.UUID("22222222-2222-2222-2222-222222222222")


def options(farm: Farm, **overrides) -> BatchOptions:
    values = dict(retries=2, retry_backoff=0.01, concurrency=16)
    values.update(overrides)
    return BatchOptions(**values)


def status_of(batch_id: uuid.UUID, tenant_id: uuid.UUID = TENANT) -> BatchStatusReport:
    async def read() -> BatchStatusReport:
        async with Settings().database().session() as session:
            return await get_batch_status(session, batch_id, tenant_id)

    return asyncio.run(read())


def run(domains: list[str], opts: BatchOptions, **kwargs):
    state = batch_scrape(BatchRequest(domains=domains, tenant_id=TENANT, options=opts, **kwargs), return_state=True)
    batch_id = kwargs.get("batch_id") or uuid.UUID(str(state.state_details.flow_run_id))
    return state, batch_id


def test_two_hundred_domains_end_partial_with_every_failure_recorded(database: str, farm: Farm) -> None:
    good = [f"ok-{i}.test" for i in range(150)]
    failing = [f"err500-{i}.test" for i in range(30)]
    refused = [f"down-{i}.refused.test" for i in range(20)]

    state, batch_id = run(good + failing + refused, options(farm))

    assert state.is_completed()
    assert state.result() == "partial"
    report = status_of(batch_id)
    assert (report.status, report.total_domains, report.completed_domains, report.failed_domains) == (
        "partial", 200, 150, 50,
    )
    assert report.progress == 1.0
    assert report.start_time <= report.end_time and report.processing_time > 0
    assert report.metadata["flow_run_id"] == str(batch_id)
    assert report.metadata["input"] == {"submitted": 200, "duplicates": 0, "invalid": 0, "domains": 200}

    statuses = report.domain_statuses
    assert len(statuses) == 200
    for domain in good:
        entry = statuses[domain]
        assert entry["status"] == "completed" and entry["attempts"] == 1 and entry["http_status"] == 200
        assert entry["metadata"]["title"] == domain.split(".")[0]  # "<name> | Farm" minus the site suffix
        assert entry["metadata"]["description"] == f"The homepage of {domain}."
        assert entry["metadata"]["language"] == "en"
        assert entry["metadata"]["canonical_url"] == f"http://{domain}/"
        assert entry["metadata"]["favicon_url"] == f"http://{domain}/static/favicon.png"
        assert entry["finished_at"] >= entry["started_at"]
    for domain in failing:
        entry = statuses[domain]
        assert (entry["status"], entry["error_type"], entry["http_status"], entry["attempts"]) == (
            "failed", "http_error", 500, 3,
        )
        assert entry["error"] and entry["metadata"] is None
        assert farm.hits[domain] == 3  # retried per the policy, and only that often
    for domain in refused:
        entry = statuses[domain]
        assert (entry["status"], entry["error_type"], entry["attempts"]) == ("failed", "connect_error", 3)
        assert "refused" in entry["error"].lower()
    assert all(farm.hits[d] == 1 for d in good)

    # The run's artifacts: progress at 100%, a summary, the failed domains' table.
    async def artifacts():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[batch_id]))
            )

    found = {artifact.type: artifact for artifact in asyncio.run(artifacts())}
    assert set(found) == {"progress", "markdown", "table"}
    assert found["progress"].data == 100.0
    assert "| completed | 150 |" in found["markdown"].data and "| http_error | 30 |" in found["markdown"].data
    assert len(json.loads(found["table"].data)) == 50


def test_permanent_failures_are_tried_once_and_odd_pages_do_not_crash(database: str, farm: Farm) -> None:
    domains = [
        "notfound-1.test", "nested-1.test", "notitle-1.test", "empty-1.test", "binary-1.test",
        "flaky-1.test", "loop-1.test", "big-1.test", "not a domain", "NESTED-1.test", "http://nested-1.test/x",
        "refresh-5.test", "chain-1.test",
    ]
    state, batch_id = run(domains, options(farm, max_page_bytes=50_000, max_redirects=3))

    assert state.is_completed()
    report = status_of(batch_id)
    s = report.domain_statuses
    assert s["notfound-1.test"] | {"metadata": None} == s["notfound-1.test"]
    assert (s["notfound-1.test"]["error_type"], s["notfound-1.test"]["attempts"]) == ("http_error", 1)
    assert farm.hits["notfound-1.test"] == 1
    assert s["nested-1.test"]["metadata"]["title"] == "Nested bold title"
    assert s["notitle-1.test"]["status"] == "completed"
    assert s["notitle-1.test"]["metadata"]["title"] is None
    assert (s["empty-1.test"]["error_type"], s["empty-1.test"]["attempts"]) == ("empty_body", 1)
    assert (s["binary-1.test"]["error_type"], s["binary-1.test"]["attempts"]) == ("not_html", 1)
    assert (s["flaky-1.test"]["status"], s["flaky-1.test"]["attempts"]) == ("completed", 2)
    assert (s["loop-1.test"]["error_type"], s["loop-1.test"]["attempts"]) == ("too_many_redirects", 1)
    assert s["big-1.test"]["status"] == "completed" and s["big-1.test"]["truncated"] is True
    assert s["big-1.test"]["metadata"]["title"] == "big-1"
    assert (s["not a domain"]["error_type"], s["not a domain"]["attempts"]) == ("invalid_domain", 0)
    # a meta refresh is followed like a redirect, and bounded like one
    assert s["refresh-5.test"]["final_url"] == "http://ok-5.test/"
    assert s["refresh-5.test"]["metadata"]["title"] == "ok-5"
    assert s["chain-1.test"]["error_type"] == "too_many_redirects"
    chain = [farm.hits[f"chain-{n}.test"] for n in range(1, 7)]
    assert chain == [1, 1, 1, 1, 0, 0]  # the page, then 3 refreshes (max_redirects=3)
    # duplicates collapse into one domain, and the batch says how many were dropped
    assert report.total_domains == 11
    assert report.metadata["input"] == {"submitted": 13, "duplicates": 2, "invalid": 1, "domains": 10}
    assert (report.completed_domains, report.failed_domains) == (5, 6)


def test_a_batch_where_everything_fails_is_still_persisted_and_the_run_fails(database: str, farm: Farm) -> None:
    # Every scrape task run ends Failed; the persist step must still run (it gets plain
    # data, never the failed futures that would make Prefect skip it silently).
    domains = [f"err500-{i}.test" for i in range(5)] + ["notfound-9.test"]
    state, batch_id = run(domains, options(farm, retries=1))

    assert state.is_failed()
    report = status_of(batch_id)
    assert (report.status, report.completed_domains, report.failed_domains, report.progress) == (
        "failed", 0, 6, 1.0,
    )
    assert report.end_time is not None
    assert {e["attempts"] for d, e in report.domain_statuses.items() if d.startswith("err500")} == {2}


def test_a_defect_in_a_task_is_recorded_not_hidden(
    database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scrapersky.tasks.attempt as attempt_module

    def broken(*args, **kwargs):
        raise RuntimeError("extractor bug")

    monkeypatch.setattr(attempt_module, "extract_metadata", broken)
    state, batch_id = run(["ok-1.test", "ok-2.test"], options(farm))

    report = status_of(batch_id)
    assert report.status == "failed"
    assert state.is_failed()
    assert set(report.domain_statuses) == {"ok-1.test", "ok-2.test"}  # the loop below checks both
    for entry in report.domain_statuses.values():
        assert entry["error_type"] == "internal_error"
        assert "extractor bug" in entry["error"]
        assert entry["attempts"] == 1  # a defect is not retried


def test_resubmitting_a_batch_does_not_fetch_completed_domains_again(database: str, farm: Farm) -> None:
    batch_id = uuid.uuid4()
    run(["ok-1.test", "err500-1.test"], options(farm, retries=0), batch_id=batch_id)
    assert status_of(batch_id).status == "partial"

    state, _ = run(["ok-1.test", "err500-1.test"], options(farm, retries=0), batch_id=batch_id)

    assert farm.hits["ok-1.test"] == 1 and farm.hits["err500-1.test"] == 2
    report = status_of(batch_id)
    assert (report.total_domains, report.completed_domains, report.failed_domains) == (2, 1, 1)

    # A batch that ended is not grown: other domains are a new batch (issue 17).
    grown, _ = run(["ok-1.test", "err500-1.test", "ok-2.test"], options(farm, retries=0), batch_id=batch_id)
    assert grown.is_failed() and "ok-2.test not among them" in grown.message
    assert farm.hits["ok-2.test"] == 0 and farm.hits["err500-1.test"] == 2
    assert (status_of(batch_id).status, status_of(batch_id).total_domains) == ("partial", 2)


def test_another_tenants_batch_is_not_found(database: str, farm: Farm) -> None:
    state, batch_id = run(["ok-1.test"], options(farm))
    assert status_of(batch_id).status == "completed"
    with pytest.raises(BatchNotFound):
        status_of(batch_id, OTHER_TENANT)
    # ... and cannot be adopted by the other tenant either.
    other = batch_scrape(
        BatchRequest(domains=["ok-2.test"], tenant_id=OTHER_TENANT, batch_id=batch_id, options=options(farm)),
        return_state=True,
    )
    assert other.is_failed()
    assert farm.hits["ok-2.test"] == 0
    assert status_of(batch_id).status == "completed"


def insert_pending(batch_id: uuid.UUID) -> None:
    from scrapersky.db.models import BatchJob

    async def insert() -> None:
        async with Settings().database().session() as session:
            session.add(BatchJob(batch_id=batch_id, tenant_id=TENANT, processor_type="domain_metadata",
                                 status="pending", batch_metadata={}))

    asyncio.run(insert())


def test_a_refused_batch_does_not_stay_pending(database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_id = uuid.uuid4()
    insert_pending(batch_id)
    monkeypatch.setenv("SCRAPERSKY_MAX_BATCH_SIZE", "2")

    state, _ = run(["ok-1.test", "ok-2.test", "ok-3.test"], options(farm), batch_id=batch_id)

    assert state.is_failed() and "limit is 2" in state.message
    assert sum(farm.hits.values()) == 0
    report = status_of(batch_id)
    assert report.status == "failed"
    assert "limit is 2" in report.error
    assert str(state.state_details.flow_run_id) in report.error


def test_a_refused_resubmission_keeps_the_results_it_had(
    database: str, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = uuid.uuid4()
    run(["ok-1.test"], options(farm), batch_id=batch_id)
    monkeypatch.setenv("SCRAPERSKY_MAX_BATCH_SIZE", "2")

    state, _ = run(["ok-1.test", "ok-2.test", "ok-3.test"], options(farm), batch_id=batch_id)

    assert state.is_failed()
    assert farm.hits["ok-2.test"] == 0
    report = status_of(batch_id)
    assert (report.status, report.completed_domains) == ("completed", 1)


def test_an_ended_batch_run_again_keeps_the_reasons_of_its_invalid_entries(database: str, farm: Farm) -> None:
    """Registered with an entry that is not a domain, the batch records the reason found in
    the entry as sent; run again by its id, the run does not re-read the recorded key (an
    escaped NUL would then be "Codepoint U+005C")."""
    from scrapersky.client import register_batch

    batch_id = uuid.uuid4()
    opts = options(farm, retries=0)
    asyncio.run(register_batch(["ok-1.test", "\x00x.com", "err500-2.test"], TENANT, batch_id=batch_id, options=opts))
    for _ in range(2):  # its first run, then the same batch run again by its id
        batch_scrape(BatchRequest(batch_id=batch_id, tenant_id=TENANT, options=opts), return_state=True)
        report = status_of(batch_id)
        assert (report.status, report.completed_domains, report.failed_domains) == ("partial", 1, 2), report
        assert "contains a control character" in report.domain_statuses["\\x00x.com"]["error"], report.domain_statuses
    assert farm.hits["err500-2.test"] == 2  # a failure is tried again; the invalid entry never
