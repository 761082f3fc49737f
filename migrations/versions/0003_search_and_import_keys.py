"""full-text search indexes; chats.import_key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Search (see db_api/search.py for why it is built this way):
- PostgreSQL: generated columns `search_vector` (messages: of content; chats: of title)
  holding `to_tsvector('simple', translate(text, <ASCII punctuation>, <spaces>))`, each
  with a GIN index. Generated columns follow every insert and update by themselves.
  They are not in db_api's models (PostgreSQL only): the models never read or write
  them.
- SQLite: an FTS5 table `search_fts` (unicode61, no diacritic folding, letters, digits,
  marks and private use as word characters) and `search_docs`, which maps each FTS row
  to its chat (the title: message_id NULL) or message. Triggers on chats and messages
  keep them in step. Rows are keyed by the chat's and message's ids, never by SQLite's
  rowid (a VACUUM or a batch migration renumbers rowids).
  NOTE: a later batch migration that rebuilds `chats` or `messages` on SQLite drops
  their triggers with the old table: such a migration must create them again
  (tests/db_api/test_search.py checks they exist at head).

Import: chats.import_key (where an imported chat came from, e.g. `chatgpt:<id>`),
unique per owner, so importing the same file twice creates nothing new.

The expressions are spelled out here rather than imported from db_api: a migration
must keep meaning what it meant when it was written.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PUNCTUATION = "!\"#$%&''()*+,-./:;<=>?@[\\]^_`{|}~"  # ASCII punctuation, ' doubled for SQL
SPACES = " " * 32


def _document(column: str) -> str:
    return f"to_tsvector('simple'::regconfig, translate({column}, '{PUNCTUATION}', '{SPACES}'))"


TOKENIZER = "unicode61 remove_diacritics 0 categories 'L* N* Co M*'"

SQLITE_TRIGGERS = {
    "messages_search_insert": """
        CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
          INSERT INTO search_docs (chat_id, message_id) VALUES (new.chat_id, new.id);
          INSERT INTO search_fts (rowid, body)
            VALUES ((SELECT id FROM search_docs WHERE message_id = new.id), new.content);
        END""",
    "messages_search_update": """
        CREATE TRIGGER messages_search_update AFTER UPDATE OF content ON messages
        WHEN new.content IS NOT old.content BEGIN
          UPDATE search_fts SET body = new.content
            WHERE rowid = (SELECT id FROM search_docs WHERE message_id = old.id);
        END""",
    "messages_search_delete": """
        CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
          DELETE FROM search_fts
            WHERE rowid = (SELECT id FROM search_docs WHERE message_id = old.id);
          DELETE FROM search_docs WHERE message_id = old.id;
        END""",
    "chats_search_insert": """
        CREATE TRIGGER chats_search_insert AFTER INSERT ON chats BEGIN
          INSERT INTO search_docs (chat_id, message_id) VALUES (new.id, NULL);
          INSERT INTO search_fts (rowid, body) VALUES (
            (SELECT id FROM search_docs WHERE chat_id = new.id AND message_id IS NULL),
            coalesce(new.title, ''));
        END""",
    "chats_search_update": """
        CREATE TRIGGER chats_search_update AFTER UPDATE OF title ON chats
        WHEN new.title IS NOT old.title BEGIN
          UPDATE search_fts SET body = coalesce(new.title, '')
            WHERE rowid = (SELECT id FROM search_docs
                           WHERE chat_id = old.id AND message_id IS NULL);
        END""",
    "chats_search_delete": """
        CREATE TRIGGER chats_search_delete AFTER DELETE ON chats BEGIN
          DELETE FROM search_fts WHERE rowid = (
            SELECT id FROM search_docs WHERE chat_id = old.id AND message_id IS NULL);
          DELETE FROM search_docs WHERE chat_id = old.id AND message_id IS NULL;
        END""",
}


def upgrade() -> None:
    # A new column and a unique index: no table rebuild, on SQLite either.
    op.add_column("chats", sa.Column("import_key", sa.String(length=300), nullable=True))
    op.create_index("ux_chats_owner_import_key", "chats", ["owner", "import_key"], unique=True)

    if op.get_bind().dialect.name == "postgresql":
        for table, source in (("messages", "content"), ("chats", "coalesce(title, '')")):
            op.execute(
                f"ALTER TABLE {table} ADD COLUMN search_vector tsvector "
                f"GENERATED ALWAYS AS ({_document(source)}) STORED"
            )
            op.execute(f"CREATE INDEX ix_{table}_search ON {table} USING gin (search_vector)")
        return

    op.create_table(
        "search_docs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("chat_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
    )
    op.create_index("ux_search_docs_message_id", "search_docs", ["message_id"], unique=True)
    op.create_index(
        "ux_search_docs_title",
        "search_docs",
        ["chat_id"],
        unique=True,
        sqlite_where=sa.text("message_id IS NULL"),
    )
    op.execute(f'CREATE VIRTUAL TABLE search_fts USING fts5(body, tokenize="{TOKENIZER}")')
    # What exists already goes into the index, then the triggers keep it in step.
    op.execute("INSERT INTO search_docs (chat_id, message_id) SELECT id, NULL FROM chats")
    op.execute("INSERT INTO search_docs (chat_id, message_id) SELECT chat_id, id FROM messages")
    op.execute(
        "INSERT INTO search_fts (rowid, body) SELECT d.id, coalesce(c.title, '') "
        "FROM search_docs d JOIN chats c ON c.id = d.chat_id WHERE d.message_id IS NULL"
    )
    op.execute(
        "INSERT INTO search_fts (rowid, body) SELECT d.id, m.content "
        "FROM search_docs d JOIN messages m ON m.id = d.message_id"
    )
    for statement in SQLITE_TRIGGERS.values():
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("chats", "messages"):
            op.execute(f"DROP INDEX ix_{table}_search")
            op.execute(f"ALTER TABLE {table} DROP COLUMN search_vector")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
        op.execute("DROP TABLE search_fts")
        op.drop_index("ux_search_docs_title", table_name="search_docs")
        op.drop_index("ux_search_docs_message_id", table_name="search_docs")
        op.drop_table("search_docs")
    op.drop_index("ux_chats_owner_import_key", table_name="chats")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("import_key")
