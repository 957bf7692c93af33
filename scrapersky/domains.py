"""Turning what users submit into domains: normalise, de-duplicate, refuse visibly."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import idna

from .batch import DomainOutcome, DomainStatus, utcnow
from .errors import BatchTooLarge, EmptyBatch, InvalidDomain

__all__ = ["entries_of", "normalize_domain", "DomainPlan", "plan_domains", "plan_domains_in_turns", "ipv4_literal"]

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# A comment: from a '#' that starts the line or follows a blank (a URL's #fragment stays).
_COMMENT = re.compile(r"(?:^|\s)#.*")
# One part of an IPv4 address as inet_aton and URL parsers (WHATWG) read it:
# 0x-prefixed hex (0x alone is 0), 0-prefixed octal, or decimal.
_IPV4_PART = re.compile(r"0[xX](?P<hex>[0-9a-fA-F]*)|(?P<oct>0[0-7]+)|(?P<dec>[0-9]+)")


def _ipv4_number(part: str) -> int | None:
    match = _IPV4_PART.fullmatch(part)
    if match is None:
        return None
    if match["hex"] is not None:
        return int(match["hex"] or "0", 16)
    if match["oct"] is not None:
        return int(match["oct"], 8)
    return int(match["dec"], 10)


def ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` is, read the way inet_aton and browsers read it
    (``127.1``, ``0x7f.0.0.1``, ``0177.0.0.1``, ``2130706433`` are all 127.0.0.1), or
    None when it is not one."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # a trailing dot
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(n is None for n in numbers):
        return None
    *leading, last = numbers
    assert last is not None
    if any(n > 255 for n in leading if n is not None) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(leading) if n is not None)
    return ipaddress.IPv4Address(value)
_MAX_ENTRY_CHARS = 255  # an invalid entry is recorded under (at most) this much of itself
_MAX_INPUT_CHARS = 2_048  # a longer entry is refused unread (no domain or homepage URL is longer)
_SHOWN_CHARS = 100  # an error message quotes (at most) this much of its entry
# C0 and C1 control characters, DEL, and lone surrogates: in no domain, and NUL is text
# PostgreSQL refuses to store.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _shown(text: str) -> str:
    """The entry as an error message quotes it: repr (control characters escaped), cut."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}… ({len(text):,} characters)"


def _safe_key(entry: str) -> str:
    """The key an invalid entry is recorded under: control characters escaped (\\x00),
    at most _MAX_ENTRY_CHARS characters; never empty."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"),
                        entry[: _MAX_ENTRY_CHARS * 2].strip())
    return text[:_MAX_ENTRY_CHARS].strip() or "<empty>"  # its own key again (a recorded entry)


def entries_of(text: str) -> list[str]:
    """The entries of a domain list (``--file``): one a line; blank lines and ``#``
    comments, on a line of their own or after an entry, are not entries."""
    return [entry for line in text.splitlines() if (entry := _COMMENT.sub("", line).strip())]


# A name already bare, lowercase and ASCII: letters, digits and inner hyphens, two labels
# or more. When no label has "--" at its third and fourth characters (IDNA's reserved
# form, "xn--") and the last one does not read as a number, it is its own normal form.
_PLAIN = re.compile(r"(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?!-)[a-z0-9-]{1,63}(?<!-)")


def _is_normal(text: str) -> bool:
    if len(text) > 253 or not _PLAIN.fullmatch(text):
        return False
    labels = text.split(".")
    return not _IPV4_PART.fullmatch(labels[-1]) and all(label[2:4] != "--" for label in labels)


def normalize_domain(entry: str) -> str:
    """A bare, lowercase, ASCII (IDNA) domain from a domain or URL; raises InvalidDomain."""
    if _is_normal(entry):  # the common case, and every recorded key: nothing to change
        return entry
    if len(entry) > _MAX_INPUT_CHARS * 4:  # not even stripped: refused unread
        raise InvalidDomain(f"{_shown(entry.strip())} is too long for a domain or URL")
    text = entry.strip()
    if not text:
        raise InvalidDomain("empty entry")
    if len(text) > _MAX_INPUT_CHARS:
        raise InvalidDomain(f"{_shown(text)} is too long for a domain or URL")
    if _CONTROL.search(text):
        raise InvalidDomain(f"{_shown(text)} contains a control character")
    if any(ch.isspace() for ch in text):
        raise InvalidDomain(f"{_shown(text)} contains whitespace")
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise InvalidDomain(f"{_shown(text)} is not a domain or URL: {exc}") from None
    if "://" in text and parts.scheme.lower() not in ("http", "https"):
        raise InvalidDomain(f"{_shown(text)}: only http and https URLs can be scraped")
    if not host:
        raise InvalidDomain(f"{_shown(text)} has no host name")
    if parts.username is not None or parts.password is not None:
        raise InvalidDomain(f"{_shown(text)} carries credentials; give the domain alone")
    if port is not None:
        raise InvalidDomain(f"{_shown(text)} names a port; a batch scrapes the domain's homepage")
    host = host.rstrip(".")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        raise InvalidDomain(f"{_shown(text)} is an IP address, not a domain")
    # 127.1, 0x7f.0.0.2, 2130706433: resolvers and URL parsers read these as addresses.
    # A name whose last label is a number is read as an address too (or refused).
    if ipv4_literal(host) is not None or _IPV4_PART.fullmatch(host.rsplit(".", 1)[-1]):
        raise InvalidDomain(f"{_shown(text)} is an IP address (or reads as one), not a domain")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidDomain(f"{_shown(text)} is not a valid domain name: {exc}") from None
    labels = ascii_host.split(".")
    if len(labels) < 2:
        raise InvalidDomain(f"{_shown(text)} has no top-level domain")
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidDomain(f"{_shown(text)} is not a valid domain name")
    return ascii_host


@dataclass
class DomainPlan:
    """The domains of a batch: what to fetch, what was refused, what was repeated."""

    domains: list[str] = field(default_factory=list)
    invalid: dict[str, InvalidDomain] = field(default_factory=dict)  # entry -> why
    submitted: int = 0
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def total(self) -> int:
        return len(self.domains) + len(self.invalid)

    def add(self, entry: str, *, recorded: bool = False) -> None:
        """One entry: a new domain, a duplicate, or an invalid entry kept with its reason."""
        self.submitted += 1
        try:
            key = normalize_domain(entry)
            if recorded and key != entry:
                raise InvalidDomain(f"{_shown(entry)} was recorded as an invalid entry")
        except InvalidDomain as exc:
            key = _safe_key(entry)
            if key in self.invalid:
                self.duplicates += 1
            else:
                exc.attempts = 0  # refused before any fetch
                self.invalid[key] = exc
            return
        if key in self._seen:
            self.duplicates += 1
            return
        self._seen.add(key)
        self.domains.append(key)

    def check(self, max_batch_size: int) -> DomainPlan:
        """The plan, unless it is empty (EmptyBatch) or too large (BatchTooLarge)."""
        if self.total == 0:
            raise EmptyBatch("the batch has no domains")
        if self.total > max_batch_size:
            raise BatchTooLarge(
                f"the batch has {self.total} distinct domains; the limit is {max_batch_size} "
                "(SCRAPERSKY_MAX_BATCH_SIZE): split it into several batches"
            )
        return self

    def rejected(self) -> list[DomainOutcome]:
        """Each invalid entry's outcome: failed before any fetch, with the reason found
        in the entry as it was sent (its key may be an escaped or cut form of it)."""
        return [
            DomainOutcome(domain=key, status=DomainStatus.FAILED, attempts=0, error_type=error.error_type,
                          error=str(error), finished_at=utcnow())
            for key, error in self.invalid.items()
        ]

    def summary(self) -> dict[str, int]:
        return {
            "submitted": self.submitted,
            "duplicates": self.duplicates,
            "invalid": len(self.invalid),
            "domains": len(self.domains),
        }


def plan_domains(entries: list[str], *, max_batch_size: int, recorded: bool = False) -> DomainPlan:
    """Normalise and de-duplicate entries; invalid ones are kept with their reason.

    ``recorded``: the entries are the keys a registered batch recorded (its valid domains,
    normalised, and the keys of its invalid entries): a key that is not a domain as it
    stands stays invalid, even when what is left of a cut entry would pass.
    Raises EmptyBatch or BatchTooLarge before any work is done.
    """
    plan = DomainPlan()
    for entry in entries:
        plan.add(entry, recorded=recorded)
    return plan.check(max_batch_size)


#: Entries normalised between two turns of the event loop (a few milliseconds' work).
ENTRIES_PER_TURN = 100


async def plan_domains_in_turns(entries: list[str], *, max_batch_size: int) -> DomainPlan:
    """``plan_domains`` on an event loop: ENTRIES_PER_TURN entries at a time, the loop
    serving its other requests between them, so a large batch holds none of them up for
    long (a thread would: it and the loop take turns at the interpreter lock)."""
    plan = DomainPlan()
    for start in range(0, len(entries), ENTRIES_PER_TURN):
        for entry in entries[start:start + ENTRIES_PER_TURN]:
            plan.add(entry)
        await asyncio.sleep(0)
    return plan.check(max_batch_size)
