"""Settings read from the environment: ``DATABASE_URL`` and ``SCRAPERSKY_*``.

The CLI, a Prefect worker and a deployment are configured the same way: every
batch option has an environment variable (``SCRAPERSKY_CONCURRENCY``, ...).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal, NamedTuple
from uuid import UUID

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scrapersky.db.engine import Database, database_url

from .batch import DEFAULT_TENANT_ID, BatchOptions
from .errors import ConfigError
from .web.connect_to import ConnectTo
from .web.guard import Reach

__all__ = ["Settings", "TokenGrant", "Reach", "configured", "current_settings", "DEFAULT_DATABASE_URL",
           "DEFAULT_MAX_BATCH_SIZE"]

#: The embedded default: a SQLite file in the working directory, no server needed.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///scrapersky.db"
DEFAULT_MAX_BATCH_SIZE = 10_000
DEFAULT_STALE_AFTER = 900.0
DEFAULT_TASK_PER_DOMAIN_MAX = 250
MIN_JWT_SECRET_BYTES = 32


class Settings(BaseSettings, BatchOptions):
    """Process-wide settings; the batch option fields are the defaults of every batch."""

    # hide_input_in_errors: a refused value (a token list, a database URL) is never echoed.
    model_config = SettingsConfigDict(env_prefix="SCRAPERSKY_", extra="ignore", frozen=True,
                                      hide_input_in_errors=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "SCRAPERSKY_DATABASE_URL"),
        repr=False,  # may hold a password
    )
    tenant_id: UUID = DEFAULT_TENANT_ID
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1)
    #: A pending/running batch with no update for this long is stale: its run is gone
    #: (a running batch saves progress every few seconds while domains complete).
    stale_after: float = Field(DEFAULT_STALE_AFTER, gt=0)
    # Fan-out (see flows/batch_scrape.py): up to this many domains, a task run per
    # domain; above, sub-batch tasks on the task runner below, a few in flight at once.
    task_per_domain_max: int = Field(DEFAULT_TASK_PER_DOMAIN_MAX, ge=0)
    #: Batches of at most this many entries are submitted to the express lane (a runner
    #: that starts their flow run at once: scrapersky/express.py); 0: none.
    express_max: int = Field(50, ge=0)
    task_runner: Literal["auto", "threads", "processes", "dask"] = "auto"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    dask_address: str | None = None
    # Network reach: the operator's, never a run parameter (see scrapersky/web/guard.py).
    connect_to: Annotated[tuple[str, ...], NoDecode] = ()
    allow_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # The HTTP API's callers (scrapersky/api/auth.py): static bearer tokens, each bound
    # to its tenant and maybe a user ("TOKEN=TENANT_UUID" or "TOKEN=TENANT_UUID:USER_UUID",
    # space- or comma-separated), and the secret of Supabase-style HS256 JWTs.
    api_tokens: SecretStr = Field(SecretStr(""), repr=False)
    jwt_secret: SecretStr | None = Field(None, repr=False)
    jwt_audience: str = Field(
        "authenticated",
        description="The 'aud' a JWT must carry (Supabase's user tokens: 'authenticated'); "
                    "'*' accepts any audience, or none.",
    )
    jwt_tenant_claim: str = Field(
        "tenant_id",
        description="The top-level JWT claim read as the tenant when app_metadata.tenant_id is "
                    "absent; empty: app_metadata.tenant_id only. Never read from user_metadata.",
    )
    jwt_roles: Annotated[tuple[str, ...], NoDecode] = Field(
        ("authenticated", "service_role"),
        description="The JWT 'role' claims accepted (space- or comma-separated); 'anon' keys "
                    "and tokens without a role are refused.",
    )
    jwt_role_tenants: Annotated[dict[str, UUID], NoDecode] = Field(
        default_factory=dict,
        description="'ROLE=TENANT_UUID' entries: the tenant of an accepted JWT of that role that "
                    "names none (without one, such a JWT is refused with no_tenant).",
    )
    jwt_leeway: float = Field(30.0, ge=0, le=300, description="Seconds of clock skew allowed on exp, nbf and iat.")
    # Requests per second per caller (scrapersky/api/rate_limit.py), and the burst a
    # caller may send at once; 0 disables the limit.
    rate_limit: float = Field(50.0, ge=0)
    rate_burst: int = Field(100, ge=1)

    @field_validator("database_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        try:
            database_url(url)  # refused here, once, rather than by each command's first query
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return url

    @field_validator("connect_to", "allow_networks", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    @field_validator("connect_to")
    @classmethod
    def _parseable_rules(cls, rules: tuple[str, ...]) -> tuple[str, ...]:
        try:
            ConnectTo(rules)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return rules

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"SCRAPERSKY_ALLOW_NETWORKS: {exc}") from None
        return networks

    @field_validator("api_tokens")
    @classmethod
    def _token_entries(cls, tokens: SecretStr) -> SecretStr:
        _parse_api_tokens(tokens.get_secret_value())  # refused at start, never echoed
        return tokens

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and 0 < len(secret.get_secret_value().encode()) < MIN_JWT_SECRET_BYTES:
            raise ValueError(f"SCRAPERSKY_JWT_SECRET: shorter than {MIN_JWT_SECRET_BYTES} bytes (HS256 needs a key"
                             " at least as long as its hash; Supabase's JWT secrets are)")
        return secret

    @field_validator("jwt_audience")
    @classmethod
    def _named_audience(cls, audience: str) -> str:
        if not audience.strip():
            raise ValueError("SCRAPERSKY_JWT_AUDIENCE: empty; name the audience JWTs must carry, or '*' for any")
        return audience.strip()

    @field_validator("jwt_tenant_claim")
    @classmethod
    def _tenant_claim(cls, claim: str) -> str:
        if claim.strip() in _NOT_A_TENANT_CLAIM:
            raise ValueError(f"SCRAPERSKY_JWT_TENANT_CLAIM: '{claim.strip()}' cannot name the tenant")
        return claim.strip()

    @field_validator("jwt_roles", mode="before")
    @classmethod
    def _role_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(part for part in value.replace(",", " ").split() if part)
        if not value:
            raise ValueError("SCRAPERSKY_JWT_ROLES: name at least one role")
        return value

    @field_validator("jwt_role_tenants", mode="before")
    @classmethod
    def _role_tenant_entries(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        tenants: dict[str, UUID] = {}
        for position, entry in enumerate(value.replace(",", " ").split(), start=1):
            role, separator, tenant = entry.partition("=")
            try:
                if not separator or not role:
                    raise ValueError
                tenants[role] = UUID(tenant)
            except ValueError:
                raise ValueError(f"SCRAPERSKY_JWT_ROLE_TENANTS: entry {position} is not ROLE=TENANT_UUID") from None
        return tenants

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """The environment's settings with ``overrides`` (None: not given); a value that
        cannot be used is a ConfigError naming its variable (never echoing the value)."""
        try:
            return cls(**{name: value for name, value in overrides.items() if value is not None})
        except ValidationError as exc:
            raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None

    def api_token_tenants(self) -> dict[str, UUID]:
        """SCRAPERSKY_API_TOKENS as {token: tenant id}."""
        return {token: grant.tenant_id for token, grant in self.api_token_grants().items()}

    def api_token_grants(self) -> dict[str, TokenGrant]:
        """SCRAPERSKY_API_TOKENS as {token: its tenant and user (None when not named)}."""
        return _parse_api_tokens(self.api_tokens.get_secret_value())

    def database(self) -> Database:
        return Database(self.database_url)

    def reach(self) -> Reach:
        """The operator's reach (SCRAPERSKY_CONNECT_TO, SCRAPERSKY_ALLOW_NETWORKS), as
        the value ``scrapersky.web`` takes."""
        return Reach(connect_to=self.connect_to, allow_networks=self.allow_networks)

    def batch_options(self, **overrides: Any) -> BatchOptions:
        """The options of a batch: these settings, with the given fields replaced."""
        values = self.model_dump(include=set(BatchOptions.model_fields))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return BatchOptions(**values)


def _problem(error: Any) -> str:
    """One refused setting as a reader wants it: ``SCRAPERSKY_TENANT_ID: not a valid UUID``."""
    name = str(error["loc"][0]) if error["loc"] else ""
    if name.lower() in ("database_url", "scrapersky_database_url"):
        variable = "DATABASE_URL"
    else:
        variable = f"SCRAPERSKY_{name.upper()}" if name else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if message.startswith(variable) else f"{variable}: {message}"


class TokenGrant(NamedTuple):
    """What a static API token acts as: its tenant, and its user when the entry names one."""

    tenant_id: UUID
    user_id: UUID | None


#: Claims that cannot be SCRAPERSKY_JWT_TENANT_CLAIM: the registered ones, the role, and
#: the metadata objects (app_metadata.tenant_id is always read; user_metadata never).
_NOT_A_TENANT_CLAIM = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "role",
                                 "app_metadata", "user_metadata"})


def _parse_api_tokens(text: str) -> dict[str, TokenGrant]:
    """``TOKEN=TENANT_UUID`` or ``TOKEN=TENANT_UUID:USER_UUID`` entries, space- or
    comma-separated. An error names the entry by its position, never by its text (it
    holds a secret)."""
    grants: dict[str, TokenGrant] = {}
    for position, entry in enumerate(text.replace(",", " ").split(), start=1):
        token, separator, grant = entry.rpartition("=")
        tenant, colon, user = grant.partition(":")
        try:
            if not separator or not token or (colon and not user):
                raise ValueError
            grants[token] = TokenGrant(UUID(tenant), UUID(user) if colon else None)
        except ValueError:
            raise ValueError(f"SCRAPERSKY_API_TOKENS: entry {position} is not TOKEN=TENANT_UUID"
                             " or TOKEN=TENANT_UUID:USER_UUID") from None
    return grants


_current: ContextVar[Settings | None] = ContextVar("scrapersky_settings", default=None)


@contextmanager
def configured(settings: Settings) -> Iterator[Settings]:
    """Run what is inside with these settings: how the CLI hands its own (command-line
    options over the environment) to a flow it runs in this process."""
    token = _current.set(settings)
    try:
        yield settings
    finally:
        _current.reset(token)


def current_settings() -> Settings:
    """The settings of this run: the caller's (``configured``), else the environment's.
    Read once, at the edge: a flow's entry, a command, a client call."""
    return _current.get() or Settings.load()
