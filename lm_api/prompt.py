"""Chat messages → prompt tokens and stop strings, with llama-cpp-python's Jinja2 formatter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

# The fallback when a GGUF has no template: ChatML, written as plain text when the model
# has no such special tokens. Its markers double as stop strings so the model never
# writes the next turn itself.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_STOPS = ("<|im_end|>", "<|im_start|>")


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    stop: tuple[str, ...]


class ChatPrompter:
    """Formats chats for one loaded model."""

    def __init__(self, llm: llama_cpp.Llama, chat_format: str | None) -> None:
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        gguf_template = llm.metadata.get("tokenizer.chat_template")
        wanted = (chat_format or "").strip()
        if wanted.lower() == "chatml":
            template, self.source = CHATML_TEMPLATE, "ChatML (LM_API_CHAT_FORMAT)"
        elif wanted:
            if "{{" not in wanted and "{%" not in wanted:
                raise ValueError(
                    f"LM_API_CHAT_FORMAT={wanted!r} is neither 'chatml' nor a Jinja2 chat "
                    "template; leave it empty to use the model's own template"
                )
            template, self.source = wanted, "LM_API_CHAT_FORMAT template"
        elif gguf_template:
            template, self.source = gguf_template, "GGUF tokenizer.chat_template"
        else:
            template, self.source = CHATML_TEMPLATE, "ChatML (the GGUF has no template)"
        self._extra_stops = CHATML_STOPS if template == CHATML_TEMPLATE else ()
        self._bos = llm.token_bos()
        eos = llm.token_eos()
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(eos),
            bos_token=self._token_text(self._bos),
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def build(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render and tokenize; raises ValueError when the template rejects the chat.

        A chat that ends with an assistant message continues that message, as
        llama-server does: the template renders the earlier turns and the generation
        prompt, then the partial answer follows as it is, its turn left open, so the
        model goes on from where it stopped (and the answer carries only what follows).
        """
        head, partial = split_partial(messages)
        try:
            result = self._formatter(messages=cast(Any, head))
        except ValueError:
            raise
        except Exception as exc:  # a template's own raise_exception or a Jinja2 error
            raise ValueError(f"the chat template rejected these messages: {exc}") from exc
        text = result.prompt + partial
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        # Add BOS when the model wants one and the template did not write it already.
        if (
            self._bos >= 0
            and llama_cpp.llama_vocab_get_add_bos(self._vocab)
            and (not tokens or tokens[0] != self._bos)
        ):
            tokens.insert(0, self._bos)
        stops = result.stop if isinstance(result.stop, list) else [result.stop or ""]
        return Prompt(tokens, tuple(s for s in (*stops, *self._extra_stops) if s))


def split_partial(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The turns the template renders, and the partial answer to continue ("" if none)."""
    if not messages or messages[-1].get("role") != "assistant":
        return messages, ""
    head = messages[:-1]
    if head and head[-1].get("role") == "assistant":
        raise ValueError(
            "two assistant messages end the chat: only the last answer can be continued"
        )
    return head, str(messages[-1].get("content") or "")
