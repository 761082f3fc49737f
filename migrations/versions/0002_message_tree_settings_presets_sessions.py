"""message tree, revisions and leases, chat settings, presets, sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

- messages: parent_id (a chat is a tree; siblings are versions), revision, finish_reason,
  reason, model, params, plan, lease_owner, lease_until, stop_requested;
- chats: current_leaf_id (the branch shown), params, title_source;
- presets (roles) and sessions (server-side login records).

Every existing chat becomes one branch: each message's parent is the message written
before it in its chat (created_at, then id), and the chat's current leaf is its newest
message. Nothing is deleted.

SQLite cannot add foreign keys or CHECKs to a table: batch mode rebuilds `messages` and
`chats` (migrations run with SQLite's foreign keys off, so the rebuilds cascade nothing).
chats.current_leaf_id -> messages and messages.chat_id -> chats form a cycle; it is only
ever closed by ALTER after both tables exist, and opened first on the way down.

Written by hand, with values spelled out, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_foreign_keys_off() -> None:
    """A batch rebuild drops and recreates a table: with SQLite's foreign keys on, dropping
    `chats` would cascade-delete every message. migrations/env.py turns them off; a
    connection lent with them on is refused before anything is touched."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "0002 rebuilds tables: run it on a SQLite connection with PRAGMA foreign_keys=OFF"
        )


def upgrade() -> None:
    _sqlite_foreign_keys_off()
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("finish_reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("model", sa.Text(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("plan", sa.Text(), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("stop_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.create_foreign_key(
            "fk_messages_parent_id_messages",
            "messages",
            ["parent_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_messages_parent_id_created_at", ["parent_id", "created_at"])

    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("current_leaf_id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column("params", sa.JSON(), server_default=sa.text("'{}'"), nullable=False)
        )
        batch.add_column(
            sa.Column("title_source", sa.String(length=8), server_default="auto", nullable=False)
        )
        batch.create_foreign_key(
            "fk_chats_current_leaf_id_messages",
            "messages",
            ["current_leaf_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_check_constraint(
            op.f("ck_chats_title_source"), "title_source IN ('auto', 'user', 'model')"
        )
        batch.create_index("ix_chats_current_leaf_id", ["current_leaf_id"])

    # One branch per chat. Correlated subqueries (not UPDATE ... FROM or window functions)
    # run on every SQLite and PostgreSQL version; each is one walk of the
    # (chat_id, created_at) index.
    op.execute(
        """
        UPDATE messages SET parent_id = (
            SELECT earlier.id FROM messages AS earlier
            WHERE earlier.chat_id = messages.chat_id
              AND (earlier.created_at < messages.created_at
                   OR (earlier.created_at = messages.created_at AND earlier.id < messages.id))
            ORDER BY earlier.created_at DESC, earlier.id DESC
            LIMIT 1
        )
        """
    )
    op.execute(
        """
        UPDATE chats SET current_leaf_id = (
            SELECT latest.id FROM messages AS latest
            WHERE latest.chat_id = chats.id
            ORDER BY latest.created_at DESC, latest.id DESC
            LIMIT 1
        )
        """
    )

    op.create_table(
        "presets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_presets"),
        sa.UniqueConstraint("owner", "name", name="uq_presets_owner_name"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
    )


def downgrade() -> None:
    # Every message is kept; the versions of a turn become consecutive messages again.
    _sqlite_foreign_keys_off()
    op.drop_table("sessions")
    op.drop_table("presets")
    with op.batch_alter_table("chats") as batch:
        batch.drop_index("ix_chats_current_leaf_id")
        batch.drop_constraint(op.f("ck_chats_title_source"), type_="check")
        batch.drop_constraint("fk_chats_current_leaf_id_messages", type_="foreignkey")
        batch.drop_column("title_source")
        batch.drop_column("params")
        batch.drop_column("current_leaf_id")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_parent_id_created_at")
        batch.drop_constraint("fk_messages_parent_id_messages", type_="foreignkey")
        for column in (
            "stop_requested",
            "lease_until",
            "lease_owner",
            "plan",
            "params",
            "model",
            "reason",
            "finish_reason",
            "revision",
            "parent_id",
        ):
            batch.drop_column(column)
