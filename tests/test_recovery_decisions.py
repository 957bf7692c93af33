"""What the recovery does with each batch still pending or running (``decide``): a table
of rows as the recovery sees them and what Prefect says of their run. Pure: no database,
no Prefect."""

from __future__ import annotations

import uuid

import pytest

from scrapersky.db.batches import Candidate
from scrapersky.flows.recover_stale_batches import decide


def batch(*, owner: str | None = "run-1", stale: bool = False, released: dict | None = None, attempts: int = 0,
          foreign: bool = False, foreign_domains: list[str] | None = None, status: str = "processing") -> Candidate:
    return Candidate(batch_id=uuid.uuid4(), tenant_id=uuid.uuid4(), status=status, owner=owner, generation=0,
                     stale=stale, released=released, attempts=attempts, options={}, foreign=foreign,
                     foreign_domains=foreign_domains)


@pytest.mark.parametrize(("seen", "run_state", "action", "reason_has"), [
    # A run that moves, or waits for a worker, is left alone, stale or not (a queue may be long).
    (batch(), "RUNNING", "leave", ""),
    (batch(status="pending"), "SCHEDULED", "leave", ""),
    (batch(status="pending", stale=True), "SCHEDULED", "leave", ""),
    (batch(status="pending", stale=True), "PENDING", "leave", ""),
    # Prefect says the run is over while the batch is not: resumed at once, stale or not.
    (batch(), "CRASHED", "resume", "is crashed"),
    (batch(), "FAILED", "resume", "is failed"),
    (batch(), "COMPLETED", "resume", "is completed"),
    # Someone cancelled the run: the batch ends cancelled.
    (batch(), "CANCELLED", "cancel", "was cancelled"),
    # Prefect still says running, but nothing moved for stale_after: its process is gone.
    (batch(stale=True), "RUNNING", "resume", "its process is gone"),
    (batch(stale=True), "CANCELLING", "resume", "its process is gone"),
    # A run Prefect does not know: resumed once stale only (another server may know it).
    (batch(), "MISSING", "leave", ""),
    (batch(stale=True), "MISSING", "resume", "unknown to Prefect"),
    # Released by its run (a stop, a crash): resumed at once.
    (batch(owner=None, status="pending", released={"reason": "flow run x was stopped (SIGTERM)"}), None, "resume",
     "released: flow run x was stopped"),
    # No owner, not released: a submission whose run never came; resumed once stale.
    (batch(owner=None, status="pending"), None, "leave", ""),
    (batch(owner=None, status="pending", stale=True), None, "resume", "no run for longer than stale_after"),
    # Rows another writer left: resumed when they list their domains, else failed with the reason.
    (batch(owner=None, status="pending", stale=True, foreign=True), None, "fail",
     "left pending by an earlier backend; its domains were never recorded: submit them again"),
    (batch(owner=None, status="processing", stale=True, foreign=True, foreign_domains=["a.test", "b.test"]), None,
     "resume", "resumed with the 2 domains its row recorded"),
    (batch(owner=None, status="pending", foreign=True), None, "leave", ""),
    # Three runs died already: one more is one too many.
    (batch(attempts=3), "CRASHED", "fail", "recovery gave up after 4 runs of the batch died"),
    (batch(attempts=2), "CRASHED", "resume", "is crashed"),
    # A release by a stop is not a death; one by a crash was counted when it was made.
    (batch(owner=None, status="pending", attempts=3, released={"reason": "stopped", "crashed": False}), None,
     "resume", "released"),
    (batch(owner=None, status="pending", attempts=4, released={"reason": "crashed", "crashed": True}), None,
     "fail", "gave up after 4 runs"),
])
def test_decide(seen: Candidate, run_state: str | None, action: str, reason_has: str) -> None:
    decision = decide(seen, run_state, max_attempts=3)
    assert decision.action == action, decision
    assert reason_has in decision.reason, decision
