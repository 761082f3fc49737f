"""Where things are: the repository root, found here and nowhere else.

`parlor` runs from a clone (`uv run` installs the project in editable mode), so the root is
the directory above this package. Everything that needs a file of the repository (the
service processes' working directory, the nginx template, chat_ui's static files, the
benchmarks' git commit) builds its path from `REPO`.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Read-only data kept beside a clone, not in it (CI and the reference machines have it):
# real tokenizers, the Compose Specification schema. Whatever uses it must work without it.
SHARED = REPO.parent / "shared"

NGINX_TEMPLATE = REPO / "nginx" / "templates" / "default.conf.template"
STATIC_ROOT = REPO / "chat_ui" / "static"
