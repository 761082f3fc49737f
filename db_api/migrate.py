"""`python -m db_api.migrate`: bring DB_API_DATABASE_URL's schema to the newest revision.

The compose one-shot migrate service runs this before db_api starts.
"""

from __future__ import annotations

import sys

import sqlalchemy as sa

from db_api.config import Settings
from db_api.db import normalize_url, upgrade_database


def main() -> int:
    settings = Settings()
    safe_url = normalize_url(settings.database_url).render_as_string(hide_password=True)
    try:
        upgrade_database(settings.database_url)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        print(f"cannot migrate {safe_url}: {reason}", file=sys.stderr)
        return 1
    print(f"database at {safe_url} is at the newest revision", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
