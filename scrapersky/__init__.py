"""ScraperSky Batch: the homepages of batches of domains scraped by a Prefect flow,
their site metadata and every domain's outcome recorded in ``batch_jobs``.

The public API::

    from scrapersky import BatchRequest, batch_scrape          # run a batch here
    from scrapersky import submit_batch, get_status             # hand one to a deployment
    from scrapersky import BatchOptions, BatchStatus, DomainOutcome, ScraperSkyError, Settings

The layers, bottom up (each imports only those below it; ``lint-imports`` checks):
``batch``, ``errors`` (the vocabulary); ``domains``, ``retry``, ``metadata`` (pure
work); ``db``, ``web`` (storage and the network); ``tasks``; ``settings``; ``flows``;
``client``; ``api``, ``doctor``, ``export``, ``farm``; ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .batch import BatchOptions, BatchRequest, BatchStatus, DomainOutcome, DomainStatus
from .errors import ScraperSkyError

if TYPE_CHECKING:  # imported on first use: Prefect takes seconds to import
    from .client import get_status, submit_batch
    from .flows.batch_scrape import batch_scrape
    from .settings import Settings

__all__ = [
    "BatchOptions",
    "BatchRequest",
    "BatchStatus",
    "DomainOutcome",
    "DomainStatus",
    "ScraperSkyError",
    "Settings",
    "batch_scrape",
    "get_status",
    "submit_batch",
]

_LAZY = {
    "batch_scrape": "scrapersky.flows.batch_scrape",
    "submit_batch": "scrapersky.client",
    "get_status": "scrapersky.client",
    "Settings": "scrapersky.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scrapersky' has no attribute {name!r}")
