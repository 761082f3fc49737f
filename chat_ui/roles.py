"""Roles: a person's named system prompt, model and sampling settings (db_api's presets),
and using them: apply one to a chat (its settings become the chat's), start a chat from one.

Owner-scoped like chats: another person's role is NotFound, exactly like one that does not
exist. A role is checked here before it is stored (name, lengths, a model the server
lists, sampling ranges); `RoleRefused` carries what was typed, so the form gives it back.

The operations other parts call (the slash commands among them) are the methods of
`Roles`: `apply_role` (by name), `apply`, `find`, `start_chat`, `create`, `update`, `delete`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

from chat_ui.chat_settings import ChatSettings, ModelRefused
from chat_ui.clients import DbApi, DbRejected, LmApi, NotFound
from chat_ui.config import Settings
from chat_ui.contracts import ChatParams, ChatPatch, ChatSummary, Preset, PresetWrite
from chat_ui.sampling import SamplingForm, read_sampling

# db_api's limit on a role's name.
MAX_ROLE_NAME_CHARS = 100


@dataclass
class RoleForm:
    """A role as typed in its form (`raw`, given back when refused) and the refusals."""

    name: str = ""
    system_prompt: str = ""
    model: str = ""
    sampling: SamplingForm = field(default_factory=SamplingForm)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, role: Preset) -> RoleForm:
        return cls(
            name=role.name,
            system_prompt=role.system_prompt or "",
            model=role.model or "",
            sampling=SamplingForm.of(role.params),
        )


class RoleRefused(Exception):
    def __init__(self, status: int, form: RoleForm) -> None:
        super().__init__(" ".join(form.errors.values()))
        self.status = status
        self.form = form


def read_role(form: Mapping[str, object]) -> RoleForm:
    """A role's fields from a form, unchecked but for the sampling ranges."""

    def text(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    sampling = read_sampling(form)
    return RoleForm(
        name=" ".join(text("name").split()),
        system_prompt=text("system_prompt").replace("\r\n", "\n").strip(),
        model=text("model").strip(),
        sampling=sampling,
        errors=dict(sampling.errors),
    )


class Roles:
    """One owner's roles."""

    def __init__(self, owner: str, db: DbApi, lm: LmApi, settings: Settings) -> None:
        self.owner = owner
        self._db = db
        self._settings = settings
        self._chat_settings = ChatSettings(owner, db, lm, settings)

    async def all(self) -> list[Preset]:
        return await self._db.list_presets(self.owner)

    async def get(self, role_id: UUID) -> Preset:
        return await self._db.get_preset(self.owner, role_id)

    async def find(self, name: str) -> Preset:
        """The role called `name` (the same name with any case and spacing); NotFound."""
        wanted = " ".join(name.split()).casefold()
        for role in await self.all():
            if role.name.casefold() == wanted:
                return role
        raise NotFound(f"role {name!r}")

    async def models(self) -> list[str] | None:
        return await self._chat_settings.models()

    async def _checked(self, form: RoleForm, current: Preset | None) -> PresetWrite:
        """What to store for `form`, or RoleRefused with a message per field."""
        status = 422
        if not form.name:
            form.errors["name"] = "A role needs a name."
        elif len(form.name) > MAX_ROLE_NAME_CHARS:
            form.errors["name"] = (
                f"Role names are at most {MAX_ROLE_NAME_CHARS} characters "
                f"(this one has {len(form.name)})."
            )
        limit = self._settings.max_system_prompt_chars
        if len(form.system_prompt) > limit:
            form.errors["system_prompt"] = f"The system prompt is at most {limit} characters."
        model: str | None = None
        try:
            model = await self._chat_settings.checked_model(
                form.model, current.model if current else None
            )
        except ModelRefused as exc:
            form.errors["model"] = exc.message
            if len(form.errors) == 1:
                status = exc.status
        if form.errors:
            raise RoleRefused(status, form)
        base = current.params if current is not None else ChatParams()
        return PresetWrite(
            name=form.name,
            system_prompt=form.system_prompt or None,
            model=model,
            params=form.sampling.apply_to(base).stored(),
        )

    async def _stored(self, form: RoleForm, write: PresetWrite, role_id: UUID | None) -> Preset:
        try:
            if role_id is None:
                return await self._db.create_preset(self.owner, write)
            return await self._db.update_preset(self.owner, role_id, write)
        except DbRejected as exc:
            if exc.status == 409:
                form.errors["name"] = (
                    f"You already have a role named “{form.name}”: choose another name."
                )
                raise RoleRefused(409, form) from exc
            form.errors["form"] = f"Storage refused the role: {exc.detail}"
            raise RoleRefused(422, form) from exc

    async def create(self, form: RoleForm) -> Preset:
        return await self._stored(form, await self._checked(form, None), None)

    async def update(self, role_id: UUID, form: RoleForm) -> Preset:
        current = await self.get(role_id)
        return await self._stored(form, await self._checked(form, current), role_id)

    async def delete(self, role_id: UUID) -> None:
        await self._db.delete_preset(self.owner, role_id)

    async def apply(self, chat_id: UUID, role_id: UUID) -> ChatSummary:
        """The role's system prompt, model and sampling become the chat's (settings the
        chat has besides these, such as plan mode, are kept)."""
        role = await self.get(role_id)
        return await self._apply(chat_id, role)

    async def apply_role(self, chat_id: UUID, name: str) -> ChatSummary:
        """`apply` by the role's name (NotFound when the owner has no such role)."""
        return await self._apply(chat_id, await self.find(name))

    async def _apply(self, chat_id: UUID, role: Preset) -> ChatSummary:
        chat = await self._db.get_chat(self.owner, chat_id)
        return await self._db.update_chat(self.owner, chat_id, self._patch(role, chat.params))

    @staticmethod
    def _patch(role: Preset, params: ChatParams) -> ChatPatch:
        sampling = SamplingForm.of(role.params)
        return ChatPatch(
            system_prompt=role.system_prompt,
            model=role.model,
            params=sampling.apply_to(params).stored(),
        )

    async def start_chat(self, role_id: UUID) -> ChatSummary:
        """A new chat with the role's settings."""
        role = await self.get(role_id)
        return await self._db.create_chat(self.owner, self._patch(role, ChatParams()))
