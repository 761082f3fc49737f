"""The words of db_api's REST contract that both sides spell: a message's role and status,
why an answer ended, who titled a chat.

db_api validates and stores these values; chat_ui writes and reads them. One definition
here, imported by both services (and copied into both images), keeps the two from
drifting apart. It depends on nothing. The request and response bodies are each side's
own: db_api's `schemas.py` validates them and publishes them on its OpenAPI page, while
chat_ui's `contracts.py` reads only the fields it uses, with defaults, so that db_api can
grow without breaking it.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["system", "user", "assistant"]
# The one spelling of a message's state.
Status = Literal["complete", "pending", "streaming", "interrupted", "error"]
# An answer still being written by a generation.
RUNNING: tuple[Status, ...] = ("pending", "streaming")
# An answer that will not change any more (its generation is over; Retry starts it over).
FINAL: tuple[Status, ...] = ("complete", "interrupted", "error")
# Why a finished answer stopped: the model's end, or the length limit.
FinishReason = Literal["stop", "length"]
# Why an answer ended interrupted or in error, as a machine code (`error` has the text).
Reason = Literal[
    "stopped",
    "model_unreachable",
    "model_error",
    "model_stalled",
    "context_exceeded",
    "storage_unreachable",
    "server_restarted",
    "lease_expired",
]
# Who gave a chat its title: "auto" (first words), "model" or "user" (never replaced).
TitleSource = Literal["auto", "user", "model"]
