"""Chat templating: a conversation's token ids under the model's chat template (or a plain fallback), the
template's fixed preamble, and the token ids that end a turn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

# A plain, explicit fallback for tokenizers that carry no chat template.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a generation: the model's and tokenizer's eos ids, and the end-of-turn
    special tokens of common chat templates that the vocabulary has."""
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for src in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(x) for x in src)
    # chat models often end a turn with a special token that is not the tokenizer's eos
    for special in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return ids


class _TemplatesMixin:
    """:class:`steerboard.engine.Engine`'s chat-template methods (they read ``self.tokenizer``)."""

    tokenizer: Any

    def chat_ids(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a conversation under the model's chat template.

        Args:
            messages: ``[{"role": "system"|"user"|"assistant", "content": str}, ...]``.
            add_generation_prompt: end with the assistant-turn header.
        """
        template = self.tokenizer.chat_template or FALLBACK_CHAT_TEMPLATE
        msgs = [dict(m) for m in messages]
        try:
            text = self.tokenizer.apply_chat_template(
                msgs, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as ex:  # some templates reject system messages: fold it into the first user turn
            if msgs and msgs[0]["role"] == "system" and "system" in str(ex).lower():
                sys_text = msgs.pop(0)["content"]
                if msgs and msgs[0]["role"] == "user":
                    msgs[0]["content"] = f"{sys_text}\n\n{msgs[0]['content']}"
                text = self.tokenizer.apply_chat_template(
                    msgs, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            else:
                raise
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def plain_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of a conversation as plain text, without the chat template: the messages' contents joined
        by blank lines (a system message first, as lm-eval prepends a system instruction without a chat
        template), with the tokenizer's own special tokens (e.g. a BOS token)."""
        text = "\n\n".join(str(m["content"]) for m in messages)
        return self.tokenizer(text)["input_ids"]

    @functools.cached_property
    def template_prefix(self) -> list[int]:
        """Token ids every single-turn chat prompt starts with (the template's preamble before the user text)."""
        a = self.chat_ids([{"role": "user", "content": "alpha"}])
        b = self.chat_ids([{"role": "user", "content": "zulu"}])
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return a[:n]
