"""Sampling settings (temperature, top_p, max_tokens) as a person types them: their
limits, reading them from a form, and what of them goes to the model server.

The limits are the ranges every OpenAI-compatible server accepts (and db_api stores):
a value outside them is refused here, with the field's name, before anything is saved.
An empty field means the default: the model server's for temperature and top_p,
`CHAT_UI_MAX_TOKENS` for max_tokens (chat_ui always sends one, to budget the context).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from chat_ui.contracts import ChatParams

TEMPERATURE_MAX = 2.0
# db_api's limit on max_tokens: far beyond any context a chat model has today.
MAX_TOKENS_LIMIT = 32_768
# Longer than any number anyone means; refused before float() reads it.
MAX_NUMBER_CHARS = 32

# The form's fields, in the order the page shows them.
FIELDS = ("temperature", "top_p", "max_tokens")


@dataclass
class SamplingForm:
    """What the person typed (`raw`, given back as typed when refused), the values read
    from it, and a message per field that was refused."""

    raw: dict[str, str] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def apply_to(self, params: ChatParams) -> ChatParams:
        """`params` with these three settings in place (its other keys kept)."""
        return params.model_copy(
            update={
                "temperature": self.temperature,
                "top_p": self.top_p,
                "max_tokens": self.max_tokens,
            }
        )

    @classmethod
    def of(cls, params: ChatParams) -> SamplingForm:
        """The form as stored settings fill it."""

        def text(value: float | None) -> str:
            return "" if value is None else f"{value:g}"

        return cls(
            raw={
                "temperature": text(params.temperature),
                "top_p": text(params.top_p),
                "max_tokens": "" if params.max_tokens is None else str(params.max_tokens),
            },
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
        )


def _number(text: str) -> float | None:
    if len(text) > MAX_NUMBER_CHARS:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_sampling(form: Mapping[str, object]) -> SamplingForm:
    """The three settings from a form; each refused value has a message in `errors`."""
    raw = {name: _text(form.get(name)) for name in FIELDS}
    out = SamplingForm(raw=raw)
    if raw["temperature"]:
        value = _number(raw["temperature"])
        if value is None or not 0.0 <= value <= TEMPERATURE_MAX:
            out.errors["temperature"] = (
                f"Temperature is a number from 0 to {TEMPERATURE_MAX:g} "
                "(empty: the model server's default)."
            )
        else:
            out.temperature = value
    if raw["top_p"]:
        value = _number(raw["top_p"])
        if value is None or not 0.0 < value <= 1.0:
            out.errors["top_p"] = (
                "Top p is a number above 0, at most 1 (empty: the model server's default)."
            )
        else:
            out.top_p = value
    if raw["max_tokens"]:
        text = raw["max_tokens"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:12]) <= MAX_TOKENS_LIMIT:
            out.errors["max_tokens"] = (
                f"Max tokens is a whole number from 1 to {MAX_TOKENS_LIMIT} "
                "(empty: Parlor's default)."
            )
        else:
            out.max_tokens = int(text)
    return out


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def sampling_of(params: ChatParams) -> dict[str, float]:
    """What of a chat's settings goes into a chat completion request besides max_tokens
    (which chat_ui always sends): those that are set, under OpenAI's names."""
    sent: dict[str, float] = {}
    if params.temperature is not None:
        sent["temperature"] = params.temperature
    if params.top_p is not None:
        sent["top_p"] = params.top_p
    return sent
