"""Selections by watchlist; promotions say whether forced and through what.

- referrals and outcomes: the CHECK on selection_method gains 'watchlist' (the
  contract's SELECTION_METHODS);
- model_promotions: `forced` and `via` (api, web, cli); `promoted_by` no longer
  refers to users (a promotion from the command line names a person who need not
  have an account in this database).

SQLite cannot alter constraints: the tables are rebuilt (batch mode) with the
foreign-key checks suspended during the rebuild (other tables refer to the rebuilt
ones) and every reference checked afterwards (`PRAGMA foreign_key_check`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_METHODS = ("rule", "model", "random", "intelligence")
NEW_METHODS = ("rule", "model", "random", "watchlist", "intelligence")
CHANNELS = ("api", "web", "cli")
SELECTION_TABLES = ("referrals", "outcomes")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


def _foreign_keys_off() -> None:
    """Let SQLite rebuild tables that others refer to. Outside a transaction (pysqlite
    runs DDL in autocommit) `foreign_keys = OFF` applies; inside one (a data insert of
    an earlier migration opened it) `defer_foreign_keys` does: checks wait for commit."""
    if _sqlite():
        op.execute("PRAGMA foreign_keys = OFF")
        op.execute("PRAGMA defer_foreign_keys = ON")


def _foreign_keys_on() -> None:
    if not _sqlite():
        return
    broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    op.execute("PRAGMA foreign_keys = ON")
    if broken:
        raise RuntimeError(f"foreign keys broken by the table rebuild: {broken[:5]}")


def _selection_methods(values: Sequence[str]) -> None:
    for table in SELECTION_TABLES:
        name = op.f(f"ck_{table}_selection_method")
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(name, type_="check")
            batch.create_check_constraint(name, _in("selection_method", values))


def upgrade() -> None:
    _foreign_keys_off()
    try:
        _upgrade()
    finally:
        _foreign_keys_on()


def _upgrade() -> None:
    _selection_methods(NEW_METHODS)
    with op.batch_alter_table("model_promotions") as batch:
        batch.drop_constraint(op.f("fk_model_promotions_promoted_by_users"), type_="foreignkey")
        batch.add_column(
            sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("via", sa.String(length=16), nullable=False, server_default="api")
        )
        batch.create_check_constraint(op.f("ck_model_promotions_via"), _in("via", CHANNELS))


def downgrade() -> None:
    _foreign_keys_off()
    try:
        _downgrade()
    finally:
        _foreign_keys_on()


def _downgrade() -> None:
    with op.batch_alter_table("model_promotions") as batch:
        batch.drop_constraint(op.f("ck_model_promotions_via"), type_="check")
        batch.drop_column("via")
        batch.drop_column("forced")
        batch.create_foreign_key(
            op.f("fk_model_promotions_promoted_by_users"),
            "users",
            ["promoted_by"],
            ["username"],
        )
    _selection_methods(OLD_METHODS)
