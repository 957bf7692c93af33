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
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scrapersky.db.engine import Database, database_url

from .batch import DEFAULT_TENANT_ID, BatchOptions
from .errors import ConfigError
from .web.connect_to import ConnectTo
from .web.guard import Reach

__all__ = ["Settings", "Reach", "configured", "current_settings", "DEFAULT_DATABASE_URL", "DEFAULT_MAX_BATCH_SIZE"]

#: The embedded default: a SQLite file in the working directory, no server needed.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///scrapersky.db"
DEFAULT_MAX_BATCH_SIZE = 10_000
DEFAULT_STALE_AFTER = 900.0
DEFAULT_TASK_PER_DOMAIN_MAX = 250


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
    task_runner: Literal["auto", "threads", "processes", "dask"] = "auto"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    #: Batches of at most this many entries are submitted to the express lane (a runner
    #: that starts their flow run at once: scrapersky/express.py); 0: none.
    express_max: int = Field(50, ge=0)
    dask_address: str | None = None
    # Network reach: the operator's, never a run parameter (see scrapersky/web/guard.py).
    connect_to: Annotated[tuple[str, ...], NoDecode] = ()
    allow_networks: Annotated[tuple[str, ...], NoDecode] = ()
    # The HTTP API's callers (scrapersky/api/auth.py): static bearer tokens, each bound
    # to its tenant ("TOKEN=TENANT_UUID", space- or comma-separated), and the secret of
    # Supabase-style HS256 JWTs; the audience is checked only when set.
    api_tokens: SecretStr = Field(SecretStr(""), repr=False)
    jwt_secret: SecretStr | None = Field(None, repr=False)
    jwt_audience: str | None = None

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


def _parse_api_tokens(text: str) -> dict[str, UUID]:
    """``TOKEN=TENANT_UUID`` entries, space- or comma-separated. An error names the
    entry by its position, never by its text (it holds a secret)."""
    tenants: dict[str, UUID] = {}
    for position, entry in enumerate(text.replace(",", " ").split(), start=1):
        token, separator, tenant = entry.rpartition("=")
        try:
            if not separator or not token:
                raise ValueError
            tenants[token] = UUID(tenant)
        except ValueError:
            raise ValueError(f"SCRAPERSKY_API_TOKENS: entry {position} is not TOKEN=TENANT_UUID") from None
    return tenants


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
