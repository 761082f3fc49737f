"""A chat's model and sampling settings: what the settings panel shows, and changing them.

The model picker lists what the model server's `GET /v1/models` lists (any
OpenAI-compatible server); an empty choice is the server's default model. A model is
checked against that list before it is saved, so a chat never names a model the server
does not have; the chat's current model is kept as it is even when the server cannot be
asked. Every refusal (`SettingsRefused`) carries what was typed, so the page gives it back.

The operations other parts call (the slash commands among them) are the methods of
`ChatSettings`: `set_model`, `save`, `reset`, `models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from chat_ui.clients import DbApi, DbRejected, DbUnavailable, LmApi, NotFound
from chat_ui.config import Settings
from chat_ui.contracts import Chat, ChatParams, ChatPatch, ChatSummary, Preset
from chat_ui.conversation import SendRefused
from chat_ui.sampling import SamplingForm

MODEL_SERVER_AWAY = (
    "The model server cannot be reached right now, so the model could not be checked. "
    "Nothing was changed: try again in a moment."
)


class SettingsRefused(Exception):
    """The settings were not saved: `errors` per field (or "model"), and what was typed."""

    def __init__(self, status: int, errors: dict[str, str], view: SettingsView) -> None:
        super().__init__("; ".join(errors.values()))
        self.status = status
        self.errors = errors
        self.view = view

    @property
    def message(self) -> str:
        return " ".join(self.errors.values())


@dataclass
class SettingsView:
    """What the chat's settings panel shows."""

    # The ids the model server lists; None when it cannot be reached right now.
    models: list[str] | None
    # The chosen model as typed or stored ("" = the server's default).
    model: str
    form: SamplingForm
    # The person's roles, to apply one; None when storage could not list them.
    roles: list[Preset] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    saved: bool = False

    @property
    def model_listed(self) -> bool:
        return not self.model or (self.models is not None and self.model in self.models)


async def roles_if_reachable(db: DbApi, owner: str) -> list[Preset] | None:
    """The owner's roles to offer on a page, or None when storage cannot list them now
    (the page is shown without them)."""
    try:
        return await db.list_presets(owner)
    except (DbUnavailable, DbRejected, NotFound):
        return None


class ChatSettings:
    """The settings of one owner's chats."""

    def __init__(self, owner: str, db: DbApi, lm: LmApi, settings: Settings) -> None:
        self.owner = owner
        self._db = db
        self._lm = lm
        self._settings = settings

    async def models(self) -> list[str] | None:
        """What the model server lists, or None when it cannot be asked right now."""
        return await self._lm.list_models()

    async def view(
        self, chat: ChatSummary, *, saved: bool = False, roles: list[Preset] | None = None
    ) -> SettingsView:
        """The panel for `chat` as stored; `roles` when they were read already."""
        return SettingsView(
            models=await self.models(),
            model=chat.model or "",
            form=SamplingForm.of(chat.params),
            roles=roles if roles is not None else await roles_if_reachable(self._db, self.owner),
            saved=saved,
        )

    async def checked_model(self, name: str, current: str | None = None) -> str | None:
        """`name` when the model server lists it (None for "" : the server's default),
        else ModelRefused. The chat's `current` model passes unchecked."""
        name = name.strip()
        if not name:
            return None
        if name == current:
            return name
        models = await self.models()
        if models is not None and name not in models:
            # Maybe new since the list was kept: ask once more.
            self._lm.forget_models()
            models = await self.models()
        if models is None:
            raise ModelRefused(503, MODEL_SERVER_AWAY)
        if name not in models:
            # Typed by hand (a slash command): the one model of that name in another case.
            alike = [m for m in models if m.casefold() == name.casefold()]
            if len(alike) == 1:
                return alike[0]
            shown = name if len(name) <= 80 else name[:79] + "…"
            listed = ", ".join(models) if models else "none"
            raise ModelRefused(
                422, f"The model server has no model named “{shown}” (it lists: {listed})."
            )
        return name

    async def save(self, chat: Chat, model: str, sampling: SamplingForm) -> ChatSummary:
        """Save the chat's model and its three sampling settings (its other settings
        kept); nothing is changed when any of them is refused."""
        errors = dict(sampling.errors)
        status = 422
        chosen: str | None = None
        try:
            chosen = await self.checked_model(model, chat.model)
        except ModelRefused as exc:
            errors = {"model": exc.message, **errors}
            status = exc.status if not sampling.errors else 422
        if errors:
            view = await self.view(chat)
            view.model, view.form, view.errors = model.strip(), sampling, errors
            raise SettingsRefused(status, errors, view)
        params = sampling.apply_to(chat.params).stored()
        return await self._update(chat.id, ChatPatch(model=chosen, params=params))

    async def first_model(self, typed: str, name: str) -> ChatPatch | None:
        """A new chat's model as picked beside its first message (None: the default);
        SendRefused, the `typed` message kept, when the server does not list it."""
        try:
            chosen = await self.checked_model(name)
        except ModelRefused as exc:
            raise SendRefused(exc.status, exc.message, typed) from exc
        return ChatPatch(model=chosen) if chosen else None

    async def set_model(self, chat_id: UUID, name: str) -> ChatSummary:
        """Make `name` the chat's model ("" : the server's default); ModelRefused when
        the model server does not list it."""
        chat = await self._db.get_chat(self.owner, chat_id)
        chosen = await self.checked_model(name, chat.model)
        return await self._update(chat_id, ChatPatch(model=chosen))

    async def reset(self, chat_id: UUID) -> ChatSummary:
        """Back to the defaults: the server's model, its sampling, Parlor's system prompt
        (settings the chat has besides these, such as plan mode, are kept)."""
        chat = await self._db.get_chat(self.owner, chat_id)
        params = SamplingForm().apply_to(chat.params).stored()
        return await self._update(chat_id, ChatPatch(model=None, system_prompt=None, params=params))

    async def _update(self, chat_id: UUID, patch: ChatPatch) -> ChatSummary:
        try:
            return await self._db.update_chat(self.owner, chat_id, patch)
        except DbRejected as exc:
            raise ModelRefused(422, f"Storage refused the settings: {exc.detail}") from exc


class ModelRefused(Exception):
    """A model (or a change) the chat cannot take; `message` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def chosen_params(params: ChatParams) -> list[tuple[str, str]]:
    """The settings a chat (or a role) sets, as (label, value), for a summary line."""
    shown: list[tuple[str, str]] = []
    if params.temperature is not None:
        shown.append(("temperature", f"{params.temperature:g}"))
    if params.top_p is not None:
        shown.append(("top p", f"{params.top_p:g}"))
    if params.max_tokens is not None:
        shown.append(("max tokens", str(params.max_tokens)))
    return shown
