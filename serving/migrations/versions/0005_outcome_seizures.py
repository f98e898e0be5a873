"""Seizure lines of an outcome: outcome_seizures.

An outcome with a finding holds one or more seizure lines (one kind of goods each:
finding category, and quantity with unit or neither), in the order recorded; the
outcome's own category / quantity / unit stay, as the most serious line's (what
labels, rule finding rates and exports read).

A new table on both backends; each existing outcome with a category gets one line
from its category / quantity / unit (a unit recorded without a quantity is dropped
from the line, a line holds both or neither; the outcome's columns are not
changed). The downgrade drops the table (the outcomes keep their principal line).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINDING_CATEGORIES = (  # as of this revision (data_contracts.schemas)
    "firearms",
    "parts",
    "ammunition",
    "explosives",
    "dual_use",
    "other_contraband",
    "documentary",
)


def upgrade() -> None:
    categories = ", ".join(f"'{c}'" for c in FINDING_CATEGORIES)
    op.create_table(
        "outcome_seizures",
        sa.Column("outcome_id", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=8), nullable=True),
        sa.CheckConstraint(
            f"category IN ({categories})", name=op.f("ck_outcome_seizures_category")
        ),
        sa.CheckConstraint("line_no >= 1", name=op.f("ck_outcome_seizures_line_no")),
        sa.CheckConstraint(
            "(quantity IS NULL AND unit IS NULL) OR (quantity IS NOT NULL AND unit IS NOT NULL)",
            name=op.f("ck_outcome_seizures_quantity_unit"),
        ),
        sa.ForeignKeyConstraint(
            ["outcome_id"],
            ["outcomes.outcome_id"],
            name=op.f("fk_outcome_seizures_outcome_id_outcomes"),
        ),
        sa.PrimaryKeyConstraint("outcome_id", "line_no", name=op.f("pk_outcome_seizures")),
    )
    op.execute(
        "INSERT INTO outcome_seizures (outcome_id, line_no, category, quantity, unit) "
        "SELECT outcome_id, 1, category, "
        "CASE WHEN unit IS NULL THEN NULL ELSE quantity END, "
        "CASE WHEN quantity IS NULL THEN NULL ELSE unit END "
        "FROM outcomes WHERE category IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("outcome_seizures")
