"""No token in the access log: uvicorn logs each request's path and query string as
they came, and a client may put its token there (``?access_token=...``). The API reads
tokens from the Authorization header only and takes no query parameters, so the access
log shows every query value as ``***`` (the names stay), and anything in the path that
looks like a JWT, or is one of the service's own secrets, as ``***`` too."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["REDACTED", "redact", "redact_access_log"]

REDACTED = "***"
#: What a JWT looks like: base64url JSON header (``{"`` is ``eyJ``), payload, signature.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def redact(path: str, secrets: Iterable[str] = ()) -> str:
    """``path`` (with its query string) as the access log may show it."""
    where, mark, query = path.partition("?")
    if query:
        query = "&".join(f"{name}={REDACTED}" if equals else REDACTED
                         for name, equals, _ in (part.partition("=") for part in query.split("&")))
    shown = _JWT.sub(REDACTED, where + mark + query)
    for secret in secrets:
        shown = shown.replace(secret, REDACTED)
    return shown


class _Redaction(logging.Filter):
    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__("uvicorn.access")
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg, self.secrets) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact_access_log(secrets: Iterable[str] = ()) -> None:
    """Redact uvicorn's access log from now on in this process (once: a later call
    replaces the secrets). A filter on the logger: uvicorn's logging set-up keeps it."""
    logger = logging.getLogger("uvicorn.access")
    for old in [f for f in logger.filters if isinstance(f, _Redaction)]:
        logger.removeFilter(old)
    logger.addFilter(_Redaction(tuple(s for s in secrets if s)))
