"""Parlor's one way to bring a database's schema to the newest revision.

`migrate(url)` is what everything calls: `python -m db_api.migrate` (compose's one-shot
migrate service runs it before db_api starts), `parlor migrate`, `parlor up` and the tests.

    python -m db_api.migrate [--database-url URL]   # default: $DB_API_DATABASE_URL
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from db_api.db import ensure_sqlite_directory, normalize_url, upgrade_database


def migrate(url: str) -> None:
    """Apply every migration up to head to `url`, creating a SQLite file's directory."""
    ensure_sqlite_directory(url)
    upgrade_database(url)


def main(argv: list[str] | None = None, prog: str = "python -m db_api.migrate") -> int:
    from db_api.config import Settings

    parser = argparse.ArgumentParser(prog=prog, description="Apply Parlor's database migrations.")
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (default: $DB_API_DATABASE_URL, else sqlite:///./data/parlor.db)",
    )
    args = parser.parse_args(argv)
    url = args.database_url or Settings().database_url
    safe_url = normalize_url(url).render_as_string(hide_password=True)
    try:
        migrate(url)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"cannot migrate {safe_url}: {reason}", file=sys.stderr)
        return 1
    print(f"database at {safe_url} is at the newest revision", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
