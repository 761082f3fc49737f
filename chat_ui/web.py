"""What every route shares: templates, the session of a request, CSRF checks, error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from chat_ui import trusted_identity
from chat_ui.answer_stats import answer_stats
from chat_ui.chat_list import shown_in_sidebar
from chat_ui.chat_settings import ChatSettings, SettingsView, chosen_params, roles_if_reachable
from chat_ui.contracts import Chat, Message, Page
from chat_ui.conversation import Conversation, SendRefused, chat_title
from chat_ui.markdown_stream import answer_so_far
from chat_ui.middleware import RESCUE_FACTOR
from chat_ui.render import age, group_by_date, markdown_html, theme_of, zone_of
from chat_ui.render_cache import bubble_html, message_html
from chat_ui.session import Session, SessionCodec
from chat_ui.window import earlier_href, later_href
from db_contract import RUNNING

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _render_bubble(message: Message, csrf: str) -> str:
    """One message rendered by the `bubble` macro of _message.html."""
    macro = TEMPLATES.env.get_template("_message.html").module.bubble  # type: ignore[attr-defined]
    return str(macro(message, csrf))


def kept_bubble(message: Message, csrf: str) -> str:
    """One message's bubble, through the render cache (what pages show for each message)."""
    return bubble_html(message, csrf, _render_bubble)


TEMPLATES.env.globals.update(
    kept_bubble=kept_bubble,
    markdown_html=markdown_html,
    message_html=message_html,
    answer_so_far=answer_so_far,
    age=age,
    RUNNING=RUNNING,
    title_of=chat_title,
    theme_of=theme_of,
    zone_of=zone_of,
    group_by_date=group_by_date,
    chosen_params=chosen_params,
    answer_stats=answer_stats,
    shown_in_sidebar=shown_in_sidebar,
    earlier_href=earlier_href,
    later_href=later_href,
)


class CsrfError(Exception):
    """An unsafe request without a valid token, or from a foreign origin."""


class LoginRequired(Exception):
    """The visitor has no (valid) login."""


def session_of(request: Request) -> Session:
    """The request's session (loaded once); a new one when the cookie is absent or bad."""
    if not hasattr(request.state, "session"):
        codec: SessionCodec = request.app.state.session_codec
        request.state.session, request.state.session_dirty = codec.load(request)
    # Signed in by an authenticating proxy's header, when trusted (never saved in the cookie).
    return trusted_identity.apply(request, request.state.session)


def set_session(request: Request, session: Session) -> None:
    request.state.session = session
    request.state.session_dirty = True


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def finish(request: Request, response: Response) -> Response:
    """Write the session cookie if this request changed (or created) the session."""
    session_of(request)
    if getattr(request.state, "session_dirty", False):
        request.app.state.session_codec.save(response, request.state.session, request)
    return response


def _context(request: Request, context: dict[str, Any] | None) -> dict[str, Any]:
    session = session_of(request)
    return {
        "request": request,
        "session": session,
        "csrf": session.csrf_token,
        "settings": request.app.state.settings,
        **(context or {}),
    }


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    ctx = _context(request, context)
    resp = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status, headers=headers)
    return finish(request, resp)


def render(request: Request, template: str, context: dict[str, Any] | None = None) -> str:
    """A template rendered to text, with what `page` gives every template."""
    return TEMPLATES.get_template(template).render(_context(request, context))


async def chat_page(
    request: Request,
    conv: Conversation,
    chat: Chat | None,
    *,
    composer_text: str = "",
    composer_error: str | None = None,
    command_note: Any = None,
    status: int = 200,
    panel: SettingsView | None = None,
    read: Page | None = None,
) -> Response:
    """The chats page: the sidebar and a chat (or, without one, a new chat's composer);
    `panel`: the chat's settings as typed (after a refusal), else as stored; `read`: the
    sidebar's chats and the roles when they were read with the chat (else read here)."""
    state = request.app.state
    roles = read.presets if read is not None else None
    if chat is not None and panel is None:
        settings = ChatSettings(conv.owner, state.db, state.lm, state.settings)
        panel = await settings.view(chat, roles=roles)
    if chat is None and roles is None:
        roles = await roles_if_reachable(state.db, conv.owner)
    ctx = {
        "chats": read.chats if read is not None else await conv.chats(),
        "chat": chat,
        # Without JavaScript the page reloads itself only while an answer waits for its
        # save (storage away, rare); running answers stream into the page instead.
        "refresh": chat is not None and chat.unsaved,
        "composer_text": composer_text,
        "composer_error": composer_error,
        "panel": panel,
        # A new chat can start from a role, or with a model picked beside its first message.
        "roles": None if chat is not None else roles,
        # A slash command's answer (chat_ui.commands.Note), shown above the message box.
        "command_note": command_note,
        "new_chat_models": None if chat is not None else await state.lm.list_models(),
    }
    return page(request, "chats.html", ctx, status=status)


def confirm_delete_page(
    request: Request, *, heading: str, consequence: str, action: str, cancel: str, kind: str = ""
) -> Response:
    """The page that asks before a delete: `action` deletes (POST), `cancel` goes back."""
    ctx = {
        "heading": heading,
        "consequence": consequence,
        "action": action,
        "cancel": cancel,
        "kind": kind,
    }
    return page(request, "confirm_delete.html", ctx)


def composer_failure(request: Request, chat_id: UUID | None, refused: SendRefused) -> Response:
    """Give the typed text back with the reason, so nothing typed is ever lost."""
    ctx = {
        "chat_id": str(chat_id) if chat_id else None,
        "composer_text": refused.text,
        "composer_error": refused.reason,
    }
    if is_htmx(request):
        return page(
            request,
            "_composer.html",
            ctx,
            status=refused.status,
            headers={"HX-Retarget": "#composer", "HX-Reswap": "outerHTML"},
        )
    return page(request, "unavailable.html", ctx, status=refused.status)


def redirect(request: Request, url: str) -> Response:
    """303 for plain forms; htmx gets HX-Redirect so it navigates instead of swapping."""
    if is_htmx(request):
        return finish(request, Response(status_code=204, headers={"HX-Redirect": url}))
    return finish(request, RedirectResponse(url, status_code=303))


def bubble_reply(request: Request, message: Message, plain_url: str) -> Response:
    """What a request on one message (show, stop, retry, continue) answers: with htmx,
    the message's bubble as it now stands (swapped in place); without, a redirect to
    `plain_url`."""
    if not is_htmx(request):
        return redirect(request, plain_url)
    return finish(request, HTMLResponse(bubble(request, message)))


def _request_origin(request: Request) -> str:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return f"{proto.lower()}://{host.split(',')[0].strip().lower()}"


def check_origin(request: Request) -> None:
    """Refuse a write whose Origin (or, lacking it, Referer) names another site."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return  # no evidence either way: the CSRF token decides
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin.lower() != _request_origin(request):
        raise CsrfError


async def checked_form(request: Request) -> FormData:
    """The request's form, after the Origin and CSRF token checks (a FastAPI dependency)."""
    check_origin(request)
    # Starlette's own cap on one field (1 MiB) would refuse a long message the byte
    # limit let through: BodyLimit has bounded the body already.
    limit = int(request.app.state.settings.body_limit * RESCUE_FACTOR)
    form = await request.form(max_part_size=limit)
    token = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not isinstance(token, str) or not session_of(request).csrf_ok(token):
        raise CsrfError
    return form


def form_text(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def bubble(request: Request, message: Message) -> str:
    """One message's bubble for this request's person (also the SSE `done` payload)."""
    return kept_bubble(message, session_of(request).csrf_token)
