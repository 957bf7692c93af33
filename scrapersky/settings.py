"""Settings read from the environment: ``DATABASE_URL`` and ``SCRAPERSKY_*``.

The CLI, a Prefect worker and a deployment are configured the same way: every
batch option has an environment variable (``SCRAPERSKY_CONCURRENCY``, ...).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .batch import DEFAULT_TENANT_ID, BatchOptions

__all__ = ["Settings", "DEFAULT_DATABASE_URL", "DEFAULT_MAX_BATCH_SIZE"]

#: The embedded default: a SQLite file in the working directory, no server needed.
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///scrapersky.db"
DEFAULT_MAX_BATCH_SIZE = 10_000


class Settings(BaseSettings, BatchOptions):
    """Process-wide settings; the batch option fields are the defaults of every batch."""

    model_config = SettingsConfigDict(env_prefix="SCRAPERSKY_", extra="ignore", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "SCRAPERSKY_DATABASE_URL"),
        repr=False,  # may hold a password
    )
    tenant_id: UUID = DEFAULT_TENANT_ID
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1)
    connect_to: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("connect_to", mode="before")
    @classmethod
    def _split_rules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value

    def batch_options(self, **overrides: Any) -> BatchOptions:
        """The options of a batch: these settings, with the given fields replaced."""
        values = self.model_dump(include=set(BatchOptions.model_fields))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return BatchOptions(**values)
