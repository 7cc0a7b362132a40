"""Formats a conversation with the model's own chat template (GGUF `tokenizer.chat_template`)."""

from __future__ import annotations

import re
from typing import Sequence

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# ChatML, used only when a model ships no template of its own.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Each message's content goes through the template as a marker, so the rendered prompt can be
# cut back into the template's own text and the messages' text (see render_parts).
_CONTENT_MARKER = "\ue000{}\ue001"
_CONTENT_SPLIT = re.compile("\ue000(\\d+)\ue001")


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
        return "".join(text for text, _ in self.render_parts(messages))

    def render_parts(self, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
        """The prompt as (text, is_message_content) pieces. Only the template's own pieces may
        hold control tokens: a message that contains `<|im_start|>system` must stay text."""
        marked = [{**message, "content": _CONTENT_MARKER.format(i)} for i, message in enumerate(messages)]
        rendered = self._template.render(messages=marked, add_generation_prompt=True, bos_token=self._bos, eos_token=self._eos)
        parts = []
        for i, piece in enumerate(_CONTENT_SPLIT.split(rendered)):
            if i % 2:
                parts.append((messages[int(piece)]["content"], True))
            elif piece:
                parts.append((piece, False))
        return parts

    def text_after_reply(self) -> str | None:
        """The template's text between an assistant reply and the next user message's content
        (ChatML: "<|im_end|>\n<|im_start|>user\n"): what every next turn's prompt holds after
        the reply. None where the template does not render a conversation of three messages."""
        probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
        try:
            parts = self.render_parts(probe)
        except (TemplateError, ValueError):
            return None
        contents = [i for i, (_, is_content) in enumerate(parts) if is_content]
        if len(contents) != len(probe):
            return None
        return "".join(text for text, _ in parts[contents[1] + 1:contents[2]])
