"""The project's exceptions.

    ScraperSkyError                      every error this project raises on purpose
    +-- DomainError                      one domain could not be scraped (recorded, never fatal)
    |   +-- InvalidDomain                invalid_domain       permanent
    |   +-- DNSFailed                    dns_error            permanent (the name does not exist)
    |   +-- ConnectFailed                connect_error        transient
    |   +-- FetchTimeout                 timeout              transient
    |   +-- NetworkFailed                network_error        transient (connection broke mid-response)
    |   +-- HTTPStatusFailed             http_error           transient for 408, 429 and 5xx only
    |   +-- TooManyRedirects             too_many_redirects   permanent
    |   +-- BadRedirect                  bad_redirect         permanent (to a URL that cannot be fetched)
    |   +-- BlockedAddress               blocked_address      permanent (not a public address)
    |   +-- TLSFailed                    tls_error            permanent (certificate, handshake)
    |   +-- DecodingFailed               decoding_error       permanent (broken compression)
    |   +-- RobotsDisallowed             robots_disallowed    permanent (only when robots.txt is respected)
    |   +-- NotHTML                      not_html             permanent
    |   +-- EmptyBody                    empty_body           permanent
    +-- BatchError                       a whole batch is refused
    |   +-- BatchTooLarge                batch_too_large
    |   +-- EmptyBatch                   empty_batch
    |   +-- BatchNotFound                batch_not_found (also: another tenant's batch)
    |   +-- BatchAlreadyRunning          batch_running (another live run owns the batch)
    |   +-- BatchFinished                batch_finished (other domains for a batch that ended)
    |   |   +-- BatchSuperseded          batch_superseded (a run of a submission answered already)
    |   +-- SubmitFailed                 submit_failed (Prefect could not be asked to run it)
    |       +-- BatchIdTaken             batch_id_taken (another tenant's batch has that id)
    +-- Busy                             busy                 too many submissions at once: try again (429)
    |   +-- RateLimited                  rate_limited         this caller sent too many requests: try again (429)
    +-- AccessError                      the caller may not do this (the HTTP API's refusals)
    |   +-- NotAuthenticated             not_authenticated    no token, or one not accepted
    |   +-- WrongTenant                  wrong_tenant         asks for another tenant than the token's
    |   +-- NoTenant                     no_tenant            a JWT that names no tenant in a trusted claim
    |   +-- RoleNotAllowed               role_not_allowed     a JWT whose role is not accepted (anon, none)
    +-- ConfigError                      config_error         a setting cannot be used
    +-- SchemaMismatch                   schema_mismatch      the live tables do not fit the code

Each class carries a stable ``error_type`` code; code decides on the class, never on
the message. Retry decisions live in one place: ``DomainError.retryable``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

__all__ = [
    "ScraperSkyError",
    "DomainError",
    "InvalidDomain",
    "DNSFailed",
    "ConnectFailed",
    "FetchTimeout",
    "NetworkFailed",
    "HTTPStatusFailed",
    "TooManyRedirects",
    "BadRedirect",
    "BlockedAddress",
    "TLSFailed",
    "DecodingFailed",
    "RobotsDisallowed",
    "NotHTML",
    "EmptyBody",
    "BatchError",
    "BatchTooLarge",
    "EmptyBatch",
    "BatchNotFound",
    "BatchAlreadyRunning",
    "BatchFinished",
    "BatchSuperseded",
    "SubmitFailed",
    "BatchIdTaken",
    "Busy",
    "RateLimited",
    "AccessError",
    "NotAuthenticated",
    "WrongTenant",
    "NoTenant",
    "RoleNotAllowed",
    "ConfigError",
    "SchemaMismatch",
    "TRANSIENT_HTTP_STATUSES",
]

#: HTTP statuses worth another attempt (Scrapy's RETRY_HTTP_CODES, plus every 5xx).
TRANSIENT_HTTP_STATUSES = frozenset({408, 429, 522, 524})


def _rebuild(cls: type[ScraperSkyError], message: str, state: dict[str, Any]) -> ScraperSkyError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class ScraperSkyError(Exception):
    """Root of every error this project raises on purpose."""

    error_type = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default pickling; Prefect
        # pickles exceptions into task states.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


class DomainError(ScraperSkyError):
    """One domain could not be scraped."""

    error_type = "domain_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        final_url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.final_url = final_url
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503)
        self.attempts = 1


class InvalidDomain(DomainError):
    """The entry is not a domain name we can scrape."""

    error_type = "invalid_domain"


class DNSFailed(DomainError):
    """The domain name does not resolve."""

    error_type = "dns_error"


class ConnectFailed(DomainError):
    """No connection could be opened (refused, unreachable, TLS handshake failed)."""

    error_type = "connect_error"
    retryable = True


class FetchTimeout(DomainError):
    """A connect, read or whole-fetch deadline passed."""

    error_type = "timeout"
    retryable = True


class NetworkFailed(DomainError):
    """The connection broke while the response was being read."""

    error_type = "network_error"
    retryable = True


class HTTPStatusFailed(DomainError):
    """The server answered with an error status."""

    error_type = "http_error"

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        status = self.http_status or 0
        return status >= 500 or status in TRANSIENT_HTTP_STATUSES


class TooManyRedirects(DomainError):
    """The redirect chain was longer than allowed."""

    error_type = "too_many_redirects"


class BadRedirect(DomainError):
    """A redirect to a URL that cannot be fetched (another scheme, a broken Location)."""

    error_type = "bad_redirect"


class BlockedAddress(DomainError):
    """The domain resolves (or redirects) to an address that is not on the public internet."""

    error_type = "blocked_address"


class TLSFailed(DomainError):
    """No trustworthy TLS connection (self-signed or expired certificate, failed handshake)."""

    error_type = "tls_error"


class DecodingFailed(DomainError):
    """The response's compression is broken or not one we asked for."""

    error_type = "decoding_error"


class RobotsDisallowed(DomainError):
    """robots.txt disallows the homepage (only checked when asked to)."""

    error_type = "robots_disallowed"


class NotHTML(DomainError):
    """The homepage is not an HTML document."""

    error_type = "not_html"


class EmptyBody(DomainError):
    """The homepage answered with no content."""

    error_type = "empty_body"


class BatchError(ScraperSkyError):
    """A whole batch is refused."""

    error_type = "batch_error"


class BatchTooLarge(BatchError):
    """More domains than the configured batch size limit."""

    error_type = "batch_too_large"


class EmptyBatch(BatchError):
    """A batch with no domains in it."""

    error_type = "empty_batch"


class BatchNotFound(BatchError):
    """No batch with that id for that tenant."""

    error_type = "batch_not_found"


class BatchAlreadyRunning(BatchError):
    """Another flow run is moving this batch: one batch, one run."""

    error_type = "batch_running"


class BatchFinished(BatchError):
    """Domains it never had, for a batch that has ended: a batch is not grown afterwards."""

    error_type = "batch_finished"


class BatchSuperseded(BatchFinished):
    """A run of a submission that was answered already (refused with a 503, or replaced by a
    later submission or recovery): it does nothing."""

    error_type = "batch_superseded"


class SubmitFailed(BatchError):
    """The batch could not be handed to its deployment (Prefect API, deployment name);
    ``batch_id`` names the batch the submission created or opened, when it did."""

    error_type = "submit_failed"

    def __init__(self, message: str, *, batch_id: UUID | None = None) -> None:
        super().__init__(message)
        self.batch_id = batch_id


class BatchIdTaken(SubmitFailed):
    """The batch id is another tenant's batch: the submission must choose another one."""

    error_type = "batch_id_taken"


class Busy(ScraperSkyError):
    """The service takes as many submissions at once as it can serve well: try again
    after a moment (HTTP 429 with Retry-After)."""

    error_type = "busy"


class RateLimited(Busy):
    """This caller sent more requests than its rate allows: try again after
    ``retry_after`` seconds (HTTP 429 with Retry-After)."""

    error_type = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AccessError(ScraperSkyError):
    """The caller may not do this."""

    error_type = "access_denied"


class NotAuthenticated(AccessError):
    """No bearer token, or one that is not accepted (unknown, badly signed, expired)."""

    error_type = "not_authenticated"


class WrongTenant(AccessError):
    """The request names a tenant other than the one its token is bound to."""

    error_type = "wrong_tenant"


class NoTenant(AccessError):
    """A valid JWT that names no tenant in a claim the service sets, and whose role is
    not mapped to one by the operator."""

    error_type = "no_tenant"


class RoleNotAllowed(AccessError):
    """A valid JWT whose ``role`` is not one the service accepts (an anon key, no role)."""

    error_type = "role_not_allowed"


class ConfigError(ScraperSkyError):
    """A setting cannot be used."""

    error_type = "config_error"


class SchemaMismatch(ScraperSkyError):
    """The live database tables do not fit what the code reads and writes."""

    error_type = "schema_mismatch"
