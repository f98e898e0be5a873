"""Server-side sign-out: users.sessions_valid_after.

A user's bearer tokens (API and web session) issued before this time are refused:
it is set when the user signs out, is disabled, or has the password reset, so that a
copied token or session cookie stops working (and cannot be renewed).

A nullable column added in place on both backends (SQLite 3.35+ drops it in place
too): no table is rebuilt.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("sessions_valid_after", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN sessions_valid_after")
