"""The HTTP service: ScraperSky's old ``/api/v3/batch_page_scraper`` routes, served by
our batches (``scrapersky api``).

    app.py                 create_app(settings): routes, error translation, the body cap
    batch_page_scraper.py  the old router's paths over submit_batch / get_status
    legacy.py              the old request/response models and the status-word mapping
    auth.py                bearer tokens (static, JWT) read into a tenant
    health.py              GET /health: each part, ok or error
    body_limit.py          request bodies over the cap answered 413 before parsing
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
