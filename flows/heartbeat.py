"""A running batch's heartbeat: while its run lives, a thread moves the row's
``updated_at`` every few seconds (and saves the outcomes that wait for a save), whatever
its fetches are doing - a batch whose
domains take longer than ``stale_after`` each is still alive, and no recovery runs
it a second time. The heartbeat stops when the run ends, and when the batch is no
longer this run's (a recovery took it over: the run's writes are refused then too).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from uuid import UUID

from scrapersky.db import batches
from scrapersky.db.engine import Database

__all__ = ["Heartbeat", "HEARTBEAT_INTERVAL", "heartbeat_interval"]

#: Seconds between two heartbeats at most; never more than a third of stale_after.
HEARTBEAT_INTERVAL = 5.0

logger = logging.getLogger(__name__)


def heartbeat_interval(stale_after: float) -> float:
    """A beat every few seconds, at least three within ``stale_after``."""
    return min(HEARTBEAT_INTERVAL, stale_after / 3)


class Heartbeat:
    """``with Heartbeat(...):`` the batch is kept fresh while the block runs."""

    def __init__(
        self, database: Database, *, batch_id: UUID, tenant_id: UUID, flow_run_id: str | None, interval: float,
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.database, self.batch_id, self.tenant_id, self.flow_run_id = database, batch_id, tenant_id, flow_run_id
        self.interval = interval
        #: Called at every beat: outcomes that wait for the next one are saved even when
        #: no other outcome arrives for a while.
        self.flush = flush
        self.lost = threading.Event()  # set when the batch is no longer this run's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{batch_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            if self.flush is not None:
                try:
                    self.flush()
                except Exception as error:  # kept for the next save
                    logger.warning("batch %s: progress not saved: %s", self.batch_id, type(error).__name__)
            try:
                owned = self.database.run(lambda session: batches.heartbeat(
                    session, batch_id=self.batch_id, tenant_id=self.tenant_id, flow_run_id=self.flow_run_id))
            except Exception as error:  # the database away for a moment: beat again later
                logger.warning("batch %s: heartbeat not recorded: %s", self.batch_id, type(error).__name__)
                continue
            if not owned:
                logger.warning("batch %s is no longer run by flow run %s: heartbeat stopped",
                               self.batch_id, self.flow_run_id)
                self.lost.set()
                return
