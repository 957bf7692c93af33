"""The deprecation filters of pyproject.toml: ours are errors, third-party ones are shown."""

from __future__ import annotations

import warnings

import pytest


def warn_from(module: str, category: type[Warning] = DeprecationWarning) -> list[warnings.WarningMessage]:
    """A warning attributed to ``module`` (as ``warn(..., stacklevel)`` attributes it), under
    the session's filters; returns what was shown."""
    with warnings.catch_warnings(record=True) as shown:  # keeps the filters, records what passes
        warnings.warn_explicit("old API", category, f"{module.replace('.', '/')}.py", 1, module=module)
    return shown


@pytest.mark.parametrize(
    "module",
    ["scrapersky", "scrapersky.db.batches", "scrapersky.flows.batch_scrape", "scrapersky.tasks.persist",
     "scrapersky.web.fetch", "benchmarks.bench", "test_schema", "conftest", "pooler_workload"],
)
def test_a_deprecation_in_our_code_is_an_error(module: str) -> None:
    with pytest.raises(DeprecationWarning, match="old API"):
        warn_from(module)


def test_our_pending_deprecations_are_errors_too() -> None:
    with pytest.raises(PendingDeprecationWarning):
        warn_from("scrapersky.db.engine", PendingDeprecationWarning)


@pytest.mark.parametrize("module", ["prefect.utilities.asyncutils", "sqlalchemy.orm.query", "scraperskyish", "httpx"])
def test_a_third_party_deprecation_is_shown_not_hidden(module: str) -> None:
    assert [str(w.message) for w in warn_from(module)] == ["old API"]
