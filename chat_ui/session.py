"""Identity: one signed cookie holding the browser key, the CSRF secret and the name.

The browser key (128 random bits) outlives a login: logout only drops the name, so the
same name in the same browser finds its chats again, while the same name in another
browser (another key) sees nothing. A cookie that fails its signature or is too old is
treated as absent: the visitor is simply logged out, never shown an error.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from chat_ui.config import Settings

COOKIE_NAME = "parlor"


@dataclass(frozen=True)
class Session:
    browser_key: str
    csrf_secret: str
    name: str | None = None
    login_at: int = 0

    @property
    def owner(self) -> str | None:
        """The owner key db_api scopes by: sha256(browser_key NUL name), or None."""
        if self.name is None:
            return None
        return hashlib.sha256(f"{self.browser_key}\0{self.name}".encode()).hexdigest()

    @property
    def csrf_token(self) -> str:
        return self.csrf_secret

    def csrf_ok(self, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_secret.encode())


def new_session() -> Session:
    return Session(browser_key=secrets.token_hex(16), csrf_secret=secrets.token_urlsafe(32))


def logged_in(session: Session, name: str) -> Session:
    # A fresh CSRF secret at login: a token seen before login is worthless afterwards.
    return replace(
        session, name=name, login_at=int(time.time()), csrf_secret=secrets.token_urlsafe(32)
    )


def logged_out(session: Session) -> Session:
    return replace(session, name=None, login_at=0, csrf_secret=secrets.token_urlsafe(32))


def normalize_name(raw: str, max_chars: int) -> str | None:
    """Trim and collapse whitespace; None if empty, too long or holding control chars."""
    name = " ".join(raw.split())
    if not name or len(name) > max_chars:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    return name


class SessionCodec:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._serializer = URLSafeTimedSerializer(settings.secret_key, salt="parlor-session")

    def load(self, request: Request) -> tuple[Session, bool]:
        """The request's session and whether it must be (re)written to the cookie."""
        raw = request.cookies.get(COOKIE_NAME)
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=self._settings.browser_key_max_age_s)
                session = Session(
                    browser_key=str(data["k"]),
                    csrf_secret=str(data["c"]),
                    name=data.get("n"),
                    login_at=int(data.get("t", 0)),
                )
            except (BadSignature, KeyError, TypeError, ValueError):
                return new_session(), True
            if session.name is not None and (
                time.time() - session.login_at > self._settings.session_max_age_s
            ):
                return logged_out(session), True
            return session, False
        return new_session(), True

    def save(self, response: Response, session: Session, request: Request) -> None:
        data: dict[str, object] = {"k": session.browser_key, "c": session.csrf_secret}
        if session.name is not None:
            data["n"] = session.name
            data["t"] = session.login_at
        response.set_cookie(
            COOKIE_NAME,
            self._serializer.dumps(data),
            max_age=self._settings.browser_key_max_age_s,
            httponly=True,
            samesite="lax",
            secure=is_https(request),
            path="/",
        )


def is_https(request: Request) -> bool:
    # nginx terminates TLS and says so in X-Forwarded-Proto.
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip().lower() == "https"
