"""Sign-in through an identity provider: the person named by a header an authenticating
proxy sets, believed only from the addresses configured as that proxy.

    browser ──► oauth2-proxy ──► nginx ──► chat_ui
                signs the person in with the company's OIDC provider, sets
                X-Forwarded-Email (and drops any copy the browser sent)

With CHAT_UI_TRUSTED_USER_HEADER=X-Forwarded-Email, a request carrying that header is
signed in as that person, whatever its cookie says, but only when the request's client
address is in CHAT_UI_TRUSTED_PROXIES. That address is the one uvicorn reports: the TCP
peer (the nginx in front), or, for a peer listed in uvicorn's FORWARDED_ALLOW_IPS, the
address that peer says it forwarded for. `FORWARDED_ALLOW_IPS=*` would let any client
choose it with its own X-Forwarded-For, so production refuses that combination.
Anywhere else the header is ignored (and logged): a browser cannot sign itself in by
sending it.

Such a person's chats follow them from browser to browser: their owner key is derived
from the identity alone, not from the browser key that name logins use, so it can never
equal a name login's owner (someone typing the same e-mail address as a name gets a
different, empty history). The cookie keeps its own browser key and CSRF secret; the
identity is never written into it, so it ends with the proxy's session.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from chat_ui.session import Session

if TYPE_CHECKING:
    from chat_ui.config import Settings

log = logging.getLogger("chat_ui.trusted_identity")

# An e-mail address is at most 254 characters; user names and subjects are shorter.
MAX_IDENTITY_CHARS = 320
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


@dataclass(frozen=True)
class TrustedSession(Session):
    """A session signed in by the trusted header: `name` shows the identity, and the
    owner comes from the identity alone."""

    identity: str = ""

    @property
    def owner(self) -> str | None:
        return owner_key(self.identity)


def owner_key(identity: str) -> str:
    """The owner db_api scopes by for this identity (the same in every browser).

    A name login's owner is sha256(browser key NUL name) with a 32-hex-digit browser key;
    the prefix here keeps the two kinds apart."""
    return hashlib.sha256(f"parlor-trusted-identity\0{identity.casefold()}".encode()).hexdigest()


def normalize_identity(raw: str) -> str | None:
    """The identity as sent, trimmed; None if empty, too long or holding control chars."""
    identity = raw.strip()
    if not identity or len(identity) > MAX_IDENTITY_CHARS:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in identity):
        return None
    return identity


def peer_is_trusted(
    host: str | None, proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a unix socket path, a test client's name: not an address we trust
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


def trusted_identity(request: Request, settings: Settings) -> str | None:
    """The identity in the trusted header, if the feature is on, the header present, its
    value usable and the request's client a trusted proxy; else None."""
    header = settings.trusted_user_header
    if not header or configuration_problem(settings):
        return None
    raw = request.headers.get(header)
    if raw is None:
        return None
    host = request.client.host if request.client else None
    if not peer_is_trusted(host, settings.trusted_proxies):
        log.warning("ignored %s from %s: not in CHAT_UI_TRUSTED_PROXIES", header, host)
        return None
    identity = normalize_identity(raw)
    if identity is None:
        log.warning("ignored an unusable %s value from %s", header, host)
    return identity


def apply(request: Request, session: Session) -> Session:
    """The session the routes see: signed in as the trusted identity when there is one,
    else the cookie's session unchanged."""
    settings: Settings = request.app.state.settings
    identity = trusted_identity(request, settings)
    if identity is None:
        return session
    return TrustedSession(
        browser_key=session.browser_key,
        csrf_secret=session.csrf_secret,
        name=identity,
        login_at=session.login_at or int(time.time()),
        identity=identity,
    )


def configuration_problem(settings: Settings) -> str | None:
    """Why these settings would let the header be spoofed, or None when they are sound.
    Production refuses to start with a problem; development only never believes it."""
    header = settings.trusted_user_header
    if not header:
        return None
    if not HEADER_NAME.fullmatch(header):
        return f"CHAT_UI_TRUSTED_USER_HEADER={header!r} is not a header name"
    if not settings.trusted_proxies:
        return (
            f"CHAT_UI_TRUSTED_USER_HEADER={header} needs CHAT_UI_TRUSTED_PROXIES: the "
            "addresses of the proxy that sets it (anyone else could send it)"
        )
    if any(network.prefixlen == 0 for network in settings.trusted_proxies):
        return "CHAT_UI_TRUSTED_PROXIES must not include every address (/0)"
    if "*" in (part.strip() for part in settings.forwarded_allow_ips.split(",")):
        return (
            "FORWARDED_ALLOW_IPS=* makes uvicorn take the client address from any "
            "client's X-Forwarded-For, so anyone could pose as a trusted proxy: with "
            "CHAT_UI_TRUSTED_USER_HEADER set, list only your proxies' addresses there "
            "(or 127.0.0.1 to take none)"
        )
    return None
