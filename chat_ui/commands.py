"""Slash commands typed in the message box: parsed and run by chat_ui, never sent to the
model. One registry (`COMMANDS`): each command's name, argument, help line and handler.

Which messages are commands: a message that starts with `/` and a known command name
(`/model gpt`, `/HELP`) is that command. One whose first word is `/` and letters only
(`/modle gpt`, a typo) is an unknown command: it is answered with the list, never sent,
so a mistyped command cannot reach the model. Anything else goes to the model as
written: `/etc/hosts please explain` (its first word is a path), or any message that
starts with a space (` /usr is where?`).

A command answers with a `Note`, shown in the page above the message box and never
stored as a turn. A refused one (unknown command, bad argument) keeps the typed text in
the box, so it can be corrected.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chat_ui.chat_settings import ChatSettings, ModelRefused
from chat_ui.clients import DbApi, DbRejected, DbUnavailable, LmApi, NotFound
from chat_ui.contracts import Chat, ChatPatch, Preset
from chat_ui.conversation import Conversation, Refused
from chat_ui.roles import Roles

# The settings a role does not carry over: plan mode belongs to the chat.
STORAGE_AWAY = "Parlor cannot reach its storage right now: try the command again in a moment."
MODELS_AWAY = "The model server cannot say which models it has right now: try again in a moment."

_COMMAND = re.compile(r"/([A-Za-z_]+)(?=\s|\Z)(.*)\Z", re.DOTALL)


@dataclass
class Note:
    """What a command answers in the page: a line, maybe a list of (term, description),
    and, for `/clear`, where to go next. `status` is the HTTP status of the answer: 200
    done, 422 refused (the typed text is kept), 503 a service is away (kept too)."""

    text: str
    items: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    go_to: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400


@dataclass
class Invocation:
    word: str
    argument: str
    command: Command | None


@dataclass
class Context:
    """What a handler acts on: the person's conversations, storage, the model server
    and the chat the command was typed in (None on the new-chat page)."""

    conv: Conversation
    db: DbApi
    lm: LmApi
    chat_settings: ChatSettings
    roles: Roles
    chat: Chat | None = None

    @property
    def owner(self) -> str:
        return self.conv.owner


Handler = Callable[[Context, str], Awaitable[Note]]


@dataclass(frozen=True)
class Command:
    name: str
    args: str  # how the argument is written in the help ("" for none)
    help: str
    handler: Handler
    # Acts on the chat it is typed in (refused on the new-chat page).
    needs_chat: bool = True

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


def parse(text: str) -> Invocation | None:
    """The command `text` is, or None for a message to send (see the module's rule)."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    word = match.group(1).lower()
    argument = " ".join(match.group(2).split())
    return Invocation(word=word, argument=argument, command=_BY_NAME.get(word))


@dataclass(frozen=True)
class Suggestion:
    """One line of the suggestions: what it puts in the box, what it shows."""

    fill: str
    label: str
    hint: str


def suggest(text: str) -> list[Command]:
    """The commands whose name starts with what is typed (`/` alone: all of them)."""
    if not text.startswith("/") or any(c.isspace() for c in text):
        return []
    typed = text[1:].lower()
    if not re.fullmatch(r"[a-z_]*", typed):
        return []
    return [c for c in COMMANDS if c.name.startswith(typed)]


async def suggestions(text: str, db: DbApi, lm: LmApi, owner: str) -> list[Suggestion]:
    """What to offer while `text` is typed: the matching commands, or, after `/model `,
    `/role ` or `/plan `, the matching arguments (models, the person's roles, on/off)."""
    found = await _suggestions(text, db, lm, owner)
    # What is typed already is no suggestion (so Tab leaves a finished command alone).
    return [s for s in found if s.fill != text]


async def _suggestions(text: str, db: DbApi, lm: LmApi, owner: str) -> list[Suggestion]:
    matched = re.fullmatch(r"/(model|role|plan)\s+(.*)", text, re.IGNORECASE | re.DOTALL)
    if matched is None:
        return [
            Suggestion(f"/{c.name}{' ' if c.args else ''}", c.usage, c.help) for c in suggest(text)
        ]
    name, typed = matched.group(1).lower(), matched.group(2).lstrip().lower()
    choices: list[tuple[str, str]] = []
    try:
        if name == "model" or (name == "plan" and typed.startswith("on ")):
            # A model: the chat's, or (after /plan on) its planner.
            prefix, typed = ("on ", typed[3:].lstrip()) if name == "plan" else ("", typed)
            choices = [(prefix + m, "") for m in await lm.list_models() or []]
            typed = prefix + typed
        elif name == "role":
            choices = _role_items(await db.list_presets(owner))
        else:
            choices = [("on", "plan before each answer"), ("off", "answer straight away")]
    except (DbUnavailable, DbRejected):
        return []
    return [
        Suggestion(f"/{name} {value}", f"/{name} {value}", hint)
        for value, hint in choices
        if value.lower().startswith(typed)
    ]


async def run(invocation: Invocation, ctx: Context) -> Note:
    command = invocation.command
    if command is None:
        return _refused(f"/{invocation.word} is not a command.", command_list())
    if command.needs_chat and ctx.chat is None:
        return _refused(f"{command.usage} acts on a chat: send a message first, then use it.")
    try:
        return await command.handler(ctx, invocation.argument)
    except DbUnavailable:
        return Note(STORAGE_AWAY, status=503)


def command_list() -> list[tuple[str, str]]:
    return [(c.usage, c.help) for c in COMMANDS]


def _refused(text: str, items: list[tuple[str, str]] | None = None) -> Note:
    return Note(text, items or [], status=422)


def _chat(ctx: Context) -> Chat:
    assert ctx.chat is not None, "needs_chat commands run with a chat"
    return ctx.chat


async def _patch(ctx: Context, changes: ChatPatch) -> Note | None:
    """Apply `changes` to the chat; a Note when db_api refused them."""
    try:
        await ctx.db.update_chat(ctx.owner, _chat(ctx).id, changes)
    except DbRejected as exc:
        return _refused(f"Parlor could not change the chat: {exc.detail}")
    return None


# --- the commands ---------------------------------------------------------------------


async def _help(ctx: Context, argument: str) -> Note:
    return Note(
        "Commands are handled by Parlor and never sent to the model. /clear starts a new, "
        "empty chat with this chat's model, role and settings (this chat stays in the list). "
        "Only these names are commands: to send a message that starts with a word like "
        "/this, begin it with a space.",
        command_list(),
    )


async def _clear(ctx: Context, argument: str) -> Note:
    chat = _chat(ctx)
    same = ChatPatch(
        system_prompt=chat.system_prompt, model=chat.model, params=chat.params.stored()
    )
    try:
        new = await ctx.db.create_chat(ctx.owner, same)
    except DbRejected as exc:
        return _refused(f"Parlor could not copy the settings: {exc.detail}")
    return Note("A new chat with the same settings.", go_to=f"/chats/{new.id}?note=cleared")


async def _model_choices(ctx: Context) -> list[str] | Note:
    ids = await ctx.chat_settings.models()
    if not ids:
        return Note(MODELS_AWAY, status=503)
    return ids


def _model_items(ids: list[str], chat: Chat | None) -> list[tuple[str, str]]:
    # The chat's model (none set: the default); one the server no longer lists is unmarked.
    current = chat.model if chat is not None and chat.model else ids[0]
    items = []
    for i, name in enumerate(ids):
        marks = ["the default"] if i == 0 else []
        if name == current:
            marks.append("this chat's" if chat is not None else "new chats'")
        items.append((name, ", ".join(marks)))
    return items


async def _models(ctx: Context, argument: str) -> Note:
    ids = await _model_choices(ctx)
    if isinstance(ids, Note):
        return ids
    return Note(
        "The models you can use (/model NAME picks one for this chat):", _model_items(ids, ctx.chat)
    )


async def _model(ctx: Context, argument: str) -> Note:
    ids = await _model_choices(ctx)
    if isinstance(ids, Note):
        return ids
    if not argument:
        return _refused("Name a model: /model NAME.", _model_items(ids, ctx.chat))
    try:
        chat = await ctx.chat_settings.set_model(_chat(ctx).id, argument)
    except ModelRefused as exc:
        return Note(exc.message, _model_items(ids, ctx.chat), status=exc.status)
    return Note(f"This chat now answers with {chat.model}.")


def _role_items(presets: list[Preset]) -> list[tuple[str, str]]:
    return [(p.name, p.model or "the default model") for p in presets]


async def _roles(ctx: Context, argument: str) -> Note:
    presets = await ctx.roles.all()
    if not presets:
        return Note("You have no roles yet: make them on the Roles page.")
    return Note("Your roles (/role NAME applies one to this chat):", _role_items(presets))


async def _role(ctx: Context, argument: str) -> Note:
    presets = await ctx.roles.all()
    if not argument:
        return _refused("Name a role: /role NAME.", _role_items(presets))
    try:
        # The role's settings replace the chat's; plan mode stays as the chat has it.
        preset = await ctx.roles.find(argument)
        await ctx.roles.apply(_chat(ctx).id, preset.id)
    except NotFound:
        text = f"You have no role named “{argument}”."
        return _refused(
            text if presets else text + " Make roles on the Roles page.", _role_items(presets)
        )
    except DbRejected as exc:
        return _refused(f"Parlor could not change the chat: {exc.detail}")
    return Note(f"This chat now uses the role “{preset.name}”.")


async def _clear_role(ctx: Context, argument: str) -> Note:
    try:
        await ctx.chat_settings.reset(_chat(ctx).id)
    except ModelRefused as exc:
        return Note(exc.message, status=exc.status)
    return Note(
        "Role cleared: this chat uses the default system prompt, model and settings "
        "(plan mode is unchanged)."
    )


PLAN_USAGE = [
    ("/plan on", "the chat's own model writes a short plan before each answer"),
    ("/plan on NAME", "model NAME writes the plan"),
    ("/plan off", "answers come straight away"),
]


async def _plan(ctx: Context, argument: str) -> Note:
    choice, _, planner_name = argument.partition(" ")
    choice = choice.lower()
    if choice not in ("on", "off") or (choice == "off" and planner_name):
        return _refused("Say /plan on, /plan on NAME or /plan off.", PLAN_USAGE)
    chat = _chat(ctx)
    updates: dict[str, object] = {"plan_mode": choice == "on"}
    planner = None
    if choice == "on":
        # /plan on: the chat's own model plans; /plan on NAME: that model does (the listed
        # name, or the one equal ignoring case, as /model reads it).
        if planner_name:
            try:
                planner = await ctx.chat_settings.checked_model(planner_name)
            except ModelRefused as exc:
                ids = await ctx.chat_settings.models()
                items = _model_items(ids, ctx.chat) if ids else []
                return Note(exc.message, items, status=exc.status)
        updates["planner_model"] = planner
    params = chat.params.model_copy(update=updates)
    refused = await _patch(ctx, ChatPatch(params=params.stored()))
    if refused is not None:
        return refused
    if choice == "off":
        return Note("Plan mode is off: answers come straight away.")
    who = planner or "the chat's own model"
    return Note(f"Plan mode is on: {who} writes a short plan before each answer.")


async def _title(ctx: Context, argument: str) -> Note:
    if not argument:
        return _refused("Give the title: /title TEXT.")
    try:
        await ctx.conv.rename(_chat(ctx).id, argument)
    except Refused as exc:
        return _refused(exc.message)
    return Note(f"Renamed to “{argument}”.")


COMMANDS: list[Command] = [
    Command("help", "", "this list", _help, needs_chat=False),
    Command("clear", "", "a new empty chat with the same settings", _clear),
    Command("models", "", "the models you can use", _models, needs_chat=False),
    Command("model", "NAME", "answer with model NAME in this chat", _model),
    Command("roles", "", "your roles", _roles, needs_chat=False),
    Command("role", "NAME", "apply role NAME to this chat", _role),
    Command("clear_role", "", "back to the default prompt, model and settings", _clear_role),
    Command("plan", "on [NAME] | off", "a planner writes a short plan before each answer", _plan),
    Command("title", "TEXT", "rename this chat", _title),
]
_BY_NAME = {c.name: c for c in COMMANDS}

# What a page reached by a command's redirect says (a fixed key, never text from the URL).
REDIRECT_NOTES = {"cleared": "A new, empty chat with the same model, role and settings."}


def redirect_note(key: str | None) -> Note | None:
    text = REDIRECT_NOTES.get(key or "")
    return Note(text) if text else None
