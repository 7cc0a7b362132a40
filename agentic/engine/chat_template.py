"""Formats a conversation with the model's own chat template (GGUF `tokenizer.chat_template`)."""

from __future__ import annotations

from typing import Sequence

from jinja2.sandbox import ImmutableSandboxedEnvironment

# ChatML, used only when a model ships no template of its own.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _raise(message: str) -> None:
    raise ValueError(message)


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source or FALLBACK_TEMPLATE)
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return self._template.render(
            messages=list(messages), add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos
        )
