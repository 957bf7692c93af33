"""Site metadata from a homepage: pure functions, no I/O.

``extract_metadata(body, headers, url)`` decodes the bytes once, then parses twice,
cheaply: the head in full (it is small and holds most metadata), and the body through
``_BodyScan``, a Beautiful Soup element filter that builds only the few tags metadata
needs (contact and social links, logo images, JSON-LD, late meta tags) while every
other tag streams past it once for tech-stack evidence. Which signal decides title,
description, site name, image, logo and favicon is in ``fields.py`` (ordered and
commented); this module reads the signals, and the body only when a field asks.

Hostile pages cost bounded work: every walk over the page's elements, links, scripts
and text stops at a cap (the ``_MAX_*`` constants below, ``contacts`` for text scans),
so a page of ``max_page_bytes`` (5 MB by default) is extracted in a bounded time
whatever it holds; the fields themselves are capped by ``SiteMetadata`` (see ``LIMITS``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from itertools import islice
from typing import Any
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, Tag
from bs4.dammit import UnicodeDammit
from lxml import etree

from scrapersky.errors import EmptyBody, NotHTML

from .contacts import SOCIAL_HREF_MARKERS, email_from_mailto, emails_in, phone_from_tel, phones_in, region_hint, social_profile
from . import fields
from .fields import Icon
from .structured_data import Organization, json_ld_items, organization_in, page_entity_in
from .site_metadata import LIMITS, SiteMetadata, clean_text
from .tech_stack import Evidence

__all__ = ["SiteMetadata", "extract_metadata", "decode_html", "LIMITS"]

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
# Bounded work (red-team finding 12): what a page can make extraction walk.
_HEAD_MAX_TAGS = 3_000  # tags Beautiful Soup builds for the head; the rest goes to lxml
_BODY_MAX_CHARS = 2_000_000  # characters of body lxml parses: a longer body is cut to ...
_BODY_TAIL_CHARS = 500_000  # ... its beginning and its last characters (the footer, contacts)
_SAMPLE_BYTES = 262_144  # bytes an undeclared charset is guessed from
_MAX_ELEMENTS = 2_000  # elements of one tag name read from the body (meta, link, img, script...)
_MAX_EVIDENCE_URLS = 2_000  # script/link/img/iframe/form URLs checked for tech evidence
_MAX_ANCHORS = 10_000  # <a> elements looked at for contact and social links
_MAX_CONTACT_LINKS = 200  # contact and social links kept from them
_MAX_SCRIPTS = 500  # inline scripts checked for tech evidence ...
_SCRIPT_CHARS = 2_000_000  # ... and the characters of them searched, all together
_MAX_META_KEYS = 300  # distinct <meta> names kept
_RAW_TEXT = 8_192  # characters of one attribute or title read (before cleaning and caps)
_URL_ATTRIBUTES = ("src", "href", "action", "data-src")
_CONTACT_HREF = re.compile(
    r"^\s*(?:mailto:|tel:)|" + "|".join(re.escape(marker) for marker in SOCIAL_HREF_MARKERS), re.IGNORECASE
)
_LOGO = re.compile(r"logo", re.IGNORECASE)
_SIZES = re.compile(r"(\d{1,5})\s*[xX×]\s*\d{1,5}")
#: Where a site's own logo <img> sits: the header, the navigation (or a container
#: whose id or class says so), the link home.
_HEADER_TAGS = frozenset(("header", "nav"))
_HEADER_WORDS = re.compile(r"header|masthead|navbar|brand", re.IGNORECASE)
_MAX_ANCESTORS = 40


class _Find:
    """One query, for the head soup (CSS) and the body tree (XPath)."""

    def __init__(self, css: str, xpath: str) -> None:
        self.css, self.xpath = css, etree.XPath(xpath)


_H1 = _Find("h1", "//h1")
_H2 = _Find("h2", "//h2")
_TITLE_CLASS = _Find(
    ".entry-title, .post-title, .article-title",
    "//*[contains(concat(' ', normalize-space(@class), ' '), ' entry-title ')"
    " or contains(concat(' ', normalize-space(@class), ' '), ' post-title ')"
    " or contains(concat(' ', normalize-space(@class), ' '), ' article-title ')]",
)
#: Tags whose text is a block of its own: their words are not joined to the next ones.
_BLOCKS = frozenset("address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 "
                    "h3 h4 h5 h6 header hr li main nav ol p pre section table td th tr ul".split())
#: Where a paragraph is no content: the page's frame around it.
_FRAME = frozenset(("header", "footer", "nav", "aside", "form", "noscript", "template", "button"))
_PARAGRAPH_MIN_CHARS = 60  # a "real" paragraph: a sentence or more, not a caption or a date
_LARGE_IMAGE_PX = 300
_REFRESH = re.compile(r"^\s*\d+(?:\.\d*)?\s*[;,]\s*(?:url\s*=\s*)?['\"]?([^'\"\s][^'\"]*)", re.IGNORECASE)


class _Body:
    """The body, parsed by lxml's C parser and read through XPath: no Python object is
    made for the thousands of elements metadata does not need. Only contact and
    social links, logo images, JSON-LD, late meta tags and tech-stack evidence are read."""

    _PARSER = etree.HTMLParser(recover=True, no_network=True, remove_comments=True)
    # The elements whose URL can be evidence, and the attribute that holds it.
    _URL_OF = {"script": "src", "link": "href", "img": "src", "iframe": "src", "form": "action"}
    # Marker attributes sit where frameworks put them: the body, its first two levels
    # (an app's root element) and scripts. Looking only there keeps this walk short.
    _ROOT_MARKERS = ("ng-version", "data-reactroot", "data-v-app", "data-server-rendered")

    def __init__(self, html: str, evidence: Evidence, *, home: str = "", head: Any = None) -> None:
        self.doc = None
        self._home = home
        self._head = head  # the head soup: a page without a head end has its h1 there
        if not html.strip():
            return
        try:
            self.doc = etree.fromstring(html, self._PARSER)
        except (etree.ParserError, etree.XMLSyntaxError, ValueError):
            return
        if self.doc is None:
            return
        # Each walk stops at its cap: a page of 100,000 links or scripts costs no more.
        for element in islice(self.doc.iter(*self._URL_OF), _MAX_EVIDENCE_URLS):
            url = element.get(self._URL_OF[element.tag])
            if url:
                evidence.url(element.tag, self._URL_OF[element.tag], url)
        for element in self._marked():
            evidence.attributes(element.tag, element.attrib)
        budget = _SCRIPT_CHARS
        for script in islice((s for s in self.doc.iter("script") if s.get("src") is None), _MAX_SCRIPTS):
            if script.text and budget > 0:
                evidence.script(script.text[:budget])
                budget -= len(script.text)

    def _marked(self) -> Iterator[Any]:
        """The body if its class says Divi, its first two levels' elements that carry a
        framework's root marker, and the scripts Next.js and Yoast mark (bounded walks)."""
        body = self.doc.find("body")
        if body is not None:
            classes = body.get("class") or ""
            if "et_divi_theme" in classes or "et_pb_" in classes:
                yield body
            children = (child for child in islice(body, _MAX_ELEMENTS) if isinstance(child.tag, str))
            for child in children:
                if any(child.get(marker) is not None for marker in self._ROOT_MARKERS):
                    yield child
                for grandchild in islice(child, 100):
                    if isinstance(grandchild.tag, str) and any(
                        grandchild.get(marker) is not None for marker in self._ROOT_MARKERS
                    ):
                        yield grandchild
        for script in islice(self.doc.iter("script"), _MAX_ELEMENTS):
            if script.get("id") == "__NEXT_DATA__" or "yoast-schema-graph" in (script.get("class") or ""):
                yield script

    def find_all(self, name: str) -> list[Any]:
        return [] if self.doc is None else list(islice(self.doc.iter(name), _MAX_ELEMENTS))

    def contact_links(self) -> list[str]:
        if self.doc is None:
            return []
        # Links to a mailbox, a phone or a social profile, among the first anchors.
        hrefs = (anchor.get("href") for anchor in islice(self.doc.iter("a"), _MAX_ANCHORS))
        return list(islice((href for href in hrefs if href and _CONTACT_HREF.search(href)), _MAX_CONTACT_LINKS))

    # The hints of fields.BodyHints: each is read only when a field asks for it.

    @cached_property
    def headline(self) -> str | None:
        """The first non-empty <h1>, else an element whose class names the entry's title
        (WordPress's entry-title, post-title, article-title), else the first <h2>; block
        children are separate words ("<div>Kicker</div><div>Headline</div>"), inline
        ones are not."""
        for find in (_H1, _TITLE_CLASS, _H2):
            if self._head is not None:
                for tag in islice(self._head.select(find.css), 20):
                    text = _text(tag.get_text(" "))
                    if text:
                        return text
            for element in islice(find.xpath(self.doc), 20) if self.doc is not None else ():
                text = _text(_block_text(element))
                if text:
                    return text
        return None

    @cached_property
    def header_logo(self) -> str | None:
        """The first <img itemprop=logo>, or <img> saying "logo" (class, id, alt or file
        name) inside the header, the navigation or the link home."""
        if self.doc is None:
            return None
        for img in islice(self.doc.iter("img"), _MAX_ELEMENTS):
            if img.get("itemprop") == "logo" or (_is_logo(img) and self._in_header(img)):
                return img.get("src") or img.get("data-src")
        return None

    def _in_header(self, element: Any) -> bool:
        homes = ("/", self._home, self._home.rstrip("/"))
        for ancestor in islice(element.iterancestors(), _MAX_ANCESTORS):
            if ancestor.tag in _HEADER_TAGS or (ancestor.tag == "a" and ancestor.get("href") in homes):
                return True
            if _HEADER_WORDS.search(f"{ancestor.get('id') or ''} {ancestor.get('class') or ''}"):
                return True
        return False

    @cached_property
    def video_poster(self) -> str | None:
        if self.doc is None:
            return None
        return next((v.get("poster") for v in islice(self.doc.iter("video"), 20) if v.get("poster")), None)

    @cached_property
    def large_image(self) -> str | None:
        if self.doc is None:
            return None
        for img in islice(self.doc.iter("img"), _MAX_ELEMENTS):
            if _pixels(img.get("width")) >= _LARGE_IMAGE_PX and not _is_logo(img):
                return img.get("src") or img.get("data-src")
        return None

    @cached_property
    def first_paragraph(self) -> str | None:
        if self.doc is None:
            return None
        for paragraph in islice(self.doc.iter("p"), 200):
            if any(a.tag in _FRAME for a in islice(paragraph.iterancestors(), 50)):
                continue
            text = _text(_block_text(paragraph))
            if text and len(text) >= _PARAGRAPH_MIN_CHARS and " " in text:
                return text
        return None

    def text(self) -> str:
        """The body's visible text (capped), where addresses and numbers are written.

        Call it last: it drops the scripts and styles from the tree."""
        if self.doc is None:
            return ""
        etree.strip_elements(self.doc, "script", "style", "template", with_tail=False)
        return clean_text(etree.tostring(self.doc, method="text", encoding="unicode")[:_TEXT_LIMIT])


def _head_end(html: str) -> int | None:
    """Where the head ends (the start of the first real </head> or <body), or None."""
    for match in _HEAD_SCAN.finditer(html):
        if match.group("end"):
            return match.start()
    return None


def _block_text(element: Any) -> str:
    """An lxml element's text, a space where a block element starts or ends (bounded)."""
    parts: list[str] = []
    size = 0
    for event, node in etree.iterwalk(element, events=("start", "end")):
        if not isinstance(node.tag, str):
            continue
        if node.tag in _BLOCKS and node is not element:
            parts.append(" ")
        text = node.text if event == "start" else (node.tail if node is not element else None)
        if text:
            parts.append(text)
            size += len(text)
            if size > _RAW_TEXT:
                break
    return "".join(parts)


def _pixels(value: str | None) -> int:
    match = re.match(r"\s*(\d{1,5})\s*(?:px)?\s*$", value or "")
    return int(match.group(1)) if match else 0


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
    if _looks_binary(body[:_SNIFF_BYTES]):
        raise NotHTML("the page is binary content")
    # A stray NUL is not binary content, and no text of the metadata keeps it.
    html = decode_html(body, headers.get("content-type")).replace("\x00", "")

    # The head, where most metadata lives, is small: Beautiful Soup builds all of it.
    # The body goes to lxml directly (see _Body). A page without a head end is all head,
    # up to _HEAD_MAX_TAGS tags: what follows goes to lxml as the body does.
    evidence = Evidence()
    end = _head_end(html)
    split = _head_split(html, end if end is not None else len(html))
    head = BeautifulSoup(html[:split], "lxml")
    parts = urlsplit(url)
    body = _Body(_bounded_body(html, split), evidence, home=f"{parts.scheme}://{parts.netloc}/",
                 head=head if end is None else None)
    head_tags: dict[str, list[Tag]] = {}
    for tag in head.find_all(True):
        head_tags.setdefault(tag.name, []).append(tag)
        _observe(evidence, tag.name, tag.attrs)
        if tag.name == "script" and tag.string:
            evidence.script(tag.string[:_SCRIPT_CHARS])

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
    ][:_MAX_CONTACT_LINKS] + body.contact_links()
    language = _language(_attr(root, "lang") if root is not None else None, headers, meta)
    texts = [body.text()]  # last use of the body tree (it drops its scripts)
    if end is None:  # no body of its own: the head soup holds the page's text
        texts.append(clean_text(" ".join(islice(head.find_all(string=True), _MAX_ELEMENTS))[:_TEXT_LIMIT]))
    host = urlsplit(url).hostname
    icons = _icons(find_all("link", href=True), base)
    favicon = fields.favicon(icons)
    titles = list(find_all("title"))
    # <title> through get_text(): .string is None as soon as the title has markup.
    tag_title = next((t for t in (_clean_title(tag) for tag in titles[:5]) if t), None)
    entity = page_entity_in(items)
    title = fields.title(tag_title, meta, entity, body)

    return SiteMetadata(
        # Each field's signals, in order, are in fields.py.
        title=title,
        description=fields.description(meta, entity, body),
        keywords=_keywords(meta.get("keywords")),
        language=language,
        # <link rel=canonical>, og:url, twitter:url.
        canonical_url=absolute(_link_href(find_all("link", href=True), "canonical"))
        or absolute(meta.get("og:url"))
        or absolute(meta.get("twitter:url")),
        site_name=fields.site_name(meta, items, organization, tag_title, title),
        image=absolute(fields.image(meta, _link_href(find_all("link", href=True), "image_src"), entity, body)),
        favicon_url=favicon or urljoin(base, "/favicon.ico"),
        favicon_guessed=favicon is None,
        logo_url=absolute(fields.logo(organization, meta, icons, body)),
        open_graph=meta.with_prefix("og:"),
        twitter_card=meta.with_prefix("twitter:"),
        organization=organization,
        emails=_emails(links, texts, organization),
        phones=_phones(links, texts, organization, region_hint(host, language)),
        social_links=_social_links(
            absolute(link[:_RAW_TEXT]) for link in links + (organization.same_as[:_MAX_CONTACT_LINKS] if organization else [])
        ),
        tech_stack=evidence.stack(),
        refresh_url=_refresh_url(head_tags.get("meta", []), absolute),
    )


def _looks_binary(sniff: bytes) -> bool:
    """Binary content: NUL among the first KB's bytes, and control bytes (NUL included)
    more than 1 in 20 of them. A few stray NULs in a page of text are not binary; UTF-16
    with a BOM is text (without one, every other byte is a NUL)."""
    if b"\x00" not in sniff or sniff.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False
    controls = sum(sniff.count(bytes([byte])) for byte in (*range(9), *range(14, 32), 127))
    return controls > len(sniff) // 20


def _bounded_body(html: str, start: int) -> str:
    """The body from ``start``, at most _BODY_MAX_CHARS of it: the beginning and the
    tail (from a tag's start), where footers write addresses and numbers."""
    if len(html) - start <= _BODY_MAX_CHARS:
        return html[start:]
    tail = html.find("<", len(html) - _BODY_TAIL_CHARS)
    tail = len(html) - _BODY_TAIL_CHARS if tail == -1 else tail
    return html[start:start + _BODY_MAX_CHARS - _BODY_TAIL_CHARS] + html[tail:]


def _head_split(html: str, end: int) -> int:
    """Where the head Beautiful Soup parses stops: at the head's end, unless that is
    more than _HEAD_MAX_TAGS tags in (then at the start of the tag after them). Its cost
    is in its tags: long text and attributes are parsed in C."""
    position = -1
    for _ in range(_HEAD_MAX_TAGS):
        position = html.find("<", position + 1, end)
        if position == -1:
            return end
    return position


def decode_html(body: bytes, content_type: str | None) -> str:
    """Decode once: Content-Type charset, then BOM, then <meta charset>, then detection.

    A page over _SAMPLE_BYTES has its encoding chosen from its first _SAMPLE_BYTES
    (detection reads every byte it is given: 5 MB cost 0.6 s), then is decoded whole."""
    declared = _charset(content_type)
    sample = body
    if len(body) > _SAMPLE_BYTES:
        sample = body[:_SAMPLE_BYTES]
        # Not the first bytes of a character cut in two (UTF-8's lead and continuations).
        sample = sample[: len(sample) - next((n for n in range(1, 4) if sample[-n] >= 0xC0), 0)]
    dammit = UnicodeDammit(
        sample,
        known_definite_encodings=[declared] if declared else [],
        is_html=True,
    )
    if dammit.unicode_markup is None:
        return body.decode("utf-8", errors="replace")
    if sample is body:
        return dammit.unicode_markup
    for encoding in dict.fromkeys([dammit.original_encoding or "utf-8", "utf-8"]):
        if encoding.lower() in ("ascii", "us-ascii"):
            continue  # the sample was ASCII: what follows it may not be
        try:
            return body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return body.decode(dammit.original_encoding if dammit.original_encoding not in (None, "ascii") else "utf-8",
                       errors="replace")


def _charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("'\"") or None
    return None


def _text(value: str | None) -> str | None:
    """Text as a field holds it: at most _RAW_TEXT characters read, control characters
    removed, white space collapsed."""
    if value is None:
        return None
    value = _SPACE.sub(" ", clean_text(value[:_RAW_TEXT])).strip()
    return value or None


def _text_of(element: Any) -> str:
    """The text of a Beautiful Soup tag or an lxml element."""
    return element.get_text() if isinstance(element, Tag) else "".join(element.itertext())


def _clean_title(tag: Any) -> str | None:
    if tag is None:
        return None
    text = _text_of(tag)[:_RAW_TEXT]
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
            if not isinstance(key, str) or len(key) > LIMITS.key * 2:
                continue
            key = key.strip().lower()
            if key not in self._values and len(self._values) >= _MAX_META_KEYS:
                continue
            content = _text(_attr(tag, "content"))
            if content and len(values := self._values.setdefault(key, [])) < 10:
                values.append(content)

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
    if not link or len(link) > LIMITS.url or link.startswith(("data:", "javascript:", "#")):
        return None
    try:
        resolved = urljoin(base, link)
    except ValueError:
        return None
    return resolved if urlsplit(resolved).scheme in ("http", "https") else None


def _icons(links: Iterable[Tag], base: str) -> list[Icon]:
    """The declared icons (any rel token that is or ends in "icon"), absolute, with the
    largest width their ``sizes`` declares."""
    icons = []
    for tag in islice(links, _MAX_ELEMENTS):
        rels = tuple(r for r in _rels(tag) if r == "icon" or r.endswith(("-icon", "-icon-precomposed")))
        href = _absolute(_attr(tag, "href"), base) if rels else None
        if href:
            widths = [int(w) for w in _SIZES.findall(_attr(tag, "sizes") or "")]
            icons.append(Icon(rels, href, max(widths, default=0)))
    return icons


def _is_logo(img: Tag) -> bool:
    return any(_LOGO.search(_attr(img, key) or "") for key in ("class", "id", "alt", "src"))


def _unique(values: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _emails(links: list[str], texts: list[str], org: Organization | None) -> list[str]:
    # mailto: links first, then addresses written in text, then JSON-LD's.
    found = [email_from_mailto(link[:_RAW_TEXT]) for link in links if link[:10].lower().startswith("mailto:")]
    for text in texts:
        found += emails_in(text)
    if org and org.email:
        found += emails_in(org.email)
    return _unique(found)


def _phones(links: list[str], texts: list[str], org: Organization | None, region: str | None) -> list[str]:
    # tel: links first (E.164 when valid), then JSON-LD's telephone, then numbers in text.
    found = [phone_from_tel(link[:_RAW_TEXT], region) for link in links if link[:10].lower().startswith("tel:")]
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
        match = _REFRESH.match((_attr(tag, "content") or "")[:_RAW_TEXT])
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
