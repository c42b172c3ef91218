"""``ex_reminder/``: append a safety reminder to the last user message (a messages method).

The smallest kind of method: it only rewrites the conversation before the chat template is applied, so it
needs no fitting and shares the unmodified model with every other method.
"""

from __future__ import annotations

from dataclasses import dataclass

from steerboard.methods.base import Method, MethodConfig


@dataclass
class ReminderConfig(MethodConfig):
    """Options (``-M key=value``), validated before any weights load.

    Attributes:
        reminder: text appended to the user's last message.
        separator: what goes between the message and the reminder.
    """

    reminder: str = "(Answer only if it is safe and legal to do so; otherwise briefly decline.)"
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reminder.strip():
            raise ValueError("-M reminder must not be empty")


class Reminder(Method):
    """Appends ``reminder`` to the last user message of every conversation."""

    name = "ex_reminder"
    config_class = ReminderConfig

    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Return a copy of the conversation with the reminder after the last user message."""
        cfg = self.config
        assert isinstance(cfg, ReminderConfig)
        out = [dict(m) for m in messages]
        for m in reversed(out):
            if m["role"] == "user":
                m["content"] = f"{m['content']}{cfg.separator}{cfg.reminder}"
                break
        return out
