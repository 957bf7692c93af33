"""Who is calling: a bearer token, read into the tenant it acts for and the user it acts as.

Two kinds of token are accepted (no anonymous access):

- a Supabase-style JWT, HS256 only, signed with ``SCRAPERSKY_JWT_SECRET``. Read from it:

  - ``exp``, required; ``exp``, ``nbf`` and ``iat`` are checked with
    ``SCRAPERSKY_JWT_LEEWAY`` seconds of clock skew;
  - ``aud``, required and equal to ``SCRAPERSKY_JWT_AUDIENCE`` (``authenticated``, what
    Supabase puts in a signed-in user's token); ``*`` accepts any audience, or none;
  - ``role``, required and one of ``SCRAPERSKY_JWT_ROLES`` (``authenticated`` and
    ``service_role``): an ``anon`` key is refused (403 ``role_not_allowed``);
  - the tenant, from claims only the service can set: ``app_metadata.tenant_id``, or the
    top-level claim named by ``SCRAPERSKY_JWT_TENANT_CLAIM`` (``tenant_id``); both
    present must agree. ``user_metadata`` is never read: every user can edit their own.
    A token naming no tenant is refused (403 ``no_tenant``) unless its role is mapped to
    one by ``SCRAPERSKY_JWT_ROLE_TENANTS`` (``service_role=<tenant uuid>``);
  - ``sub``, a user's UUID, recorded as the batch's ``created_by``;

- a static token of ``SCRAPERSKY_API_TOKENS`` (``TOKEN=TENANT_UUID`` or
  ``TOKEN=TENANT_UUID:USER_UUID``; the old dashboard sends ``scraper_sky_2024``), bound to
  its tenant and user, compared in constant time.

``created_by`` is never empty: a token that names no user (a static token without
``:USER_UUID``, a JWT without ``sub``) acts as its tenant's service user,
``service_user(tenant, "api-token")`` or ``service_user(tenant, "jwt-role:<role>")``,
a UUID the operator can compute and that never depends on the token's secret.

A refusal is ``NotAuthenticated`` (401), ``RoleNotAllowed``, ``NoTenant`` or
``WrongTenant`` (403), with a reason that never repeats the token.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_DNS, UUID, uuid5

import jwt

from scrapersky.errors import NotAuthenticated, NoTenant, RoleNotAllowed, WrongTenant

from ..settings import Settings
from .rate_limit import RateLimit

__all__ = ["Caller", "Authenticator", "ANY_AUDIENCE", "SERVICE_USERS", "service_user"]

#: SCRAPERSKY_JWT_AUDIENCE that accepts any audience (or none).
ANY_AUDIENCE = "*"
#: The namespace of service users' UUIDs (uuid5).
SERVICE_USERS = uuid5(NAMESPACE_DNS, "service-users.scrapersky")
#: Where a tenant is read when the service (not the user) sets it.
APP_METADATA = "app_metadata"
TENANT_CLAIM = "tenant_id"


def service_user(tenant_id: UUID, name: str) -> UUID:
    """The user a token that names none acts as: ``name`` is ``api-token`` for static
    tokens, ``jwt-role:<role>`` for a JWT without ``sub``."""
    return uuid5(SERVICE_USERS, f"{tenant_id}/{name}")


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, the user it acts as, and the key its request rate
    is counted under (a static token's digest, a JWT's user; never the token itself)."""

    tenant_id: UUID
    created_by: UUID
    via: str  # "jwt" or "token"
    rate_key: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


class Authenticator:
    """Reads an ``Authorization`` header into a Caller, with the settings' tokens, JWT
    secret and JWT rules."""

    def __init__(self, settings: Settings) -> None:
        # Digests of equal length: the comparison takes as long whatever the token.
        self._tokens = [(_digest(token), grant) for token, grant in settings.api_token_grants().items()]
        secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
        self._jwt_secret = secret or None
        audience = settings.jwt_audience
        self._audience = None if audience == ANY_AUDIENCE else audience
        self._roles = frozenset(settings.jwt_roles)
        self._role_tenants = dict(settings.jwt_role_tenants)
        self._tenant_claim = settings.jwt_tenant_claim or None
        self._leeway = settings.jwt_leeway
        #: Each caller's request rate, taken once its token is accepted.
        self.rate_limit = RateLimit.from_settings(settings)

    @property
    def accepts_anything(self) -> bool:
        """False when no token and no JWT secret is configured: every request is refused."""
        return bool(self._tokens or self._jwt_secret)

    def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header; an AccessError
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
        found = None
        for known, grant in self._tokens:  # every entry compared: no early exit
            if hmac.compare_digest(digest, known):
                found = grant
        if found is None:
            return None
        user = found.user_id or service_user(found.tenant_id, "api-token")
        return Caller(tenant_id=found.tenant_id, created_by=user, via="token", rate_key=f"token:{digest.hex()}")

    def _from_jwt(self, token: str) -> Caller:
        claims = self._verified(token)
        subject = _user(claims)
        role = claims.get("role")
        if role is None:
            raise RoleNotAllowed("the bearer token (JWT) has no role claim")
        if not isinstance(role, str) or role not in self._roles:
            raise RoleNotAllowed("the bearer token's role is not accepted here (an anon key is not)")
        tenant = self._tenant(claims, role)
        if subject is None:
            return Caller(tenant_id=tenant, created_by=service_user(tenant, f"jwt-role:{role}"), via="jwt",
                          rate_key=f"jwt:{_digest(token).hex()}")
        return Caller(tenant_id=tenant, created_by=subject, via="jwt", rate_key=f"user:{subject}")

    def _verified(self, token: str) -> dict[str, Any]:
        required = ["exp"] if self._audience is None else ["exp", "aud"]
        try:
            return jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                audience=self._audience,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("the bearer token (JWT) has expired") from None
        except jwt.ImmatureSignatureError:
            raise NotAuthenticated("the bearer token (JWT) is not valid yet (nbf or iat ahead of now)") from None
        except jwt.InvalidAudienceError:
            raise NotAuthenticated("the bearer token (JWT) is not for this audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise NotAuthenticated(f"the bearer token (JWT) has no '{exc.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise NotAuthenticated("the bearer token (JWT) is not valid (signature, algorithm or format)") from None

    def _tenant(self, claims: dict[str, Any], role: str) -> UUID:
        """The tenant of trusted claims (app_metadata, the configured top-level claim), else
        the operator's tenant for this role; NoTenant when neither names one."""
        named: dict[str, Any] = {}
        app_metadata = claims.get(APP_METADATA)
        if isinstance(app_metadata, dict) and app_metadata.get(TENANT_CLAIM) is not None:
            named[f"{APP_METADATA}.{TENANT_CLAIM}"] = app_metadata[TENANT_CLAIM]
        if self._tenant_claim is not None and claims.get(self._tenant_claim) is not None:
            named[self._tenant_claim] = claims[self._tenant_claim]
        tenants = set()
        for claim, value in named.items():
            try:
                tenants.add(UUID(str(value)))
            except ValueError:
                raise NotAuthenticated(f"the JWT's {claim} claim is not a tenant id (UUID)") from None
        if len(tenants) > 1:
            raise WrongTenant(f"the JWT names two tenants ({' and '.join(named)} differ)")
        if tenants:
            return tenants.pop()
        if role in self._role_tenants:
            return self._role_tenants[role]
        where = f"{APP_METADATA}.{TENANT_CLAIM}" + (f" or {self._tenant_claim}" if self._tenant_claim else "")
        raise NoTenant(f"the bearer token (JWT) names no tenant: the service sets it in {where}"
                       " (user_metadata is not read)")


def _user(claims: dict[str, Any]) -> UUID | None:
    subject = claims.get("sub")
    if subject is None:
        return None  # a service token: its role's service user
    try:
        return UUID(str(subject))
    except ValueError:
        raise NotAuthenticated("the JWT's sub claim is not a user id (UUID)") from None
