"""Skip stack tests cleanly where nginx is not installed."""

from __future__ import annotations

import pytest

from parlor.nginx import nginx_binary


def require_nginx() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    return binary
