"""Extraction must cost well under a plain full parse (see tests/bench_extract.py)."""

from bench_extract import corpus_pages, measure

#: The goal is 0.5 (README, measured by tests/bench_extract.py); this guard leaves
#: room for a noisy shared CI machine and still fails if extraction went back to
#: building the whole tree (about 1.0).
REGRESSION_BOUND = 0.6


def test_extraction_costs_well_under_a_full_parse() -> None:
    pages = corpus_pages()
    assert len(pages) >= 50
    result = measure(pages, repeat=2)
    assert result["ratio"] <= REGRESSION_BOUND, result
