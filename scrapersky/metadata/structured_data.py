"""JSON-LD: the site's organization and name. Tolerant of invalid and multiple blocks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pydantic import BaseModel

__all__ = ["Organization", "PageEntity", "json_ld_items", "organization_in", "page_entity_in",
           "publisher_name_in", "website_name_in"]

_WRAPPERS = re.compile(r"^\s*(?:<!--|//\s*<!\[CDATA\[|<!\[CDATA\[)|(?:-->|//\s*\]\]>|\]\]>)\s*$")
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_MAX_ITEMS = 200
_MAX_BLOCKS = 20  # JSON-LD blocks read at most ...
_MAX_BLOCK_CHARS = 1_000_000  # ... each at most this long (a longer one is skipped)


class Organization(BaseModel):
    name: str | None = None
    logo: str | None = None
    same_as: list[str] = []
    telephone: str | None = None
    email: str | None = None
    address: str | None = None


def _load(text: str) -> Any:
    text = _WRAPPERS.sub("", text.strip())
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(candidate, strict=False)
        except (ValueError, RecursionError):
            continue
    return None


def json_ld_items(blocks: Iterable[str]) -> list[dict[str, Any]]:
    """Every JSON object of the blocks, @graph and lists flattened; invalid blocks skipped."""
    items: list[dict[str, Any]] = []

    def walk(node: Any, depth: int) -> Iterator[dict[str, Any]]:
        if depth > 4:
            return
        if isinstance(node, list):
            for child in node:
                yield from walk(child, depth + 1)
        elif isinstance(node, dict):
            yield node
            if "@graph" in node:
                yield from walk(node["@graph"], depth + 1)

    for block in islice(blocks, _MAX_BLOCKS):
        if len(block) > _MAX_BLOCK_CHARS:
            continue
        for item in walk(_load(block), 0):
            items.append(item)
            if len(items) >= _MAX_ITEMS:
                return items
    return items


def _types(item: dict[str, Any]) -> set[str]:
    value = item.get("@type")
    values = value if isinstance(value, list) else [value]
    return {v.rsplit("/", 1)[-1] for v in values if isinstance(v, str)}


_ORGANIZATION_TYPES = {
    "Organization", "Corporation", "LocalBusiness", "NewsMediaOrganization", "OnlineBusiness",
    "OnlineStore", "EducationalOrganization", "NGO", "GovernmentOrganization", "MedicalOrganization",
    "SportsOrganization", "Store", "Restaurant", "ProfessionalService", "LegalService",
    "Dentist", "Physician", "RealEstateAgent", "AutomotiveBusiness", "HomeAndConstructionBusiness",
    "FinancialService", "FoodEstablishment", "HealthAndBeautyBusiness", "LodgingBusiness",
    "TravelAgency", "Airline", "Brand",
}


def _is_organization(item: dict[str, Any]) -> bool:
    types = _types(item)
    return bool(types & _ORGANIZATION_TYPES) or any(t.endswith(("Organization", "Business")) for t in types)


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, (str, dict))), None)
    if isinstance(value, dict):
        value = value.get("url") or value.get("@id") or value.get("name")
    if isinstance(value, (str, int, float)) and str(value).strip():
        return str(value).strip()
    return None


def _address(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        parts = [_text(value.get(key)) for key in
                 ("streetAddress", "postalCode", "addressLocality", "addressRegion", "addressCountry")]
        joined = ", ".join(p for p in parts if p)
        return joined or None
    return _text(value)


def organization_in(items: list[dict[str, Any]]) -> Organization | None:
    """The site's organization: a top-level Organization, else an Article's publisher."""
    candidates = [item for item in items if _is_organization(item)]
    candidates += [p for item in items for p in [item.get("publisher")] if isinstance(p, dict) and _is_organization(p)]
    if not candidates:
        return None
    org = max(candidates, key=lambda c: sum(1 for k in ("name", "logo", "sameAs", "telephone", "address") if c.get(k)))
    same_as = org.get("sameAs")
    same_as = [same_as] if isinstance(same_as, str) else same_as if isinstance(same_as, list) else []
    return Organization(
        name=_text(org.get("name")) or _text(org.get("legalName")),
        logo=_text(org.get("logo")) or _text(org.get("image")),
        same_as=[s.strip() for s in same_as if isinstance(s, str) and s.strip()],
        telephone=_text(org.get("telephone")),
        email=(_text(org.get("email")) or "").removeprefix("mailto:") or None,
        address=_address(org.get("address")),
    )


def website_name_in(items: list[dict[str, Any]]) -> str | None:
    for item in items:
        if "WebSite" in _types(item):
            name = _text(item.get("name"))
            if name:
                return name
    return None


def publisher_name_in(items: list[dict[str, Any]]) -> str | None:
    """The name of the first ``publisher`` an item names (an object or a list of them)."""
    for item in items:
        publisher = item.get("publisher")
        if isinstance(publisher, list):
            publisher = next((p for p in publisher if isinstance(p, dict)), None)
        if isinstance(publisher, dict):
            name = publisher.get("name")
            if isinstance(name, str) and name.strip():
                return name.strip()
    return None


class PageEntity(BaseModel):
    """What JSON-LD says about the page itself (an Article, a WebPage, a Product...)."""

    title: str | None = None
    description: str | None = None
    image: str | None = None


#: Items that describe something else than the page: its site, its owner, a person,
#: a picture, a navigation aid.
_NOT_THE_PAGE = {"WebSite", "Person", "ImageObject", "BreadcrumbList", "ListItem", "SearchAction",
                 "SiteNavigationElement", "WPHeader", "WPFooter", "ContactPoint", "PostalAddress"}


def _image(value: Any, depth: int = 0) -> str | None:
    """A JSON-LD image: a URL string, an ImageObject (url / contentUrl), or a list."""
    if depth > 3:
        return None
    if isinstance(value, list):
        return next((found for v in value[:20] if (found := _image(v, depth + 1))), None)
    if isinstance(value, dict):
        return _image(value.get("url") or value.get("contentUrl"), depth + 1)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def page_entity_in(items: list[dict[str, Any]]) -> PageEntity:
    """The first item about the page (not its site, organization or a person): its
    headline or name, description and image. Empty when there is none."""
    for item in items:
        types = _types(item)
        if not types or types & _NOT_THE_PAGE or _is_organization(item):
            continue
        headline, name = item.get("headline"), item.get("name")
        title = next((v.strip() for v in (name, headline) if isinstance(v, str) and v.strip()), None)
        description = item.get("description")
        return PageEntity(
            title=title,
            description=description.strip() if isinstance(description, str) and description.strip() else None,
            image=_image(item.get("image") or item.get("thumbnailUrl")),
        )
    return PageEntity()
