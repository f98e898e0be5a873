"""Operational state: SQLAlchemy 2 typed models.

The schema itself is created by the Alembic migrations in `serving/migrations`
(a test checks that models and migrations agree). JSON columns use the portable
`sqlalchemy.JSON` type; datetimes are stored in UTC and always read back
timezone-aware on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from data_contracts.schemas import FINDING_CATEGORIES
from data_contracts.schemas import SELECTION_METHODS as CONTRACT_SELECTION_METHODS

ROLES = ("officer", "analyst", "data_scientist", "auditor", "admin")
LANES = ("red", "yellow", "green")
# The contract's selection methods (migration 0002 added "watchlist" to the CHECK
# constraints of 0001): changing them needs a new migration.
SELECTION_METHODS: tuple[str, ...] = tuple(CONTRACT_SELECTION_METHODS)
REFERRAL_STATUSES = ("open", "claimed", "inspected", "waived", "closed")
MODEL_ALIASES = ("champion", "challenger")
PROMOTION_CHANNELS = ("api", "web", "cli")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC, returned timezone-aware on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware value")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# BIGINT primary keys that autoincrement on SQLite too (there only INTEGER does).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy's declarative hook
        dict[str, Any]: JSON(),
        dt.datetime: UTCDateTime(),
        dt.date: Date(),
    }


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    office_code: Mapped[str | None] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    last_login_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Bearer tokens issued before this are refused (sign-out, disabling, password reset).
    sessions_valid_after: Mapped[dt.datetime | None]


class ApiKey(Base):
    """A service key: only its SHA-256 is stored; the key is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_in("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    office_code: Mapped[str | None] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(ForeignKey("users.username"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]


class LoginThrottle(Base):
    """Failed-login counters per client IP ('ip:...'), per unknown username ('user:...')
    and per user name and client IP ('pair:<name>|<ip>'; serving.auth)."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]
    last_failure_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # A pair's last successful login: the user has signed in from that address.
    last_success_at: Mapped[dt.datetime | None]


class Shipment(Base):
    __tablename__ = "shipments"
    __table_args__ = (Index("ix_shipments_office_declared", "office_code", "declared_at"),)

    shipment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    office_code: Mapped[str] = mapped_column(String(32))
    declared_at: Mapped[dt.datetime]
    payload: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("shipment_id", "line_no"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.shipment_id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]]


class Traveller(Base):
    __tablename__ = "travellers"

    traveller_record_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payload: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (
        CheckConstraint(_in("lane", LANES), name="lane"),
        CheckConstraint("probability >= 0 AND probability <= 1", name="probability"),
        Index("ix_scores_shipment_scored", "shipment_id", "scored_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.shipment_id"))
    probability: Mapped[float] = mapped_column(Float)
    priority: Mapped[float] = mapped_column(Float)
    lane: Mapped[str] = mapped_column(String(8))
    model_version: Mapped[str] = mapped_column(String(128))
    feature_set_version: Mapped[str] = mapped_column(String(64))
    feature_vector: Mapped[dict[str, Any]]
    explanation: Mapped[dict[str, Any] | None]
    scored_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Rule(Base):
    __tablename__ = "rules"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RuleVersion(Base):
    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("rules.rule_id"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(String(16))
    must_inspect: Mapped[bool] = mapped_column(Boolean, default=False)
    effective_from: Mapped[dt.datetime]
    effective_to: Mapped[dt.datetime | None]
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RuleHit(Base):
    __tablename__ = "rule_hits"
    __table_args__ = (Index("ix_rule_hits_rule", "rule_id", "rule_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.shipment_id"), index=True)
    score_id: Mapped[int | None] = mapped_column(ForeignKey("scores.id"))
    rule_id: Mapped[str] = mapped_column(ForeignKey("rules.rule_id"))
    rule_version: Mapped[int] = mapped_column(Integer)
    hit_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WatchlistEntry(Base):
    __tablename__ = "watchlist_entries"

    entry_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    list_name: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(512))
    payload: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    loaded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Referral(Base):
    """One entry of an office's daily inspection queue, tracked to closure."""

    __tablename__ = "referrals"
    __table_args__ = (
        UniqueConstraint("office_code", "queue_date", "shipment_id"),
        CheckConstraint(_in("status", REFERRAL_STATUSES), name="status"),
        CheckConstraint(_in("selection_method", SELECTION_METHODS), name="selection_method"),
        CheckConstraint(
            "selection_probability >= 0 AND selection_probability <= 1",
            name="selection_probability",
        ),
        CheckConstraint("status <> 'waived' OR waiver_reason IS NOT NULL", name="waiver_reason"),
        Index("ix_referrals_office_date", "office_code", "queue_date"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    office_code: Mapped[str] = mapped_column(String(32))
    queue_date: Mapped[dt.date]
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.shipment_id"), index=True)
    score_id: Mapped[int | None] = mapped_column(ForeignKey("scores.id"))
    rank: Mapped[int] = mapped_column(Integer)
    priority: Mapped[float] = mapped_column(Float)
    selection_method: Mapped[str] = mapped_column(String(16))
    selection_probability: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    over_capacity: Mapped[bool] = mapped_column(Boolean, default=False)
    claimed_by: Mapped[str | None] = mapped_column(ForeignKey("users.username"))
    claimed_at: Mapped[dt.datetime | None]
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.username"))
    decided_at: Mapped[dt.datetime | None]
    waiver_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Outcome(Base):
    __tablename__ = "outcomes"
    __table_args__ = (
        CheckConstraint(
            "category IS NULL OR " + _in("category", FINDING_CATEGORIES), name="category"
        ),
        CheckConstraint(_in("selection_method", SELECTION_METHODS), name="selection_method"),
    )

    outcome_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.shipment_id"), index=True)
    referral_id: Mapped[int | None] = mapped_column(ForeignKey("referrals.id"), index=True)
    selection_method: Mapped[str] = mapped_column(String(16))
    selection_probability: Mapped[float] = mapped_column(Float)
    finding: Mapped[bool] = mapped_column(Boolean)
    category: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(8))
    notes: Mapped[str | None] = mapped_column(Text)
    inspected_at: Mapped[dt.datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutcomeSeizure(Base):
    """One line of what an outcome seized (one kind of goods), in the order recorded
    (`line_no` 1, 2 ...); the outcome's category / quantity / unit are its most
    serious line's (`policy.principal_line`). Migration 0005."""

    __tablename__ = "outcome_seizures"
    __table_args__ = (
        CheckConstraint(_in("category", FINDING_CATEGORIES), name="category"),
        CheckConstraint("line_no >= 1", name="line_no"),
        CheckConstraint(
            "(quantity IS NULL AND unit IS NULL) OR (quantity IS NOT NULL AND unit IS NOT NULL)",
            name="quantity_unit",
        ),
    )

    outcome_id: Mapped[str] = mapped_column(ForeignKey("outcomes.outcome_id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(8))


class PersonalDataView(Base):
    """Who saw which personal data (traveller records), when and for what purpose."""

    __tablename__ = "personal_data_views"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    viewer: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    fields: Mapped[dict[str, Any] | None]
    purpose: Mapped[str] = mapped_column(Text)
    viewed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Append-only, hash-chained log (see serving.audit_chain). UPDATE and DELETE are refused
    by database triggers; `seq` is assigned by the chain (1, 2, 3 ...), so two writers that
    chained onto the same entry collide on the primary key instead of forking the chain.
    Take `serving.db.write_lock(session, "audit_log")` before reading the head to append.
    `entity`/`entity_id` are lookup columns outside the hash, repeated in the payload
    (`services.audit` does): verification checks that the columns equal those copies."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq"),
        Index("ix_audit_log_entity", "entity", "entity_id"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry_id: Mapped[str] = mapped_column(String(64), unique=True)
    at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str | None] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Lock(Base):
    """Named rows to serialise writers across processes (see serving.db.write_lock)."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)


LOCK_NAMES = ("audit_log", "queue")


class ModelPromotion(Base):
    """A person moved an alias to a model version; `via` says through what (the API,
    the web pages, or the command line, whose person is not necessarily a user here,
    hence no foreign key on `promoted_by`)."""

    __tablename__ = "model_promotions"
    __table_args__ = (
        CheckConstraint(_in("alias", MODEL_ALIASES), name="alias"),
        CheckConstraint(_in("via", PROMOTION_CHANNELS), name="via"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(16))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    promoted_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    via: Mapped[str] = mapped_column(String(16))
    evaluation: Mapped[dict[str, Any] | None]
    promoted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
