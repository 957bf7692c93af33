"""Who is calling: a bearer token, read into the tenant it acts for.

Two kinds of token are accepted (no anonymous access):

- a Supabase-style JWT, HS256, signed with ``SCRAPERSKY_JWT_SECRET``: its ``exp`` is
  required and checked, its ``aud`` only when ``SCRAPERSKY_JWT_AUDIENCE`` is set; ``sub``
  (a user's UUID) becomes the batch's ``created_by``; the tenant is a ``tenant_id``
  claim (at the top, or in ``app_metadata`` / ``user_metadata``), else the default
  tenant (``SCRAPERSKY_TENANT_ID``);
- a static token of ``SCRAPERSKY_API_TOKENS`` (``TOKEN=TENANT_UUID``; the old dashboard
  sends ``scraper_sky_2024``), bound to its tenant, compared in constant time.

A refusal is ``NotAuthenticated`` with a reason that never repeats the token.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt

from scrapersky.errors import NotAuthenticated

from ..settings import Settings

__all__ = ["Caller", "Authenticator", "TENANT_CLAIM"]

TENANT_CLAIM = "tenant_id"
_CLAIM_HOMES = (None, "app_metadata", "user_metadata")  # where a tenant claim may be, in order


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and the user when its token names one."""

    tenant_id: UUID
    created_by: UUID | None
    via: str  # "jwt" or "token"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Authenticator:
    """Reads an ``Authorization`` header into a Caller, with the settings' tokens and secret."""

    def __init__(self, settings: Settings) -> None:
        # Digests of equal length: the comparison takes as long whatever the token.
        self._tokens = [(_digest(token), tenant) for token, tenant in settings.api_token_tenants().items()]
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
        self._jwt_secret = secret or None
        self._audience = settings.jwt_audience
        self._default_tenant = settings.tenant_id

    @property
    def accepts_anything(self) -> bool:
        """False when no token and no JWT secret is configured: every request is refused."""
        return bool(self._tokens or self._jwt_secret)

    def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header; NotAuthenticated
        when there is none or it is not accepted."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if not authorization:
            raise NotAuthenticated("no bearer token: send the header 'Authorization: Bearer <token>'")
        if scheme.lower() != "bearer" or not token:
            raise NotAuthenticated("the Authorization header is not 'Bearer <token>'")
        static = self._static(token)
        if static is not None:
            return static
        if self._jwt_secret is not None and _looks_like_jwt(token):
            return self._from_jwt(token)
        raise NotAuthenticated("the bearer token is not accepted")

    def _static(self, token: str) -> Caller | None:
        digest = _digest(token)
        found: UUID | None = None
        for known, tenant in self._tokens:  # every entry compared: no early exit
            if hmac.compare_digest(digest, known):
                found = tenant
        return None if found is None else Caller(tenant_id=found, created_by=None, via="token")

    def _from_jwt(self, token: str) -> Caller:
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                audience=self._audience,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("the bearer token (JWT) has expired") from None
        except jwt.InvalidAudienceError:
            raise NotAuthenticated("the bearer token (JWT) is not for this audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthenticated(f"the bearer token (JWT) has no '{exc.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise NotAuthenticated("the bearer token (JWT) is not valid (signature, algorithm or format)") from None
        return Caller(tenant_id=self._tenant(claims), created_by=self._user(claims), via="jwt")

    def _tenant(self, claims: dict[str, Any]) -> UUID:
        for home in _CLAIM_HOMES:
            holder = claims if home is None else claims.get(home)
            value = holder.get(TENANT_CLAIM) if isinstance(holder, dict) else None
            if value is not None:
                try:
                    return UUID(str(value))
                except ValueError:
                    raise NotAuthenticated("the JWT's tenant_id claim is not a UUID") from None
        return self._default_tenant

    @staticmethod
    def _user(claims: dict[str, Any]) -> UUID | None:
        subject = claims.get("sub")
        if subject is None:
            return None  # a service token: no user
        try:
            return UUID(str(subject))
        except ValueError:
            raise NotAuthenticated("the JWT's sub claim is not a user id (UUID)") from None
