"""Request bodies shared by more than one door (the native execute route and the Airbyte-compatible one)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ExecuteBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # e.g. `intent` from Airbyte clients, and future keys
    entity: str = Field(min_length=1, max_length=128)
    action: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] | None = None
    select_fields: list[str] | None = Field(None, max_length=200)
    exclude_fields: list[str] | None = Field(None, max_length=200)
    skip_truncation: bool = True
    no_cache: bool = False
