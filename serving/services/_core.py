"""The shared pieces of the services: the wiring (`Services`), queue settings, errors, time
and JSON helpers."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from data_contracts.schemas import TRAVELLERS
from data_contracts.settings import DataLayout
from serving import audit_chain
from serving.history import HistoryStore
from serving.rules_engine import Rule
from serving.scoring import ModelHolder
from serving.services.combining import Combiner

if TYPE_CHECKING:
    from serving.services.shipments import Single, StoredShipment

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
    # Today's queue takes in the forced shipments of earlier days that no queue holds
    # when declared at most this many days before today (local days); older ones are
    # left to their own day's queue: goods declared long ago have normally left
    # customs control, and a rescreen of old shipments (a new list entry) must not
    # fill today's capacity with them.
    carry_forced_days: int = Field(7, ge=0)
    model_refresh_seconds: float = Field(5.0, gt=0.0)
    # A queue day is a calendar day in the office's time zone (IANA name): its own in
    # CARAVAN_OFFICE_TIMEZONES='{"KG-BISHKEK": "Asia/Bishkek"}' (JSON), else this one.
    queue_timezone: str = "UTC"
    office_timezones: dict[Annotated[str, Field(min_length=1)], str] = {}

    @field_validator("queue_timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        _zone_named(name, "CARAVAN_QUEUE_TIMEZONE")
        return name

    @field_validator("office_timezones")
    @classmethod
    def _known_zones(cls, zones: dict[str, str]) -> dict[str, str]:
        for office, name in zones.items():
            _zone_named(name, f"CARAVAN_OFFICE_TIMEZONES (office {office})")
        return zones

    def zone(self, office: str) -> ZoneInfo:
        """The time zone of the office's queue days."""
        return ZoneInfo(self.office_timezones.get(office, self.queue_timezone))

    def zone_label(self, office: str, day: dt.date) -> tuple[str, str]:
        """(the zone's name, its UTC offset at the start of `day`: "+06:00")."""
        zone = self.zone(office)
        offset = self.day_window(office, day)[0].astimezone(zone).utcoffset() or dt.timedelta()
        minutes = int(abs(offset).total_seconds()) // 60
        sign = "-" if offset < dt.timedelta() else "+"
        return zone.key, f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def today(self, office: str, at: dt.datetime | None = None) -> dt.date:
        """The office's queue day at `at` (default now)."""
        return (at or now()).astimezone(self.zone(office)).date()

    def day_of(self, office: str, at: dt.datetime) -> dt.date:
        """The office's queue day of the instant `at` (naive: UTC)."""
        aware = at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        return aware.astimezone(self.zone(office)).date()

    def day_window(self, office: str, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The office's queue day as UTC instants [local midnight, next local
        midnight): 24 hours, or 23 or 25 on a daylight-saving change (a midnight
        the clocks skip starts the day when they resume)."""
        zone = self.zone(office)
        start, end = (
            dt.datetime.combine(d, dt.time(), tzinfo=zone).astimezone(dt.UTC)
            for d in (day, day + dt.timedelta(days=1))
        )
        return start, end


def _zone_named(name: str, variable: str) -> None:
    """Raises ValueError naming `variable` when `name` is no known IANA time zone."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{variable}: unknown time zone {name!r} (an IANA name such as Asia/Bishkek)"
        ) from None


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
    # Concurrent single-shipment ingests, scored and stored together
    # (`serving.services.shipments.ingest_shipments`).
    shipment_combiner: Combiner[Single, list[StoredShipment]] = field(default_factory=Combiner)

    def capacity(self, office: str) -> int:
        return int(self.queue.office_capacities.get(office, self.queue.queue_capacity))


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def jsonable(value: Any) -> Any:
    """Plain JSON data (datetimes as UTC ISO text, non-finite floats as None), as the
    audit chain hashes it: the common types in one walk (`audit_chain.plain`), any
    other through the canonical text (which converts it or says why not)."""
    try:
        return audit_chain.plain(value, nonfinite_as_none=True)
    except (audit_chain.NotPlainError, TypeError):
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
