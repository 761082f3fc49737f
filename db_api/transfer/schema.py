"""Parlor's export format, version 1, as pydantic models.

The same models write exports and read them back on import; the published JSON Schema,
docs/export-schema-v1.json, is generated from them (`python -m db_api.transfer.schema`)
and a test keeps the file equal to what they generate.

A file holds chats; a chat holds ALL its messages (every branch and version) as a flat
list, parents before children, each naming its `parent_id` (null: a first turn). The
messages sharing a parent are versions of one turn, oldest first. `current_leaf_id` is
the last message of the branch the chat shows.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

FORMAT: Final[Literal["parlor-chats"]] = "parlor-chats"
VERSION: Final[Literal[1]] = 1
SCHEMA_FILE = "docs/export-schema-v1.json"
INT32_MAX = 2_147_483_647
MAX_MS = 86_400_000.0


class ExportMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", title="Message")

    id: uuid.UUID
    parent_id: uuid.UUID | None = Field(
        default=None, description="The message this one answers or follows; null: a first turn."
    )
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["complete", "pending", "streaming", "interrupted", "error"] = Field(
        default="complete",
        description="pending and streaming are imported as interrupted: nothing generates "
        "an imported answer.",
    )
    error: str | None = Field(default=None, description="Why an answer failed, for people.")
    reason: str | None = Field(
        default=None,
        description="Why an answer was interrupted or failed, for programs: stopped, "
        "model_unreachable, model_error, model_stalled, context_exceeded, "
        "storage_unreachable, server_restarted, lease_expired.",
    )
    finish_reason: Literal["stop", "length"] | None = None
    model: str | None = Field(default=None, description="The model that wrote the answer.")
    params: dict[str, Any] | None = Field(
        default=None, description="The sampling settings the answer was generated with."
    )
    plan: str | None = Field(default=None, description="Plan mode's plan for this answer.")
    prompt_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX)
    completion_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX)
    ttft_ms: float | None = Field(
        default=None, ge=0, le=MAX_MS, allow_inf_nan=False, description="Time to the first token."
    )
    generation_ms: float | None = Field(default=None, ge=0, le=MAX_MS, allow_inf_nan=False)
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None


class ExportChat(BaseModel):
    model_config = ConfigDict(extra="ignore", title="Chat")

    id: uuid.UUID
    title: str | None = None
    title_source: Literal["auto", "user", "model"] = "user"
    system_prompt: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Chat settings: temperature (0-2), top_p (0-1), max_tokens "
        "(1-32768), plan_mode (bool), planner_model (text); all optional.",
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime
    current_leaf_id: uuid.UUID | None = Field(
        default=None, description="The last message of the branch shown; null: no messages."
    )
    import_key: str | None = Field(
        default=None,
        description="Where the chat was first imported from (e.g. chatgpt:<id>); importing "
        "a chat whose key the account already holds adds nothing.",
    )
    messages: list[ExportMessage] = Field(
        default_factory=list, description="Every message of every branch, parents first."
    )


class ExportFile(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        title="Parlor chat export",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "description": "Chats exported from Parlor, version 1. Import reads this format "
            "back (and ChatGPT's and Open WebUI's exports).",
        },
    )

    format: Literal["parlor-chats"]
    version: Literal[1]
    exported_at: AwareDatetime
    chats: list[ExportChat]


def json_schema() -> dict[str, Any]:
    return ExportFile.model_json_schema()


def inline_schema() -> dict[str, Any]:
    """The schema with its $defs written in place (for the OpenAPI document, where
    `#/$defs/...` would not resolve); the models are not recursive."""
    schema = json_schema()
    definitions = schema.pop("$defs", {})
    schema.pop("$schema", None)

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    result: dict[str, Any] = resolve(schema)
    return result


def main() -> None:
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
