"""Initial schema: operational state, users, and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


AUDIT_LOG_SQLITE_TRIGGERS: tuple[str, ...] = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END""",
)
AUDIT_LOG_POSTGRESQL_TRIGGERS: tuple[str, ...] = (
    """CREATE FUNCTION caravan_audit_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
    """CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION caravan_audit_log_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION caravan_audit_log_append_only()""",
)


def _create_audit_log_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        statements = AUDIT_LOG_SQLITE_TRIGGERS
    elif dialect == "postgresql":
        statements = AUDIT_LOG_POSTGRESQL_TRIGGERS
    else:
        raise RuntimeError(f"no append-only trigger for {dialect}")
    for statement in statements:
        op.execute(statement)


def _drop_audit_log_triggers() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS caravan_audit_log_append_only()")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=True),
        sa.Column("entity_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_log_seq")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_audit_log_entry_id")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_log_hash")),
    )
    op.create_index(op.f("ix_audit_log_kind"), "audit_log", ["kind"], unique=False)
    locks = op.create_table(
        "locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    op.bulk_insert(locks, [{"name": "audit_log"}, {"name": "queue"}])
    op.create_index("ix_audit_log_entity", "audit_log", ["entity", "entity_id"], unique=False)

    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    op.create_table(
        "personal_data_views",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("viewer", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personal_data_views")),
    )
    op.create_index(
        op.f("ix_personal_data_views_subject_id"),
        "personal_data_views",
        ["subject_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_personal_data_views_viewer"), "personal_data_views", ["viewer"], unique=False
    )

    op.create_table(
        "rules",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_rules")),
    )
    op.create_table(
        "shipments",
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("office_code", sa.String(length=32), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("shipment_id", name=op.f("pk_shipments")),
    )
    op.create_index(
        "ix_shipments_office_declared", "shipments", ["office_code", "declared_at"], unique=False
    )

    op.create_table(
        "travellers",
        sa.Column("traveller_record_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("traveller_record_id", name=op.f("pk_travellers")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("office_code", sa.String(length=32), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('officer', 'analyst', 'data_scientist', 'auditor', 'admin')",
            name=op.f("ck_users_role"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "watchlist_entries",
        sa.Column("entry_id", sa.String(length=128), nullable=False),
        sa.Column("list_name", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_watchlist_entries")),
    )
    op.create_index(
        op.f("ix_watchlist_entries_list_name"), "watchlist_entries", ["list_name"], unique=False
    )

    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("office_code", sa.String(length=32), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('officer', 'analyst', 'data_scientist', 'auditor', 'admin')",
            name=op.f("ck_api_keys_role"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.username"], name=op.f("fk_api_keys_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.shipment_id"], name=op.f("fk_items_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("shipment_id", "line_no", name=op.f("uq_items_shipment_id")),
    )
    op.create_index(op.f("ix_items_shipment_id"), "items", ["shipment_id"], unique=False)

    op.create_table(
        "model_promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=16), nullable=False),
        sa.Column("previous_version", sa.String(length=64), nullable=True),
        sa.Column("promoted_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "alias IN ('champion', 'challenger')", name=op.f("ck_model_promotions_alias")
        ),
        sa.ForeignKeyConstraint(
            ["promoted_by"], ["users.username"], name=op.f("fk_model_promotions_promoted_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_promotions")),
    )
    op.create_table(
        "rule_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("must_inspect", sa.Boolean(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.rule_id"], name=op.f("fk_rule_versions_rule_id_rules")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_versions")),
        sa.UniqueConstraint("rule_id", "version", name=op.f("uq_rule_versions_rule_id")),
    )
    op.create_table(
        "scores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("lane", sa.String(length=8), nullable=False),
        sa.Column("model_version", sa.String(length=128), nullable=False),
        sa.Column("feature_set_version", sa.String(length=64), nullable=False),
        sa.Column("feature_vector", sa.JSON(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("lane IN ('red', 'yellow', 'green')", name=op.f("ck_scores_lane")),
        sa.CheckConstraint(
            "probability >= 0 AND probability <= 1", name=op.f("ck_scores_probability")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.shipment_id"], name=op.f("fk_scores_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scores")),
    )
    op.create_index(
        "ix_scores_shipment_scored", "scores", ["shipment_id", "scored_at"], unique=False
    )

    op.create_table(
        "referrals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("office_code", sa.String(length=32), nullable=False),
        sa.Column("queue_date", sa.Date(), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("score_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Float(), nullable=False),
        sa.Column("selection_method", sa.String(length=16), nullable=False),
        sa.Column("selection_probability", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("over_capacity", sa.Boolean(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("waiver_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "selection_method IN ('rule', 'model', 'random', 'intelligence')",
            name=op.f("ck_referrals_selection_method"),
        ),
        sa.CheckConstraint(
            "status <> 'waived' OR waiver_reason IS NOT NULL",
            name=op.f("ck_referrals_waiver_reason"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'claimed', 'inspected', 'waived', 'closed')",
            name=op.f("ck_referrals_status"),
        ),
        sa.CheckConstraint(
            "selection_probability >= 0 AND selection_probability <= 1",
            name=op.f("ck_referrals_selection_probability"),
        ),
        sa.ForeignKeyConstraint(
            ["claimed_by"], ["users.username"], name=op.f("fk_referrals_claimed_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.username"], name=op.f("fk_referrals_decided_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["score_id"], ["scores.id"], name=op.f("fk_referrals_score_id_scores")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.shipment_id"],
            name=op.f("fk_referrals_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint(
            "office_code", "queue_date", "shipment_id", name=op.f("uq_referrals_office_code")
        ),
    )
    op.create_index(
        "ix_referrals_office_date", "referrals", ["office_code", "queue_date"], unique=False
    )
    op.create_index(op.f("ix_referrals_shipment_id"), "referrals", ["shipment_id"], unique=False)
    op.create_index(op.f("ix_referrals_status"), "referrals", ["status"], unique=False)

    op.create_table(
        "rule_hits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column("score_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("rule_version", sa.Integer(), nullable=False),
        sa.Column("hit_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.rule_id"], name=op.f("fk_rule_hits_rule_id_rules")
        ),
        sa.ForeignKeyConstraint(
            ["score_id"], ["scores.id"], name=op.f("fk_rule_hits_score_id_scores")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.shipment_id"],
            name=op.f("fk_rule_hits_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rule_hits")),
    )
    op.create_index("ix_rule_hits_rule", "rule_hits", ["rule_id", "rule_version"], unique=False)
    op.create_index(op.f("ix_rule_hits_shipment_id"), "rule_hits", ["shipment_id"], unique=False)

    op.create_table(
        "outcomes",
        sa.Column("outcome_id", sa.String(length=64), nullable=False),
        sa.Column("shipment_id", sa.String(length=64), nullable=False),
        sa.Column(
            "referral_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("selection_method", sa.String(length=16), nullable=False),
        sa.Column("selection_probability", sa.Float(), nullable=False),
        sa.Column("finding", sa.Boolean(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=8), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "category IS NULL OR category IN ('firearms', 'parts', 'ammunition', 'explosives', "
            "'dual_use', 'other_contraband', 'documentary')",
            name=op.f("ck_outcomes_category"),
        ),
        sa.CheckConstraint(
            "selection_method IN ('rule', 'model', 'random', 'intelligence')",
            name=op.f("ck_outcomes_selection_method"),
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_outcomes_referral_id_referrals")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipments.shipment_id"],
            name=op.f("fk_outcomes_shipment_id_shipments"),
        ),
        sa.PrimaryKeyConstraint("outcome_id", name=op.f("pk_outcomes")),
    )
    op.create_index(op.f("ix_outcomes_referral_id"), "outcomes", ["referral_id"], unique=False)
    op.create_index(op.f("ix_outcomes_shipment_id"), "outcomes", ["shipment_id"], unique=False)

    _create_audit_log_triggers()


def downgrade() -> None:
    _drop_audit_log_triggers()
    op.drop_index(op.f("ix_outcomes_shipment_id"), table_name="outcomes")
    op.drop_index(op.f("ix_outcomes_referral_id"), table_name="outcomes")

    op.drop_table("outcomes")
    op.drop_index(op.f("ix_rule_hits_shipment_id"), table_name="rule_hits")
    op.drop_index("ix_rule_hits_rule", table_name="rule_hits")

    op.drop_table("rule_hits")
    op.drop_index(op.f("ix_referrals_status"), table_name="referrals")
    op.drop_index(op.f("ix_referrals_shipment_id"), table_name="referrals")
    op.drop_index("ix_referrals_office_date", table_name="referrals")

    op.drop_table("referrals")
    op.drop_index("ix_scores_shipment_scored", table_name="scores")

    op.drop_table("scores")
    op.drop_table("rule_versions")
    op.drop_table("model_promotions")
    op.drop_index(op.f("ix_items_shipment_id"), table_name="items")

    op.drop_table("items")
    op.drop_table("api_keys")
    op.drop_index(op.f("ix_watchlist_entries_list_name"), table_name="watchlist_entries")

    op.drop_table("watchlist_entries")
    op.drop_table("users")
    op.drop_table("travellers")
    op.drop_index("ix_shipments_office_declared", table_name="shipments")

    op.drop_table("shipments")
    op.drop_table("rules")
    op.drop_index(op.f("ix_personal_data_views_viewer"), table_name="personal_data_views")
    op.drop_index(op.f("ix_personal_data_views_subject_id"), table_name="personal_data_views")

    op.drop_table("personal_data_views")
    op.drop_table("login_throttle")
    op.drop_table("locks")
    op.drop_index(op.f("ix_audit_log_kind"), table_name="audit_log")
    op.drop_index("ix_audit_log_entity", table_name="audit_log")

    op.drop_table("audit_log")
