"""Login throttling per (user name, client address): login_throttle.last_success_at.

Failed logins are counted per user name and client address (`pair:<name>|<addr>`
rows of login_throttle) instead of per user, so that failures from other addresses
cannot lock a user out. The time of the last successful login of a pair marks an
address the user has signed in from: the per-address lock (many names tried from one
address, e.g. a NAT) does not hold back a user from such an address.

A nullable column added in place on both backends: no table is rebuilt.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "login_throttle", sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.execute("ALTER TABLE login_throttle DROP COLUMN last_success_at")
