"""``SiteMetadata``: what a homepage says about its site, every field capped.

The caps (``LIMITS``) keep a hostile page from filling memory, result storage and the
database: each field is cut (text) or dropped (a URL: a cut URL is a wrong URL), and
the fields touched are named in ``truncated_fields``. No string holds NUL or another
control character (PostgreSQL refuses NUL in text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field, model_validator

from .structured_data import Organization
from .tech_stack import CATEGORIES, TechStack

__all__ = ["SiteMetadata", "Limits", "LIMITS", "clean_text"]

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """Caps on what ``SiteMetadata`` holds (characters, or items of a list or dict)."""

    text: int = 512  # title, site_name, organization name, an item's text
    long_text: int = 2_048  # description, an og:/twitter: value, organization address
    short: int = 64  # language, a phone number, a tech version or id, a dict key
    url: int = 2_048  # every URL; a longer one is dropped (a cut URL is a wrong URL)
    email: int = 254  # an address (RFC 5321)
    item: int = 100  # a keyword
    items: int = 50  # keywords; organization.same_as
    emails: int = 20
    phones: int = 10
    entries: int = 40  # og:* and twitter:* entries each
    key: int = 64  # an og:/twitter: name
    technologies: int = 25  # per tech-stack category
    evidence: int = 3  # evidence lines per technology ...
    evidence_chars: int = 200  # ... of this many characters each


#: The caps of SiteMetadata's fields (see its docstring).
LIMITS = Limits()


def _cut(value: str | None, limit: int, name: str, cut: set[str]) -> str | None:
    if value is not None and len(value) > limit:
        cut.add(name)
        return value[: limit - 1] + "…"
    return value


def _url(value: str | None, name: str, cut: set[str]) -> str | None:
    if value is not None and len(value) > LIMITS.url:
        cut.add(name)
        return None
    return value


def clean_text(value: str) -> str:
    """Text without NUL, control characters or lone surrogates (none reach the database)."""
    return _CONTROL.sub("", value) if _CONTROL.search(value) else value


def _capped_list(values: list[str], count: int, size: int, name: str, cut: set[str], *, drop: bool = False) -> list[str]:
    kept = []
    for value in values:
        value = clean_text(value)
        if len(value) > size:
            cut.add(name)
            if drop:
                continue
            value = value[: size - 1] + "…"
        kept.append(value)
    if len(kept) > count:
        cut.add(name)
    return kept[:count]


def _capped_dict(values: dict[str, str], name: str, cut: set[str], *, urls: bool = False) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key, value in values.items():
        key, value = clean_text(key), clean_text(value)
        if len(kept) >= LIMITS.entries or len(key) > LIMITS.key or (urls and len(value) > LIMITS.url):
            cut.add(name)
            continue
        kept[key] = _cut(value, LIMITS.long_text, name, cut) or ""
    return kept


class SiteMetadata(BaseModel):
    """What a homepage says about its site.

    Every field is capped (``LIMITS``), whatever the page holds; a field that was cut
    is named in ``truncated_fields`` (the stored outcome adds the fields it cut to fit
    its per-domain size, ``scrapersky.batch.MAX_METADATA_BYTES``). Text has no NUL,
    control characters or lone surrogates. The caps:

    ===========================================  ==========================================
    title, site_name, organization.name          512 characters (cut, ending with "…")
    description, each og:/twitter: value,        2,048 characters (cut)
    organization.address
    keywords                                     50, of 100 characters each (cut)
    open_graph, twitter_card                     40 entries each; names over 64 characters
                                                 are dropped
    canonical_url, image, favicon_url, logo_url,  2,048 characters; a longer URL is dropped
    refresh_url, social links, organization.logo,
    organization.same_as (50 of them)
    emails                                       20, of 254 characters (longer dropped)
    phones, organization.telephone               10, of 64 characters
    language                                     64 characters
    tech_stack                                   25 technologies per category; version and
                                                 id 64 characters; 3 evidence lines of 200
    ===========================================  ==========================================
    """

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
    truncated_fields: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _capped(self) -> SiteMetadata:
        """Every field within LIMITS, cleaned; the fields cut are noted."""
        cut: set[str] = set()
        for name in ("title", "site_name"):
            setattr(self, name, _cut(_clean_optional(getattr(self, name)), LIMITS.text, name, cut))
        self.description = _cut(_clean_optional(self.description), LIMITS.long_text, "description", cut)
        self.language = _cut(_clean_optional(self.language), LIMITS.short, "language", cut)
        for name in ("canonical_url", "image", "favicon_url", "logo_url"):
            setattr(self, name, _url(_no_controls(getattr(self, name)), name, cut))
        # A refresh target is kept as the page gave it: a broken one is the fetch's to
        # refuse (bad_redirect), not ours to mend into another URL.
        self.refresh_url = _url(self.refresh_url, "refresh_url", cut)
        self.keywords = _capped_list(self.keywords, LIMITS.items, LIMITS.item, "keywords", cut)
        self.emails = _capped_list(self.emails, LIMITS.emails, LIMITS.email, "emails", cut, drop=True)
        self.phones = _capped_list(self.phones, LIMITS.phones, LIMITS.short, "phones", cut, drop=True)
        self.open_graph = _capped_dict(self.open_graph, "open_graph", cut)
        self.twitter_card = _capped_dict(self.twitter_card, "twitter_card", cut)
        self.social_links = _capped_dict(self.social_links, "social_links", cut, urls=True)
        if self.organization is not None:
            org = self.organization
            org.name = _cut(_clean_optional(org.name), LIMITS.text, "organization", cut)
            org.logo = _url(_clean_optional(org.logo), "organization", cut)
            org.same_as = _capped_list(org.same_as, LIMITS.items, LIMITS.url, "organization", cut, drop=True)
            org.telephone = _cut(_clean_optional(org.telephone), LIMITS.short, "organization", cut)
            org.email = _cut(_clean_optional(org.email), LIMITS.email, "organization", cut)
            org.address = _cut(_clean_optional(org.address), LIMITS.long_text, "organization", cut)
        for category in CATEGORIES:
            technologies = getattr(self.tech_stack, category)
            if len(technologies) > LIMITS.technologies:
                cut.add("tech_stack")
                setattr(self.tech_stack, category, technologies := technologies[: LIMITS.technologies])
            for tech in technologies:
                tech.name = _cut(clean_text(tech.name), LIMITS.text, "tech_stack", cut) or ""
                tech.version = _cut(_clean_optional(tech.version), LIMITS.short, "tech_stack", cut)
                tech.id = _cut(_clean_optional(tech.id), LIMITS.short, "tech_stack", cut)
                tech.evidence = _capped_list(tech.evidence, LIMITS.evidence, LIMITS.evidence_chars, "tech_stack", cut)
        if cut - set(self.truncated_fields) or len(self.truncated_fields) > 64:
            self.truncated_fields = [*self.truncated_fields, *sorted(cut - set(self.truncated_fields))][:64]
        return self


def _no_controls(url: str | None) -> str | None:
    """A URL with a control character in it is no URL: dropped, never mended into another."""
    return None if url is None or _CONTROL.search(url) else url


def _clean_optional(value: str | None) -> str | None:
    return None if value is None else clean_text(value)


