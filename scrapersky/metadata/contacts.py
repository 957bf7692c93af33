"""Ways to reach a site's owner: emails, phone numbers, social profiles. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

import phonenumbers

__all__ = ["emails_in", "email_from_mailto", "phones_in", "phone_from_tel", "social_profile", "region_hint"]

_EMAIL = re.compile(
    r"(?<![\w.%+-])([a-z0-9][a-z0-9._%+-]{0,63})@((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?![\w-])",
    re.IGNORECASE,
)
# "name [at] example [dot] com", "name(at)example.com": the common, simple obfuscations.
_AT = re.compile(r"\s*(?:\[at\]|\(at\)|\{at\})\s*", re.IGNORECASE)
_DOT = re.compile(r"\s*(?:\[dot\]|\(dot\)|\{dot\})\s*", re.IGNORECASE)
# File names look like addresses ("logo@2x.png"): their "top-level domain" gives them away.
_FILE_SUFFIXES = frozenset(
    "png jpg jpeg gif webp svg ico bmp tif tiff avif heic css js mjs json map xml pdf mp4 webm woff woff2 ttf eot".split()
)
_PHONE_TEXT_LIMIT = 50_000  # characters of page text searched for phone numbers
_MAX_PHONE_CANDIDATES = 200  # candidates libphonenumber is asked about, per text
_EMAIL_TEXT_LIMIT = 200_000  # characters of text searched for addresses
_MAX_AT_SIGNS = 500  # "@" signs the address pattern is tried around, per text
_MAX_EMAILS = 50  # addresses found per text
# An address's domain starts right after its "@": a label, then a dot.
_DOMAIN_START = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\.", re.IGNORECASE)
# Digits in the groupings people write: +49 (0)30 1234-5678, (555) 123.4567, 020 7946 0018
_PHONE_CANDIDATE = re.compile(r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .\-/]?\(?\d{1,5}\)?){2,6}(?![\w])")
_DIGITS = re.compile(r"\D")
_MAX_PHONES = 10


def _valid_email(local: str, domain: str) -> str | None:
    domain = domain.lower().rstrip(".")
    if domain.rsplit(".", 1)[-1] in _FILE_SUFFIXES or ".." in local or local.endswith("."):
        return None
    return f"{local}@{domain}"


def emails_in(text: str) -> list[str]:
    """Addresses written in text, de-obfuscated; file names like logo@2x.png are not addresses.

    Bounded: the first _EMAIL_TEXT_LIMIT characters, _MAX_AT_SIGNS "@" tried, _MAX_EMAILS found."""
    text = text[:_EMAIL_TEXT_LIMIT]
    lowered = text.lower()
    if "at]" in lowered or "at)" in lowered or "at}" in lowered:
        text = _DOT.sub(".", _AT.sub("@", text))
    elif "@" not in text:
        return []
    found = (_valid_email(local, domain) for local, domain in _email_matches(text))
    return [email for email in found if email]


def _email_matches(text: str) -> list[tuple[str, str]]:
    # The pattern is only tried around each "@": scanning every position of a long page
    # for a 64-character local part first costs more than all the rest of extraction.
    # An "@" not followed by "label." is not an address's (a cheap anchored test first).
    found: list[tuple[str, str]] = []
    resume = 0
    tried = 0
    at = text.find("@")
    while at != -1 and tried < _MAX_AT_SIGNS and len(found) < _MAX_EMAILS:
        if _DOMAIN_START.match(text, at + 1):
            tried += 1
            match = _EMAIL.search(text, max(resume, at - 64), at + 256)
            if match is not None and match.start(2) - 1 == at:
                found.append((match.group(1), match.group(2)))
                resume = match.end()
        at = text.find("@", max(at + 1, resume))
    return found


def email_from_mailto(href: str) -> str | None:
    address = unquote(href.split(":", 1)[1]).split("?", 1)[0].split(",")[0].strip()
    found = emails_in(address)
    return found[0] if found else None


def region_hint(host: str | None, language: str | None) -> str | None:
    """A country for numbers written without +: the language's region, else the ccTLD."""
    if language and "-" in language:
        region = language.rsplit("-", 1)[-1].upper()
        if len(region) == 2 and region.isalpha():
            return region
    if host:
        tld = host.rsplit(".", 1)[-1].upper()
        tld = "GB" if tld == "UK" else tld
        if len(tld) == 2 and tld in phonenumbers.SUPPORTED_REGIONS:
            return tld
    return None


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_from_tel(href: str, region: str | None) -> str | None:
    """A tel: link's number: E.164 when it parses as a valid number, else as written."""
    raw = unquote(href.split(":", 1)[1]).split(";", 1)[0].strip()
    if not re.search(r"\d{3}", raw):
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return raw
    return _e164(number) if phonenumbers.is_valid_number(number) else raw


def phones_in(texts: Iterable[str], region: str | None) -> list[str]:
    """Valid numbers written in text, as E.164. Without a region only +international ones.

    A cheap pattern picks the candidates; libphonenumber decides which are numbers.
    """
    found: list[str] = []
    for text in texts:
        asked = 0
        for match in _PHONE_CANDIDATE.finditer(text[:_PHONE_TEXT_LIMIT]):
            candidate = match.group(0)
            if not (region or candidate.startswith("+")) or len(_DIGITS.sub("", candidate)) < 7:
                continue
            asked += 1
            if asked > _MAX_PHONE_CANDIDATES:
                break
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number) and (e164 := _e164(number)) not in found:
                found.append(e164)
                if len(found) >= _MAX_PHONES:
                    return found
    return found


# network -> (hosts, path rule for a profile, paths that are share/intent/content links)
_SOCIAL: dict[str, tuple[tuple[str, ...], re.Pattern[str], re.Pattern[str]]] = {
    "facebook": (("facebook.com", "fb.com"), re.compile(r"^/[^/?#]+"),
                 re.compile(r"^/(?:sharer|share|dialog|plugins|tr|login|l\.php|events|groups/\w+/posts)", re.I)),
    "x": (("twitter.com", "x.com"), re.compile(r"^/@?\w{1,15}/?$"),
          re.compile(r"^/(?:intent|share|home|hashtag|search|i|login)\b", re.I)),
    "linkedin": (("linkedin.com",), re.compile(r"^/(?:company|in|school|showcase)/[^/]+"),
                 re.compile(r"^/(?:shareArticle|sharing|cws)", re.I)),
    "instagram": (("instagram.com",), re.compile(r"^/[\w.]+/?$"),
                  re.compile(r"^/(?:p|reel|reels|explore|accounts|stories)/", re.I)),
    "youtube": (("youtube.com",), re.compile(r"^/(?:channel/|c/|user/|@)[^/]+"),
                re.compile(r"^/(?:watch|embed|shorts|results|playlist)\b", re.I)),
    "tiktok": (("tiktok.com",), re.compile(r"^/@[\w.]+"), re.compile(r"/video/", re.I)),
    "pinterest": (("pinterest.com",), re.compile(r"^/[\w-]+/?$"),
                  re.compile(r"^/(?:pin|search|ideas)/", re.I)),
    "github": (("github.com",), re.compile(r"^/[\w-]+/?$"),
               re.compile(r"^/(?:login|features|about|sponsors|orgs|topics|marketplace)\b", re.I)),
}


#: The networks whose profiles are kept, in the order exports list them.
SOCIAL_NETWORKS: tuple[str, ...] = tuple(_SOCIAL)
#: What the href of a link that may be a social profile contains: a cheap first filter
#: over every link of a page (``social_profile`` decides).
SOCIAL_HREF_MARKERS: tuple[str, ...] = tuple(
    "pinterest." if host == "pinterest.com" else host for hosts, _, _ in _SOCIAL.values() for host in hosts
)


def social_profile(url: str) -> tuple[str, str] | None:
    """(network, profile URL) for a link to a social profile; share and intent links are not."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https"):
        return None
    for prefix in ("www.", "m.", "mobile.", "web.", "de.", "fr.", "uk.", "es.", "it."):
        if host.startswith(prefix):
            host = host[len(prefix):]
            break
    for network, (hosts, profile, excluded) in _SOCIAL.items():
        if host in hosts or (network == "pinterest" and host.startswith("pinterest.")):
            path = parts.path or "/"
            if excluded.search(path) or not profile.search(path):
                return None
            return network, urlunsplit(("https", parts.netloc.lower(), path.rstrip("/") or "/", "", ""))
    return None
