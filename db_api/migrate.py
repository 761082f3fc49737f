"""`python -m db_api.migrate`: bring DB_API_DATABASE_URL's schema to the newest revision.

The compose one-shot migrate service runs this before db_api starts.
"""

from __future__ import annotations

import sys

from db_api.config import Settings
from db_api.db import normalize_url, upgrade_database


def main() -> int:
    settings = Settings()
    upgrade_database(settings.database_url)
    safe_url = normalize_url(settings.database_url).render_as_string(hide_password=True)
    print(f"database at {safe_url} is at the newest revision", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
