"""Site metadata from a homepage: pure functions, no I/O.

``extract_metadata(body, headers, url)`` decodes the bytes once, parses only the
document head (the whole document only when the head lacks a title), and reads each
field through its fallbacks, commented where they are chosen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, SoupStrainer, Tag
from bs4.dammit import UnicodeDammit
from pydantic import BaseModel, Field

from scrapersky.errors import EmptyBody, NotHTML

__all__ = ["SiteMetadata", "extract_metadata", "decode_html"]

_HEAD_END = re.compile(r"</head\s*>|<body[\s>]", re.IGNORECASE)
_META_TAGS = SoupStrainer(["title", "meta", "link", "base"])
_SPACE = re.compile(r"\s+")
_SNIFF_BYTES = 1024


class SiteMetadata(BaseModel):
    """What a homepage says about its site."""

    title: str | None = None
    description: str | None = None
    keywords: list[str] = Field(default_factory=list)
    language: str | None = None
    canonical_url: str | None = None
    site_name: str | None = None
    image: str | None = None
    favicon_url: str | None = None
    favicon_guessed: bool = False
    open_graph: dict[str, str] = Field(default_factory=dict)
    twitter_card: dict[str, str] = Field(default_factory=dict)


def extract_metadata(body: bytes, headers: Mapping[str, str], url: str) -> SiteMetadata:
    """The site metadata of an HTML page; raises EmptyBody or NotHTML."""
    if not body.strip():
        raise EmptyBody("the page is empty")
    if b"\x00" in body[:_SNIFF_BYTES] and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotHTML("the page is binary content")
    html = decode_html(body, headers.get("content-type"))
    # The head is where metadata lives and is a small part of most pages: parse it
    # alone. Some pages put their title after the head: then read every meta tag.
    end = _HEAD_END.search(html)
    soup = BeautifulSoup(html[: end.start()] if end else html, "lxml")
    root = soup.find("html")
    lang = _attr(root, "lang") if root is not None else None
    if end and soup.find("title") is None:
        soup = BeautifulSoup(html, "lxml", parse_only=_META_TAGS)
    meta = _meta_values(soup)
    base = _base_url(soup, url)

    def absolute(link: str | None) -> str | None:
        return _absolute(link, base)

    favicon, guessed = _favicon(soup, base)
    return SiteMetadata(
        # <title> through get_text(): .string is None as soon as the title has markup.
        title=_clean_title(soup) or meta.get("og:title") or meta.get("twitter:title"),
        description=meta.get("description")
        or meta.get("og:description")
        or meta.get("twitter:description"),
        keywords=_keywords(meta.get("keywords")),
        language=_language(lang, headers, meta),
        canonical_url=absolute(_link_href(soup, "canonical")) or absolute(meta.get("og:url")),
        site_name=meta.get("og:site_name") or meta.get("application-name"),
        image=absolute(meta.get("og:image") or meta.get("og:image:url") or meta.get("twitter:image")),
        favicon_url=favicon,
        favicon_guessed=guessed,
        open_graph={k: v for k, v in meta.items() if k.startswith("og:")},
        twitter_card={k: v for k, v in meta.items() if k.startswith("twitter:")},
    )


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode once: Content-Type charset, then BOM, then <meta charset>, then detection."""
    declared = _charset(content_type)
    dammit = UnicodeDammit(
        body,
        known_definite_encodings=[declared] if declared else [],
        is_html=True,
    )
    if dammit.unicode_markup is None:
        return body.decode("utf-8", errors="replace")
    return dammit.unicode_markup


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("'\"") or None
    return None


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = _SPACE.sub(" ", value).strip()
    return value or None


def _clean_title(soup: BeautifulSoup) -> str | None:
    tag = soup.find("title")
    if tag is None:
        return None
    text = tag.get_text()
    if "<" in text:
        # lxml keeps markup inside <title> as text ("A <b>B</b>"): keep the words.
        text = BeautifulSoup(text, "lxml").get_text()
    return _text(text)


def _meta_values(soup: BeautifulSoup) -> dict[str, str]:
    """name/property -> content of every <meta>, the first occurrence winning."""
    values: dict[str, str] = {}
    for tag in soup.find_all("meta"):
        key = tag.get("property") or tag.get("name") or tag.get("itemprop")
        content = _text(_attr(tag, "content"))
        if isinstance(key, str) and content:
            values.setdefault(key.strip().lower(), content)
    return values


def _attr(tag: Tag, name: str) -> str | None:
    value = tag.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value


def _link_href(soup: BeautifulSoup, rel: str) -> str | None:
    for tag in soup.find_all("link", href=True):
        if rel in _rels(tag):
            return _attr(tag, "href")
    return None


def _rels(tag: Tag) -> list[str]:
    rel = tag.get("rel") or []
    if isinstance(rel, str):
        rel = rel.split()
    return [token.lower() for token in rel]


def _base_url(soup: BeautifulSoup, url: str) -> str:
    base = soup.find("base", href=True)
    if base is not None:
        resolved = _absolute(_attr(base, "href"), url)
        if resolved:
            return resolved
    return url


def _absolute(link: str | None, base: str) -> str | None:
    link = (link or "").strip()
    if not link or link.startswith(("data:", "javascript:", "#")):
        return None
    resolved = urljoin(base, link)
    return resolved if urlsplit(resolved).scheme in ("http", "https") else None


def _favicon(soup: BeautifulSoup, base: str) -> tuple[str | None, bool]:
    # Declared icons first ("icon", "shortcut icon"), then apple-touch-icon, then the
    # conventional /favicon.ico, which is a guess and says so.
    icons: list[Tag] = []
    touch: list[Tag] = []
    for tag in soup.find_all("link", href=True):
        rels = _rels(tag)
        if "icon" in rels:
            icons.append(tag)
        elif any(rel.startswith("apple-touch-icon") for rel in rels):
            touch.append(tag)
    for tag in icons + touch:
        href = _absolute(_attr(tag, "href"), base)
        if href:
            return href, False
    return urljoin(base, "/favicon.ico"), True


def _keywords(value: str | None) -> list[str]:
    if not value:
        return []
    seen: dict[str, None] = {}
    for word in value.split(","):
        word = word.strip()
        if word:
            seen.setdefault(word, None)
    return list(seen)


def _language(lang: str | None, headers: Mapping[str, Any], meta: dict[str, str]) -> str | None:
    # <html lang>, then the Content-Language header, then og:locale (en_US -> en-US).
    candidates = [
        lang,
        (headers.get("content-language") or "").split(",")[0],
        meta.get("og:locale"),
        meta.get("language") or meta.get("content-language"),
    ]
    for candidate in candidates:
        value = _text(candidate)
        if value:
            return value.replace("_", "-")
    return None
