"""Which signal decides each field: the ordered, commented lists, in one place.

Every function here is pure and takes what ``extract.py`` read from the page: the
``<meta>`` values (``Meta``: ``get(key)`` by name/property/itemprop, lower-cased),
the ``<title>`` text, the JSON-LD items (``structured_data``), the declared icons,
and what the body offers when the head is silent (``BodyHints``). None of them
touches markup; none of them guesses a value the page does not state.

``logo_url`` and ``favicon_url`` are two fields with two meanings:

- ``logo_url`` is the site's **brand mark**, the picture a lead list shows for the
  company: its JSON-LD ``logo``, else its largest declared icon (apple-touch-icon,
  an ``icon`` with the largest ``sizes``), else the logo ``<img>`` of its header.
  A small tab icon is the last resort, never preferred to a real mark.
- ``favicon_url`` is the **tab icon** the browser shows (``rel=icon``), else
  apple-touch-icon, else ``/favicon.ico`` guessed (``favicon_guessed``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .structured_data import Organization, PageEntity, publisher_name_in, website_name_in

__all__ = [
    "BodyHints",
    "Icon",
    "Meta",
    "description",
    "favicon",
    "image",
    "logo",
    "site_name",
    "title",
]


class Meta(Protocol):
    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Icon:
    """A ``<link>`` whose rel names an icon: its rel tokens, href and declared size."""

    rels: tuple[str, ...]
    href: str
    size: int = 0  # the largest width in ``sizes`` ("any" and none: 0)


class BodyHints(Protocol):
    """What the body says when the head does not (``extract.py`` reads each only when
    a field asks for it: each is a walk over the body)."""

    @property
    def headline(self) -> str | None: ...  # <h1>, .entry-title/.post-title, <h2>

    @property
    def header_logo(self) -> str | None: ...  # the logo <img> of the header, or itemprop=logo

    @property
    def video_poster(self) -> str | None: ...

    @property
    def large_image(self) -> str | None: ...  # the first <img> declared at least 300 px wide

    @property
    def first_paragraph(self) -> str | None: ...  # the first real paragraph of the content


# --------------------------------------------------------------------------------------
# title
# --------------------------------------------------------------------------------------

_SEPARATORS = "|-–—:·•»/~"
_SEPARATOR = re.compile(r"^\s*(?:[|\-–—:·•»/~]|::)\s*\S")
#: A site name the page joins to the headline with a word: "... Winners on Vimeo".
_JOINED_SITE = re.compile(r"^\s+(?:on|at|by|via|from|in)\s+(\S.{0,40})$", re.IGNORECASE)
_ANY_SEPARATOR = re.compile(r"\s(?:[|\-–—·•»/~]|::)\s|[:：]\s*\S")
_SPACES = re.compile(r"\s+")
_HOST_LIKE = re.compile(r"^(?:www\.)?[\w-]+(?:\.[\w-]+)+$")


def _no_headline(text: str | None) -> bool:
    """A <title> that names nothing: empty, a bare host name ("example.com"), or only
    digits (a tweet page's status id)."""
    return not text or bool(_HOST_LIKE.match(text)) or text.replace(" ", "").isdigit()


def title(tag_title: str | None, meta: Meta, entity: PageEntity, body: BodyHints) -> str | None:
    """The page's headline.

    1. Where <title> and og:title (or twitter:title) disagree, og:title: it is the
       headline the page chose for sharing, while its <title> may be
       a. the og:title plus a site name after a separator ("Headline | Site"),
       b. a site name before a separator plus the og:title ("Blog: Headline"),
       c. the og:title plus a site name joined by a word ("Headline on Vimeo"),
       d. the og:title cut short by the page ("... Customer Data in"),
       or an older or SEO headline. Except when the og:title is only the site's
       name (og:site_name), or only the first words of the <title> with no
       separator after them ("Acme" in "Acme Tools": a brand, not a headline).
    2. Else the <title> as written, without a " <sep> og:site_name" suffix.
    3. When the <title> names nothing (``_no_headline``: empty, a bare host name, a
       tweet page's numeric status id): og:title, twitter:title, meta title, hdl,
       dc.title, itemprop headline, JSON-LD name/headline of the page's entity, the
       first non-empty <h1>, an element whose class says it is the entry's or
       post's title, the first <h2>.
    """
    og = meta.get("og:title") or meta.get("twitter:title")
    site = meta.get("og:site_name")
    if tag_title and not _no_headline(tag_title):
        if og and og != tag_title and og != site and not _no_headline(og):
            if not _SPACES.sub("", tag_title).startswith(_SPACES.sub("", og)):
                return og  # b., d. and a different headline
            rest = tag_title[len(og):] if tag_title.startswith(og) else None
            if rest is not None and (_SEPARATOR.match(rest) or _JOINED_SITE.match(rest)
                                     or (rest[:1].isspace() and _ANY_SEPARATOR.search(rest))):
                return og  # a., c. (and "Headline  photo 1  News: Site")
        if site and tag_title.endswith(site) and len(tag_title) > len(site):
            head = tag_title[: -len(site)].rstrip()
            if head and head[-1] in _SEPARATORS:
                return head[:-1].rstrip() or tag_title
        return tag_title
    for key in ("og:title", "twitter:title", "title", "hdl", "dc.title", "headline"):
        value = meta.get(key)
        if value:
            return value
    return entity.title or body.headline or None


# --------------------------------------------------------------------------------------
# description
# --------------------------------------------------------------------------------------


def description(meta: Meta, entity: PageEntity, body: BodyHints) -> str | None:
    """meta description, og:description, twitter:description, dc.description (and
    itemprop description, read as the same key), JSON-LD description of the page's
    entity, then the first real paragraph of the body (``BodyHints.first_paragraph``)."""
    for key in ("description", "og:description", "twitter:description", "dc.description"):
        value = meta.get(key)
        if value:
            return value
    return entity.description or body.first_paragraph


# --------------------------------------------------------------------------------------
# site name
# --------------------------------------------------------------------------------------


def site_name(meta: Meta, items: list[dict[str, Any]], organization: Organization | None,
              tag_title: str | None, page_title: str | None) -> str | None:
    """og:site_name (the page's own answer), JSON-LD WebSite name, JSON-LD publisher
    name, the JSON-LD Organization's name, application-name, article:publisher when it
    is a name (it is often a Facebook URL), then the site name the <title> carries
    beside the headline (what ``title`` cut off it)."""
    publisher = meta.get("article:publisher")
    candidates = (
        meta.get("og:site_name"),
        website_name_in(items),
        publisher_name_in(items),
        organization.name if organization else None,
        meta.get("application-name"),
        publisher if publisher and "/" not in publisher and len(publisher) > 1 else None,
        _title_site(tag_title, page_title),
    )
    return next((c for c in candidates if c), None)


def _title_site(tag_title: str | None, page_title: str | None) -> str | None:
    if not tag_title or not page_title or tag_title == page_title:
        return None
    if tag_title.startswith(page_title):
        rest = tag_title[len(page_title):]
        joined = _JOINED_SITE.match(rest)
        rest = joined.group(1) if joined else rest.strip().lstrip(_SEPARATORS + ":").strip()
    elif tag_title.endswith(page_title):
        rest = tag_title[: -len(page_title)].strip().rstrip(_SEPARATORS + ":").strip()
    else:
        return None
    return rest if rest and len(rest) <= 60 else None


# --------------------------------------------------------------------------------------
# image
# --------------------------------------------------------------------------------------


def image(meta: Meta, image_src: str | None, entity: PageEntity, body: BodyHints) -> str | None:
    """The page's share image: og:image, og:image:url, og:image:secure_url,
    twitter:image, twitter:image:src, ``<link rel=image_src>``,
    meta thumbnail / image (itemprop or property), JSON-LD image of the page's entity
    (a string, an ImageObject or a list of either), a ``<video poster>``, the first
    content ``<img>`` declared large. Relative values are made absolute by the caller."""
    candidates = (
        meta.get("og:image"),
        meta.get("og:image:url"),
        meta.get("og:image:secure_url"),
        meta.get("twitter:image"),
        meta.get("twitter:image:src"),
        image_src,
        meta.get("thumbnail"),
        meta.get("image"),
        entity.image,
        body.video_poster,
        body.large_image,
    )
    return next((c for c in candidates if c), None)


# --------------------------------------------------------------------------------------
# logo and favicon (two meanings: see the module docstring)
# --------------------------------------------------------------------------------------

#: Icons declared for a home screen or a pinned tab: high resolution, or a vector mark.
_MARK_RELS = ("apple-touch-icon", "apple-touch-icon-precomposed", "mask-icon", "fluid-icon")
#: At one declared size, the rel that wins (the order of Mozilla's page-metadata-parser).
_REL_ORDER = {"apple-touch-icon": 0, "apple-touch-icon-precomposed": 1, "icon": 2, "fluid-icon": 3,
              "mask-icon": 4}
#: An icon declared at least this wide is a mark, whatever its rel.
_LARGE_ICON = 96


def _rank(icon: Icon) -> tuple[int, int]:
    """Larger first; at one size, in _REL_ORDER."""
    return (-icon.size, min((_REL_ORDER.get(r, len(_REL_ORDER)) for r in icon.rels), default=len(_REL_ORDER)))


def logo(organization: Organization | None, meta: Meta, icons: Sequence[Icon], body: BodyHints) -> str | None:
    """The brand mark (see the module docstring):

    1. JSON-LD ``logo`` of the Organization, or of an Article's publisher;
    2. a declared logo: ``og:logo``, ``<meta itemprop=logo>``;
    3. the largest declared mark: apple-touch-icon(-precomposed), mask-icon,
       fluid-icon, or an ``icon`` declared at least ``_LARGE_ICON`` px wide;
    4. the logo ``<img>`` of the header (``<img itemprop=logo>``, or an <img> saying
       "logo" inside <header>/<nav>, a header-ish container or the link home);
    5. only then the largest of the small tab icons (a 16x16 favicon is a poor mark,
       but the site's own).
    Never an <img> that merely says "logo" elsewhere on the page (a client's or a
    partner's), and never a guessed /favicon.ico."""
    declared = (organization.logo if organization else None) or meta.get("og:logo") or meta.get("logo")
    if declared:
        return declared
    marks = [i for i in icons if any(r in _MARK_RELS for r in i.rels) or i.size >= _LARGE_ICON]
    if marks:
        return min(marks, key=_rank).href
    if body.header_logo:
        return body.header_logo
    tab_icons = [i for i in icons if "icon" in i.rels]
    return min(tab_icons, key=_rank).href if tab_icons else None


def favicon(icons: Iterable[Icon]) -> str | None:
    """The tab icon: the first ``rel=icon`` / ``shortcut icon``, then the first
    apple-touch-icon; the caller guesses ``/favicon.ico`` when there is none."""
    icons = list(icons)
    for wanted in (("icon",), ("apple-touch-icon", "apple-touch-icon-precomposed")):
        for icon in icons:
            if any(r in wanted for r in icon.rels):
                return icon.href
    return None
