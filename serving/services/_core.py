"""The shared pieces of the services: the wiring (`Services`), queue settings, errors, time
and JSON helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from data_contracts.schemas import TRAVELLERS
from data_contracts.settings import DataLayout
from serving import audit_chain
from serving.history import HistoryStore
from serving.rules_engine import Rule
from serving.scoring import ModelHolder

PERSONAL_FIELDS = tuple(c.name for c in TRAVELLERS.columns if c.personal)
MASK = "***"


class QueueSettings(BaseSettings):
    """Queue settings from the environment (prefix CARAVAN_), checked when read: a
    value out of range stops the server at start, naming the setting, rather than
    failing an officer's queue later."""

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", extra="ignore")

    # inspections per office and day, unless the office has its own capacity
    queue_capacity: int = Field(20, ge=0)
    # CARAVAN_OFFICE_CAPACITIES='{"KZ-KHORGOS": 40, "KG-BISHKEK": 12}' (JSON)
    office_capacities: dict[Annotated[str, Field(min_length=1)], Annotated[int, Field(ge=0)]] = {}
    # share of the capacity drawn at random (0 to 1: 0.05 is 5 %)
    exploration_share: float = Field(0.05, ge=0.0, le=1.0)
    overdue_hours: float = Field(24.0, gt=0.0)
    model_refresh_seconds: float = Field(5.0, gt=0.0)


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    """A request the service refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class RowError:
    index: int
    field: str
    reason: str


def row_errors(index: int, exc: ValidationError) -> list[RowError]:
    return [
        RowError(index, ".".join(str(p) for p in e["loc"]) or "record", str(e["msg"]))
        for e in exc.errors()
    ]


# --------------------------------------------------------------------------- the context


@dataclass
class Services:
    """What the API needs besides a database session."""

    layout: DataLayout
    holder: ModelHolder
    history: HistoryStore
    queue: QueueSettings = field(default_factory=QueueSettings)
    _rules_cache: tuple[int, list[Rule]] | None = None
    _export_lock: threading.Lock = field(default_factory=threading.Lock)

    def capacity(self, office: str) -> int:
        return int(self.queue.office_capacities.get(office, self.queue.queue_capacity))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def jsonable(value: Any) -> Any:
    """Plain JSON data (datetimes as UTC ISO text), as the audit chain hashes it."""
    return json.loads(audit_chain.canonical_json(_finite(value)))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def content_hash(value: Any) -> str:
    return hashlib.sha256(audit_chain.canonical_json(value).encode()).hexdigest()
