"""A batch's progress while it runs: every outcome tallied as it arrives, saved every
few seconds (its ``domain_results`` row, the batch's counts and progress), and shown
(a progress artifact while it runs, summary and failure-table artifacts at the end).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.utilities.annotations import quote

from scrapersky.batch import BatchStatus, DomainOutcome
from scrapersky.db import batches
from scrapersky.db.engine import Database
from scrapersky.tasks.persist import save_progress

__all__ = ["ProgressRecorder", "PROGRESS_INTERVAL"]

#: Seconds between two progress saves: a small write every few seconds, never one a domain.
PROGRESS_INTERVAL = 3.0
_FAILURE_ROWS = 500


class ProgressRecorder:
    """Hears every outcome of a batch's run (from any thread); a run that dies loses at
    most the last ``interval`` seconds of them."""

    def __init__(
        self, database: Database, *, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None, total: int,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.database, self.batch_id, self.tenant_id = database, batch_id, tenant_id
        self.flow_run_id = flow_run_id  # the run that owns the batch: the only one that may write it
        self.total, self.interval = total, interval
        self.done = 0
        self.by_type: Counter[str] = Counter()
        self.failures: list[dict[str, object]] = []
        self._unsaved: list[DomainOutcome] = []
        self._last_save = time.monotonic()
        self._lock = threading.Lock()
        self._artifact = create_progress_artifact(0.0, description=f"batch {batch_id}")

    def __call__(self, outcome: DomainOutcome) -> None:
        """One more outcome; saves what is unsaved when ``interval`` has passed."""
        with self._lock:
            self.done += 1
            self.by_type[outcome.error_type or "completed"] += 1
            if outcome.error_type and len(self.failures) < _FAILURE_ROWS:
                self.failures.append({"domain": outcome.domain, "error_type": outcome.error_type,
                                      "attempts": outcome.attempts, "error": outcome.error})
            self._unsaved.append(outcome)
            due = time.monotonic() - self._last_save >= self.interval
            if due:
                batch, self._unsaved, self._last_save = self._unsaved, [], time.monotonic()
        if due:
            self._save(batch)

    def _save(self, outcomes: list[DomainOutcome]) -> None:
        # Best effort: when the database is away, the outcomes wait for the final
        # persist, which has its own retries.
        state = save_progress.with_options(retries=0)(
            self.database, batch_id=self.batch_id, tenant_id=self.tenant_id, flow_run_id=self.flow_run_id,
            outcomes=quote(outcomes), return_state=True,  # plain data: not walked by Prefect (README, Scale)
        )
        if not state.is_completed():
            with self._lock:
                self._unsaved[:0] = outcomes
        if self._artifact is not None and self.total:
            update_progress_artifact(self._artifact, 100.0 * self.done / self.total)

    def flush(self) -> None:
        """Save what waits when ``interval`` has passed since the last save (the heartbeat
        calls this: the last outcomes before a quiet spell are not left unsaved). A plain
        write, not a task run: it runs on the heartbeat's thread."""
        with self._lock:
            if not self._unsaved or time.monotonic() - self._last_save < self.interval:
                return
            batch, self._unsaved, self._last_save = self._unsaved, [], time.monotonic()
        try:
            self.database.run(lambda session: batches.save_progress(
                session, batch_id=self.batch_id, tenant_id=self.tenant_id, flow_run_id=self.flow_run_id,
                outcomes=batch))
        except BaseException:
            with self._lock:
                self._unsaved[:0] = batch
            raise

    def unsaved(self) -> list[DomainOutcome]:
        """The outcomes not saved yet (for the final persist)."""
        with self._lock:
            return list(self._unsaved)

    def publish_summary(self, status: BatchStatus, *, skipped: int) -> None:
        if self._artifact is not None:
            update_progress_artifact(self._artifact, 100.0)
        counts = "\n".join(f"| {kind} | {count} |" for kind, count in self.by_type.most_common())
        create_markdown_artifact(
            f"# Batch {self.batch_id}: {status}\n\n{self.done} domains fetched by this run"
            f" ({skipped} recorded by an earlier run).\n\n| outcome | domains |\n|---|---|\n{counts}\n",
            description="batch summary",
        )
        if self.failures:
            create_table_artifact(self.failures, description=f"failed domains (first {_FAILURE_ROWS})")
