"""The Alembic migrations of ``batch_jobs`` and ``domain_results`` (env.py, versions/),
shipped in the package so an installed wheel can run ``scrapersky db upgrade``.
Configured in code by ``scrapersky.db.migrate``; no alembic.ini is needed."""
