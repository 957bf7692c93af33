"""Score ``extract_metadata`` against the third-party page-metadata corpus.

The corpus (``shared/corpus`` next to the repository, or ``$SCRAPERSKY_CORPUS_DIR``)
holds ``cases/<name>/page.html`` and ``cases/<name>/expected.json``; its README
explains both and the "Scoring fairly" rules implemented here. The expected values
are other extractors' regression snapshots, so every field is compared through the
README's normalisation, and the few per-case caveats in ``notes`` that change how a
field is scored are read from the notes (free text, parsed defensively, see
``note_rules``).

Run it for the per-field table over every corpus (``--misses`` lists each miss):
``.venv/bin/python tests/corpora.py && .venv/bin/python tests/corpus.py``  (from the repository root).
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `tasks` and `scrapersky` importable
    sys.path.insert(0, str(ROOT))

from scrapersky.errors import DomainError  # noqa: E402
from scrapersky.metadata.extract import extract_metadata  # noqa: E402

__all__ = [
    "FIELDS",
    "CorpusScore",
    "FieldScore",
    "Miss",
    "Excluded",
    "NoteRules",
    "default_corpus_dir",
    "score_corpus",
    "note_rules",
    "norm_text",
    "norm_language",
    "norm_url",
    "norm_keywords",
    "field_matches",
    "main",
]

FIELDS = (
    "title",
    "description",
    "language",
    "canonical_url",
    "site_name",
    "image",
    "favicon_url",
    "logo_url",
    "keywords",
)
TEXT_FIELDS = ("title", "description", "site_name")
URL_FIELDS = ("canonical_url", "image", "favicon_url", "logo_url")
#: The per-field table of the README and the closing note (``table``), in this order.
TABLE_FIELDS = ("title", "description", "language", "canonical_url", "image", "logo_url", "site_name")

#: How the corpus README says to serve every page.
HEADERS = {"content-type": "text/html; charset=utf-8"}


def default_corpus_dir() -> Path:
    """``$SCRAPERSKY_CORPUS_DIR``, else ``shared/corpus`` beside the repository root."""
    override = os.environ.get("SCRAPERSKY_CORPUS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "corpus"


# --------------------------------------------------------------------------------------
# Comparison helpers (README "Scoring fairly")
# --------------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")  # str pattern: also matches NBSP and other Unicode spaces


def norm_text(value: str | None) -> str:
    """Text fields: collapse runs of whitespace and trim."""
    return _SPACE.sub(" ", value or "").strip()


def norm_language(value: str | None) -> str:
    """language: the primary subtag, case-insensitive (``en-US`` and ``en_us`` -> ``en``)."""
    return re.split(r"[-_]", norm_text(value), maxsplit=1)[0].lower()


def norm_url(value: str | None, base: str) -> tuple[str, str, str, str] | None:
    """URLs: resolve against the page url, then ignore http/https, compare the host
    case-insensitively and ignore a trailing slash of the path."""
    value = norm_text(value)
    if not value:
        return None
    parts = urlsplit(urljoin(base, value))
    return (parts.netloc.lower(), parts.path.rstrip("/"), parts.query, parts.fragment)


def norm_keywords(values: Iterable[str] | None) -> frozenset[str]:
    """keywords: a set of stripped (and whitespace-collapsed) strings; order and
    duplicates do not matter, empty items are dropped."""
    return frozenset(k for k in (norm_text(v) for v in values or ()) if k)


def field_matches(
    name: str,
    expected: Any,
    got: Any,
    *,
    url: str,
    prefix: bool = False,
    alternatives: Sequence[str] = (),
) -> bool:
    """Whether ``got`` is the ``expected`` value of field ``name`` under the README rules.

    ``prefix``: the expected text is only the start of the value (truncated upstream).
    ``alternatives``: other acceptable texts (raw <title> / og:title quoted in notes).
    """
    if name in URL_FIELDS:
        got_url = norm_url(got, url)
        return got_url is not None and got_url == norm_url(expected, url)
    if name == "language":
        return bool(norm_language(got)) and norm_language(got) == norm_language(expected)
    if name == "keywords":
        return norm_keywords(got) == norm_keywords(expected)
    value = norm_text(got)
    if not value:
        return False
    for candidate in (expected, *alternatives):
        wanted = norm_text(candidate)
        if wanted and (value.startswith(wanted) if prefix else value == wanted):
            return True
        if name == "title" and wanted and _one_site_segment_apart(value, wanted):
            return True
    return False


#: One site-name segment at either end of a title: "Headline | Site", "Site: Headline".
_SEGMENT_SEPARATOR = re.compile(r"\s+(?:[|\-–—·•»~/]|::)\s+|:\s+")


def _one_site_segment_apart(value: str, wanted: str) -> bool:
    """A title that differs from the expected one only by a site name the page puts
    before or after the headline, behind a separator ("Headline | Site" for
    "Headline", and the other way round). Extractors differ in whether they keep it;
    the issue's accuracy figures forgive it too. Nothing else is forgiven."""
    longer, shorter = (value, wanted) if len(value) > len(wanted) else (wanted, value)
    if longer.startswith(shorter):
        rest = longer[len(shorter):]
        match = _SEGMENT_SEPARATOR.match(rest)
        return bool(match) and bool(rest[match.end():].strip()) and not _SEGMENT_SEPARATOR.search(rest[match.end():])
    if longer.endswith(shorter):
        rest = longer[: -len(shorter)]
        match = None
        for match in _SEGMENT_SEPARATOR.finditer(rest):
            pass
        return bool(match) and match.end() == len(rest) and bool(rest[: match.start()].strip()) \
            and not _SEGMENT_SEPARATOR.search(rest[: match.start()])
    return False


# --------------------------------------------------------------------------------------
# Notes: the per-case caveats that change scoring
# --------------------------------------------------------------------------------------
#
# Every note in the corpus (56 cases, read one by one) is one of these kinds; only the
# first three change how a field is scored, the rest are handled by the README rules
# that apply to every case anyway or describe provenance:
#
#  1. "... stale ... / treat <field> as unreliable" (goose3-guardian1 favicon_url and
#     keywords, newspaper4k-cleveland_com1 canonical_url), and "a scorer may treat
#     <field> as absent" (newspaper4k-fox13now_001 image, an icon fallback rather than
#     page metadata): the field is informative only, listed but not scored.
#  2. "<field> is a prefix" / "truncated": compare the expected text as a prefix. The
#     README announces this rule; no note in the current corpus triggers it (the
#     descriptions ending in "..." are literally so in their pages).
#  3. "title is <lib>'s cleaned title, not the raw <title> ('...') or og:title ('...');
#     a scorer may accept either": the quoted values are accepted alternatives, and so
#     is the raw <title> without its trailing " | Site" segment - the corpus README's
#     own description of a cleaned title ("may drop a ' | Site' suffix").
#  -  relative / protocol-relative URLs: every expected URL is resolved against the
#     page url anyway; "first <link rel~=icon> ... apple-touch-icon", "canonical_url
#     comes from og:url", "language came from a <meta>", "description equals
#     og:description", charset declarations, double-escaped entities or markup kept
#     literally in a description, "keywords ... one item", "same page bytes also used
#     by ...", top_image / "no image expectation": explain a value, compared as is.
#
# Notes quote page values as Python literals ('...' or "..."); those quotes are masked
# before looking for key words, so a quoted title saying "stale" changes nothing.

#: A quoted Python string literal that starts after a space, bracket, '=' or ',', so
#: an apostrophe inside prose ("goose3's", "the page's") does not open one.
_LITERAL = re.compile(r"""(?<=[\s(\[=,])(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q)""", re.DOTALL)
_INFORMATIVE = re.compile(r"\b(stale|unreliable)\b|\btreat\s+\w+\s+as\s+absent\b", re.I)
_PREFIX = re.compile(r"\b(prefix|truncated)\b", re.I)
_TREAT = re.compile(r"\btreat\s+(\w+)\s+as\b", re.I)
_ALTERNATIVE_BEFORE = re.compile(r"(<title>|og:title)\s*\(\s*$", re.I)
_SITE_SUFFIX = re.compile(r"^(?P<title>.*\S)\s+[|\-–—:·•»]\s+[^|\-–—:·•»]+$")
#: A field named in prose: the identifier itself, not part of a tag ("<title>",
#: "name=keywords>") or of another identifier ("canonical" in "canonical_url").
_FIELD_NAME = re.compile(r"(?<![<\w])(" + "|".join(FIELDS) + r")(?![>\w])")


@dataclass
class NoteRules:
    """How the notes of one case change its scoring."""

    informative: dict[str, str] = field(default_factory=dict)  # field -> the note
    prefix: set[str] = field(default_factory=set)
    alternatives: dict[str, list[str]] = field(default_factory=dict)
    unparsed: list[str] = field(default_factory=list)  # notes that look relevant but name no field


def _masked(note: str) -> str:
    """The note with its quoted literals blanked out (same length)."""
    return _LITERAL.sub(lambda m: m.group("q") + " " * (len(m.group()) - 2) + m.group("q"), note)


def _subject(prose: str) -> str | None:
    """The field a note is about: the one in "treat <field> as", else the first named."""
    treat = _TREAT.search(prose)
    if treat and treat.group(1) in FIELDS:
        return treat.group(1)
    named = _FIELD_NAME.search(prose)
    return named.group(1) if named else None


def note_rules(notes: Any) -> NoteRules:
    """Parse the free-text ``notes`` of one case (a list of strings, tolerating a
    single string or junk) into the rules above."""
    if isinstance(notes, str):
        notes = [notes]
    rules = NoteRules()
    for note in notes if isinstance(notes, list) else []:
        if not isinstance(note, str):
            continue
        prose = _masked(note)
        subject = _subject(prose)
        if _INFORMATIVE.search(prose):
            if subject:
                rules.informative[subject] = note
            else:
                rules.unparsed.append(note)
        if _PREFIX.search(prose):
            if subject in TEXT_FIELDS:
                rules.prefix.add(subject)
            else:
                rules.unparsed.append(note)
        if subject == "title" and re.search(r"\baccept\b", prose, re.I):
            for literal in _LITERAL.finditer(note):
                source = _ALTERNATIVE_BEFORE.search(prose[: literal.start()])
                if source:
                    try:
                        value = ast.literal_eval(literal.group())
                    except (ValueError, SyntaxError):
                        continue
                    if isinstance(value, str) and value.strip():
                        rules.alternatives.setdefault("title", []).append(value)
                        cleaned = _SITE_SUFFIX.match(value.strip())
                        if source.group(1).lower() == "<title>" and cleaned:
                            rules.alternatives["title"].append(cleaned.group("title"))
    return rules


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Miss:
    case: str
    field: str
    expected: Any
    got: Any
    alternatives: tuple[str, ...] = ()
    prefix: bool = False


@dataclass(frozen=True)
class Excluded:
    """A field the notes call stale/unreliable/absent: informative, not scored."""

    case: str
    field: str
    expected: Any
    got: Any
    matches: bool
    reason: str


@dataclass
class FieldScore:
    field: str
    compared: int = 0
    correct: int = 0
    misses: list[Miss] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.compared if self.compared else None


@dataclass(repr=False)
class CorpusScore:
    corpus_dir: Path
    cases: list[str] = field(default_factory=list)
    fields: dict[str, FieldScore] = field(
        default_factory=lambda: {name: FieldScore(name) for name in FIELDS}
    )
    errors: dict[str, str] = field(default_factory=dict)  # case -> DomainError raised
    unparsed_notes: list[tuple[str, str]] = field(default_factory=list)

    def __getitem__(self, name: str) -> FieldScore:
        return self.fields[name]

    def __repr__(self) -> str:  # short: pytest prints it in failure tracebacks
        totals = ", ".join(f"{f.field}={f.correct}/{f.compared}" for f in self.fields.values())
        return f"CorpusScore({str(self.corpus_dir)!r}, {len(self.cases)} cases: {totals})"


def _case_dirs(corpus_dir: Path) -> list[Path]:
    return sorted(p for p in (corpus_dir / "cases").iterdir() if (p / "expected.json").is_file())


def score_corpus(corpus_dir: Path) -> CorpusScore:
    """Run ``extract_metadata`` on every case and compare each expected field.

    A DomainError (empty or binary page) counts as a miss for every scored field of
    the case; any other exception propagates (it is an extractor bug, not a score).
    """
    corpus_dir = Path(corpus_dir)
    score = CorpusScore(corpus_dir)
    for case_dir in _case_dirs(corpus_dir):
        case = case_dir.name
        data = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
        url = data["url"]
        expected: dict[str, Any] = data.get("expected") or {}
        rules = note_rules(data.get("notes"))
        # Other values the source states for a field (tests/corpora.py: html-metadata's
        # og:title beside its <title>), accepted like the notes' quoted alternatives.
        accepted: dict[str, list[str]] = data.get("accept") or {}
        score.cases.append(case)
        score.unparsed_notes.extend((case, note) for note in rules.unparsed)

        body = (case_dir / "page.html").read_bytes()
        try:
            meta = extract_metadata(body, dict(HEADERS), url)
        except DomainError as error:
            meta = None
            score.errors[case] = f"{type(error).__name__}: {error}"

        for name in FIELDS:
            if name not in expected:
                continue  # the source states nothing about this field
            want = expected[name]
            if meta is None:
                got: Any = f"<{score.errors[case]}>"
                ok = False
            else:
                got = getattr(meta, name)
                ok = field_matches(
                    name,
                    want,
                    got,
                    url=url,
                    prefix=name in rules.prefix,
                    alternatives=[*rules.alternatives.get(name, ()), *accepted.get(name, ())],
                )
            result = score.fields[name]
            if name in rules.informative:
                result.excluded.append(
                    Excluded(case, name, want, got, ok, rules.informative[name])
                )
                continue
            result.compared += 1
            if ok:
                result.correct += 1
            else:
                result.misses.append(
                    Miss(
                        case,
                        name,
                        want,
                        got,
                        tuple(rules.alternatives.get(name, ())),
                        name in rules.prefix,
                    )
                )
    return score


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _short(value: Any, width: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def report(score: CorpusScore) -> str:
    lines = [f"corpus: {score.corpus_dir}  ({len(score.cases)} cases)", ""]
    lines.append(f"{'field':<14} | {'correct/compared':>16} | {'accuracy%':>9}")
    lines.append(f"{'-' * 14}-+-{'-' * 16}-+-{'-' * 9}")
    for name in FIELDS:
        result = score.fields[name]
        accuracy = "-" if result.accuracy is None else f"{100 * result.accuracy:.1f}"
        lines.append(
            f"{name:<14} | {f'{result.correct}/{result.compared}':>16} | {accuracy:>9}"
        )
    misses = [m for name in FIELDS for m in score.fields[name].misses]
    lines += ["", f"misses ({len(misses)}):"]
    for miss in misses:
        extra = " [prefix]" if miss.prefix else ""
        if miss.alternatives:
            extra += f" [or {len(miss.alternatives)} quoted alternative(s)]"
        lines.append(
            f"  {miss.case} | {miss.field}{extra} | expected {_short(miss.expected)}"
            f" vs got {_short(miss.got)}"
        )
    excluded = [e for name in FIELDS for e in score.fields[name].excluded]
    if excluded:
        lines += ["", f"informative only, not scored ({len(excluded)}):"]
        for item in excluded:
            verdict = "matches" if item.matches else "differs"
            lines.append(
                f"  {item.case} | {item.field} | {verdict}: expected {_short(item.expected)}"
                f" vs got {_short(item.got)} | {_short(item.reason)}"
            )
    if score.errors:
        lines += ["", "DomainError (counted as misses):"]
        lines += [f"  {case} | {error}" for case, error in score.errors.items()]
    if score.unparsed_notes:
        lines += ["", "notes that look relevant but name no field (ignored):"]
        lines += [f"  {case} | {_short(note)}" for case, note in score.unparsed_notes]
    return "\n".join(lines)


def _cell(correct: int, compared: int) -> str:
    return "-" if not compared else f"{correct}/{compared} {100 * correct / compared:.1f}%"


def table(scores: dict[str, CorpusScore], fields: Sequence[str] = TABLE_FIELDS) -> str:
    """Per-field accuracy per corpus and over all of them, as a markdown table
    (correct/compared and the percentage; "-" where a corpus states no such value)."""
    names = list(scores)
    header = ["field", *[f"{n} ({len(scores[n].cases)})" for n in names], "all corpora"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in fields:
        cells = [_cell(scores[n][name].correct, scores[n][name].compared) for n in names]
        total = (sum(scores[n][name].correct for n in names), sum(scores[n][name].compared for n in names))
        lines.append("| " + " | ".join([name, *cells, _cell(*total)]) + " |")
    return "\n".join(lines)


def score_all() -> dict[str, CorpusScore]:
    """Every corpus (``shared`` and the fetched ones, see tests/corpora.py), scored.
    A missing corpus raises: it is an error, never an empty score."""
    from corpora import corpus_dirs

    scores = {}
    for name, corpus_dir in corpus_dirs().items():
        if not (corpus_dir / "cases").is_dir():
            raise FileNotFoundError(f"corpus {name} missing at {corpus_dir} (run tests/corpora.py)")
        scores[name] = score_corpus(corpus_dir)
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    """Print each corpus's misses (with ``--misses``) and the per-field table."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        scores = score_all()
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    if "--misses" in argv:
        for score in scores.values():
            print(report(score), end="\n\n")
    print(table(scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
