"""Identity: one signed cookie holding the browser key, the CSRF secret, the name and the
id of the login's server-side record.

The browser key (128 random bits) outlives a login: logout only drops the name, so the
same name in the same browser finds its chats again, while the same name in another
browser (another key) sees nothing. A cookie that fails its signature or is too old is
treated as absent: the visitor is simply logged out, never shown an error.

Each login is also a record in db_api (`/sessions`), checked on every request (with a
short in-process cache, `SessionStore`): logout deletes it, so every copy of the cookie
stops working at once, and each login makes a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from chat_ui.clients import DbApi, DbUnavailable
from chat_ui.config import Settings

log = logging.getLogger("chat_ui.session")

COOKIE_NAME = "parlor"
# Bounds of SessionStore's memory.
MAX_CACHED = 100_000
MAX_ENDED = 100_000


@dataclass(frozen=True)
class Session:
    browser_key: str
    csrf_secret: str
    name: str | None = None
    login_at: int = 0
    # The login's server-side record (db_api /sessions), None when logged out.
    sid: str | None = None

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


def logged_in(session: Session, name: str, sid: str) -> Session:
    # A fresh CSRF secret at login: a token seen before login is worthless afterwards.
    return replace(
        session,
        name=name,
        login_at=int(time.time()),
        csrf_secret=secrets.token_urlsafe(32),
        sid=sid,
    )


def logged_out(session: Session) -> Session:
    return replace(session, name=None, login_at=0, csrf_secret=secrets.token_urlsafe(32), sid=None)


def revoked(session: Session) -> Session:
    """The session once its login is found to have ended elsewhere (same CSRF secret, so
    the form being sent still passes its check and leads to the login page)."""
    return replace(session, name=None, login_at=0, sid=None)


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
                    sid=data.get("s"),
                )
            except (BadSignature, KeyError, TypeError, ValueError):
                return new_session(), True
            if session.name is not None and (
                time.time() - session.login_at > self._settings.session_max_age_s
                or not isinstance(session.sid, str)
            ):
                return logged_out(session), True
            return session, False
        return new_session(), True

    def save(self, response: Response, session: Session, request: Request) -> None:
        data: dict[str, object] = {"k": session.browser_key, "c": session.csrf_secret}
        if session.name is not None:
            data["n"] = session.name
            data["t"] = session.login_at
            data["s"] = session.sid
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


class SessionStore:
    """Logins' server-side records (db_api /sessions), checked with a short cache."""

    def __init__(self, db: DbApi, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        # sid -> (owner, when db_api last said it is alive)
        self._alive: dict[str, tuple[str, float]] = {}
        # Ended here: refused at once, whatever the cache says.
        self._ended: set[str] = set()

    async def open(self, owner: str) -> str:
        return await self._db.create_session(owner)

    async def close(self, owner: str, sid: str | None) -> None:
        if sid is None:
            return
        self._alive.pop(sid, None)
        self._ended.add(sid)
        if len(self._ended) > MAX_ENDED:
            self._ended.pop()
        try:
            await self._db.delete_session(owner, sid)
        except DbUnavailable:
            # This process refuses it already; log the others out when storage is back.
            log.warning("could not delete session %s: storage unreachable", sid[:8])

    async def alive(self, owner: str, sid: str) -> bool:
        """Whether this login still holds; raises DbUnavailable when storage cannot say
        and it was not checked within the grace period."""
        if sid in self._ended:
            return False
        now = time.monotonic()
        known = self._alive.get(sid)
        if known is not None and known[0] == owner:
            if now - known[1] < self._settings.session_check_s:
                return True
        try:
            alive = await self._db.session_alive(owner, sid)
        except DbUnavailable:
            if known is not None and known[0] == owner:
                if now - known[1] < self._settings.session_grace_s:
                    return True
            raise
        if alive:
            if len(self._alive) > MAX_CACHED:
                self._alive.clear()
            self._alive[sid] = (owner, now)
        else:
            self._alive.pop(sid, None)
        return alive
