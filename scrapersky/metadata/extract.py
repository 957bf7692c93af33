"""Site metadata from a homepage: pure functions, no I/O.

``extract_metadata(body, headers, url)`` decodes the bytes once, then parses twice,
cheaply: the head in full (it is small and holds most metadata), and the body through
``_BodyScan``, a Beautiful Soup element filter that builds only the few tags metadata
needs (contact and social links, logo images, JSON-LD, late meta tags) while every
other tag streams past it once for tech-stack evidence. Each field's fallbacks are
commented where they are chosen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, Tag
from bs4.dammit import UnicodeDammit
from lxml import etree
from pydantic import BaseModel, Field

from scrapersky.errors import EmptyBody, NotHTML

from .contacts import SOCIAL_HREF_MARKERS, email_from_mailto, emails_in, phone_from_tel, phones_in, region_hint, social_profile
from .structured_data import Organization, json_ld_items, organization_in, website_name_in
from .tech_stack import Evidence, TechStack

__all__ = ["SiteMetadata", "extract_metadata", "decode_html"]

# Where the head ends: the first </head> or <body that is markup - not inside a
# comment, nor in the text of a script, style, title or textarea (a script's
# '<body>' string is no body). Those are matched whole and stepped over.
_HEAD_SCAN = re.compile(
    r"<!--.*?(?:-->|\Z)"
    r"|<(script|style|title|textarea|xmp|noframes)\b[^>]*>.*?(?:</\1\s*>|\Z)"
    r"|(?P<end></head\s*>|<body[\s/>])",
    re.IGNORECASE | re.DOTALL,
)
_SPACE = re.compile(r"\s+")
_SNIFF_BYTES = 1024
_TEXT_LIMIT = 200_000  # characters of visible text searched for addresses and numbers
_URL_ATTRIBUTES = ("src", "href", "action", "data-src")
_CONTACT_HREF = re.compile(
    r"^\s*(?:mailto:|tel:)|" + "|".join(re.escape(marker) for marker in SOCIAL_HREF_MARKERS), re.IGNORECASE
)
_LOGO = re.compile(r"logo", re.IGNORECASE)
_REFRESH = re.compile(r"^\s*\d+(?:\.\d*)?\s*[;,]\s*(?:url\s*=\s*)?['\"]?([^'\"\s][^'\"]*)", re.IGNORECASE)


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
    logo_url: str | None = None
    open_graph: dict[str, str] = Field(default_factory=dict)
    twitter_card: dict[str, str] = Field(default_factory=dict)
    organization: Organization | None = None
    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    social_links: dict[str, str] = Field(default_factory=dict)
    tech_stack: TechStack = Field(default_factory=TechStack)
    refresh_url: str | None = None


class _Body:
    """The body, parsed by lxml's C parser and read through XPath: no Python object is
    made for the thousands of elements metadata does not need. Only contact and
    social links, logo images, JSON-LD, late meta tags and tech-stack evidence are read."""

    _PARSER = etree.HTMLParser(recover=True, no_network=True, remove_comments=True)
    # Walks of the tree in C; Python sees only the elements that can carry evidence.
    _URLS = etree.XPath("//script/@src | //link/@href | //img/@src | //iframe/@src | //form/@action")
    # Marker attributes sit where frameworks put them: the body, its first two levels
    # (an app's root element) and scripts. Looking only there keeps this walk short.
    _ROOT_MARKERS = "@ng-version or @data-reactroot or @data-v-app or @data-server-rendered"
    _MARKED = etree.XPath(
        "/html/body[contains(@class, 'et_divi_theme') or contains(@class, 'et_pb_')]"
        " | //script[@id='__NEXT_DATA__' or contains(@class, 'yoast-schema-graph')]"
        f" | /html/body/*[{_ROOT_MARKERS}] | /html/body/*/*[{_ROOT_MARKERS}]"
    )
    # Links to a mailbox, a phone or a social profile (chosen in C, among hundreds).
    _CONTACT_LINKS = etree.XPath(
        "//a[starts-with(@href, 'mailto:') or starts-with(@href, 'tel:') or starts-with(@href, 'MAILTO:')"
        + "".join(f" or contains(@href, '{marker}')" for marker in SOCIAL_HREF_MARKERS) + "]/@href",
        smart_strings=False,
    )
    _INLINE_SCRIPTS = etree.XPath("//script[not(@src)]/text()", smart_strings=False)

    def __init__(self, html: str, evidence: Evidence) -> None:
        self.doc = None
        if not html.strip():
            return
        try:
            self.doc = etree.fromstring(html, self._PARSER)
        except (etree.ParserError, etree.XMLSyntaxError, ValueError):
            return
        if self.doc is None:
            return
        for url in self._URLS(self.doc):
            evidence.url(url.getparent().tag, url.attrname, str(url))
        for element in self._MARKED(self.doc):
            evidence.attributes(element.tag, element.attrib)
        for script in self._INLINE_SCRIPTS(self.doc):
            evidence.script(script)

    def find_all(self, name: str) -> list[Any]:
        return [] if self.doc is None else list(self.doc.iter(name))

    def contact_links(self) -> list[str]:
        return [] if self.doc is None else self._CONTACT_LINKS(self.doc)

    def text(self) -> str:
        """The body's visible text (capped), where addresses and numbers are written.

        Call it last: it drops the scripts and styles from the tree."""
        if self.doc is None:
            return ""
        etree.strip_elements(self.doc, "script", "style", "template", with_tail=False)
        return etree.tostring(self.doc, method="text", encoding="unicode")[:_TEXT_LIMIT]


def _head_end(html: str) -> int | None:
    """Where the head ends (the start of the first real </head> or <body), or None."""
    for match in _HEAD_SCAN.finditer(html):
        if match.group("end"):
            return match.start()
    return None


def _observe(evidence: Evidence, name: str, attrs: Mapping[str, Any]) -> None:
    evidence.attributes(name, attrs)
    for key in _URL_ATTRIBUTES:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            evidence.url(name, key, value)


def extract_metadata(body: bytes, headers: Mapping[str, str], url: str) -> SiteMetadata:
    """The site metadata of an HTML page; raises EmptyBody or NotHTML."""
    if not body.strip():
        raise EmptyBody("the page is empty")
    if b"\x00" in body[:_SNIFF_BYTES] and not body.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise NotHTML("the page is binary content")
    html = decode_html(body, headers.get("content-type"))

    # The head, where most metadata lives, is small: Beautiful Soup builds all of it.
    # The body goes to lxml directly (see _Body). A page without a head end is all head.
    evidence = Evidence()
    end = _head_end(html)
    head = BeautifulSoup(html[:end] if end is not None else html, "lxml")
    body = _Body(html[end:] if end is not None else "", evidence)
    head_tags: dict[str, list[Tag]] = {}
    for tag in head.find_all(True):
        head_tags.setdefault(tag.name, []).append(tag)
        _observe(evidence, tag.name, tag.attrs)
        if tag.name == "script" and tag.string:
            evidence.script(tag.string)

    def find_all(name: str, **attrs: Any) -> Iterable[Any]:
        """Head tags (Beautiful Soup) then body elements (lxml); both answer .get()."""
        for element in head_tags.get(name, []) + body.find_all(name):
            if all(element.get(key) is not None for key in attrs):
                yield element

    root = head.find("html")
    meta = _Meta(find_all("meta"))
    base = _base_url(find_all("base", href=True), url)

    def absolute(link: str | None) -> str | None:
        return _absolute(link, base)

    for generator in meta.get_all("generator"):
        evidence.generator(generator)
    evidence.headers(headers, _cookies(headers))
    items = json_ld_items(
        _text_of(tag) for tag in find_all("script") if "ld+json" in (tag.get("type") or "").lower()
    )
    organization = organization_in(items)
    links = [
        href for tag in head_tags.get("a", []) if _CONTACT_HREF.search(href := tag.get("href") or "")
    ] + body.contact_links()
    language = _language(_attr(root, "lang") if root is not None else None, headers, meta)
    texts = [body.text()]  # last use of the body tree (it drops its scripts)
    if end is None:  # no body of its own: the head soup holds the page's text
        texts.append(" ".join(head.find_all(string=True)))
    host = urlsplit(url).hostname
    favicon, guessed = _favicon(find_all("link", href=True), base)
    titles = list(find_all("title"))

    return SiteMetadata(
        # <title> through get_text(): .string is None as soon as the title has markup.
        title=_title(_clean_title(titles[0] if titles else None), meta),
        description=meta.get("description")
        or meta.get("og:description")
        or meta.get("twitter:description"),
        keywords=_keywords(meta.get("keywords")),
        language=language,
        canonical_url=absolute(_link_href(find_all("link", href=True), "canonical"))
        or absolute(meta.get("og:url")),
        site_name=meta.get("og:site_name")
        or website_name_in(items)
        or (organization.name if organization else None)
        or meta.get("application-name"),
        image=absolute(meta.get("og:image") or meta.get("og:image:url") or meta.get("twitter:image")),
        favicon_url=favicon,
        favicon_guessed=guessed,
        # JSON-LD's logo first; then an <img> whose class, id, alt or file says "logo".
        logo_url=absolute(organization.logo if organization else None)
        or absolute(next((_attr(img, "src") for img in find_all("img") if _is_logo(img)), None)),
        open_graph=meta.with_prefix("og:"),
        twitter_card=meta.with_prefix("twitter:"),
        organization=organization,
        emails=_emails(links, texts, organization),
        phones=_phones(links, texts, organization, region_hint(host, language)),
        social_links=_social_links(absolute(link) for link in links + (organization.same_as if organization else [])),
        tech_stack=evidence.stack(),
        refresh_url=_refresh_url(head_tags.get("meta", []), absolute),
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


def _text_of(element: Any) -> str:
    """The text of a Beautiful Soup tag or an lxml element."""
    return element.get_text() if isinstance(element, Tag) else "".join(element.itertext())


_TITLE_SEPARATOR = re.compile(r"^\s*(?:[|\-–—:·•»/~]|::)\s*\S")


def _title(tag_title: str | None, meta: _Meta) -> str | None:
    """<title>, without the site name the page appends to it; og:title when there is none.

    "Headline | Site" with og:title "Headline" gives "Headline"; so does
    "Headline - Site" with og:site_name "Site". Otherwise the <title> as written.
    """
    og_title = meta.get("og:title") or meta.get("twitter:title")
    if not tag_title:
        return og_title
    if og_title and tag_title != og_title and tag_title.startswith(og_title):
        if _TITLE_SEPARATOR.match(tag_title[len(og_title):]):
            return og_title
    site_name = meta.get("og:site_name")
    if site_name and tag_title.endswith(site_name) and len(tag_title) > len(site_name):
        head = tag_title[: -len(site_name)].rstrip()
        if head and head[-1] in "|-–—:·•»/~":
            return head[:-1].rstrip() or tag_title
    return tag_title


def _clean_title(tag: Any) -> str | None:
    if tag is None:
        return None
    text = _text_of(tag)
    if "<" in text:
        # lxml keeps markup inside <title> as text ("A <b>B</b>"): keep the words.
        text = BeautifulSoup(text, "lxml").get_text()
    return _text(text)


class _Meta:
    """The page's <meta> values by name/property (lower-cased); the first one wins."""

    def __init__(self, tags: Iterable[Tag]) -> None:
        self._values: dict[str, list[str]] = {}
        for tag in tags:
            key = tag.get("property") or tag.get("name") or tag.get("itemprop") or tag.get("http-equiv")
            content = _text(_attr(tag, "content"))
            if isinstance(key, str) and content:
                self._values.setdefault(key.strip().lower(), []).append(content)

    def get(self, key: str) -> str | None:
        values = self._values.get(key)
        return values[0] if values else None

    def get_all(self, key: str) -> list[str]:
        return self._values.get(key, [])

    def with_prefix(self, prefix: str) -> dict[str, str]:
        return {key: values[0] for key, values in self._values.items() if key.startswith(prefix)}


def _attr(tag: Tag | None, name: str) -> str | None:
    if tag is None:
        return None
    value = tag.get(name)
    if isinstance(value, list):
        return " ".join(value)
    return value


def _link_href(links: Iterable[Tag], rel: str) -> str | None:
    for tag in links:
        if rel in _rels(tag):
            return _attr(tag, "href")
    return None


def _rels(tag: Tag) -> list[str]:
    rel = tag.get("rel") or []
    if isinstance(rel, str):
        rel = rel.split()
    return [token.lower() for token in rel]


def _base_url(bases: Iterable[Tag], url: str) -> str:
    for base in bases:
        resolved = _absolute(_attr(base, "href"), url)
        if resolved:
            return resolved
    return url


def _absolute(link: str | None, base: str) -> str | None:
    link = (link or "").strip()
    if not link or link.startswith(("data:", "javascript:", "#")):
        return None
    try:
        resolved = urljoin(base, link)
    except ValueError:
        return None
    return resolved if urlsplit(resolved).scheme in ("http", "https") else None


def _favicon(links: Iterable[Tag], base: str) -> tuple[str | None, bool]:
    # Declared icons first ("icon", "shortcut icon"), then apple-touch-icon, then the
    # conventional /favicon.ico, which is a guess and says so.
    icons: list[Tag] = []
    touch: list[Tag] = []
    for tag in links:
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


def _is_logo(img: Tag) -> bool:
    return any(_LOGO.search(_attr(img, key) or "") for key in ("class", "id", "alt", "src"))


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _emails(links: list[str], texts: list[str], org: Organization | None) -> list[str]:
    # mailto: links first, then addresses written in text, then JSON-LD's.
    found = [email_from_mailto(link) for link in links if link.lower().startswith("mailto:")]
    for text in texts:
        found += emails_in(text)
    if org and org.email:
        found += emails_in(org.email)
    return _unique(found)


def _phones(links: list[str], texts: list[str], org: Organization | None, region: str | None) -> list[str]:
    # tel: links first (E.164 when valid), then JSON-LD's telephone, then numbers in text.
    found = [phone_from_tel(link, region) for link in links if link.lower().startswith("tel:")]
    if org and org.telephone:
        found.append(phone_from_tel(f"tel:{org.telephone}", region))
    if not found:  # numbers the site declares win; otherwise, look in the text
        found = phones_in(texts, region)
    return _unique(found)[:10]


def _social_links(urls: Iterable[str | None]) -> dict[str, str]:
    profiles: dict[str, str] = {}
    for url in urls:
        found = social_profile(url) if url else None
        if found and found[0] not in profiles:
            profiles[found[0]] = found[1]
    return profiles


def _refresh_url(metas: list[Tag], absolute: Any) -> str | None:
    # <meta http-equiv="refresh" content="0; url=...">, not the one inside <noscript>
    # (that one is for browsers without JavaScript, which we are not pretending to be).
    for tag in metas:
        if (_attr(tag, "http-equiv") or "").strip().lower() != "refresh":
            continue
        if tag.find_parent("noscript") is not None:
            continue
        match = _REFRESH.match(_attr(tag, "content") or "")
        if match:
            link = match.group(1).strip()
            try:
                urljoin("http://x/", link)
            except ValueError:  # "http://[::1": a broken target, for the fetch to refuse
                return link
            return absolute(link)
    return None


def _cookies(headers: Mapping[str, str]) -> list[str]:
    get_list = getattr(headers, "get_list", None)
    if get_list is not None:
        return list(get_list("set-cookie"))
    value = headers.get("set-cookie")
    return [value] if value else []


def _keywords(value: str | None) -> list[str]:
    if not value:
        return []
    seen: dict[str, None] = {}
    for word in value.split(","):
        word = word.strip()
        if word:
            seen.setdefault(word, None)
    return list(seen)


def _language(lang: str | None, headers: Mapping[str, Any], meta: _Meta) -> str | None:
    # <html lang>, then the Content-Language header (or its <meta http-equiv>), then
    # og:locale (en_US -> en-US), then the older <meta name=language|lang|dc.language>.
    candidates = [
        lang,
        (headers.get("content-language") or meta.get("content-language") or "").split(",")[0],
        meta.get("og:locale"),
        meta.get("language") or meta.get("lang") or meta.get("dc.language"),
    ]
    for candidate in candidates:
        value = _text(candidate)
        if value:
            return value.replace("_", "-")
    return None
