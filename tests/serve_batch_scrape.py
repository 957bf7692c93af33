"""Serve the batch-scrape flow from this process (Prefect's runner), for the tests that
need a supervised run: cancellation through the API, SIGKILL of the flow's process.

    python tests/serve_batch_scrape.py DEPLOYMENT_NAME
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scrapersky.flows.batch_scrape import batch_scrape  # noqa: E402

if __name__ == "__main__":
    batch_scrape.serve(name=sys.argv[1], print_starting_message=False)
