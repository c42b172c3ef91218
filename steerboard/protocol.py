"""What a task may ask of a model beyond Inspect's ``generate``: the :class:`ScoringModel` protocol.

Inspect's model API generates text. Some steerboard tasks need more of the provider: the log-likelihood of a
given answer (MMLU cloze, TruthfulQA MC1/MC2), the unsteered model's own reply scored under the method
(``side_effects``), a per-instance weight edit (SafeEdit ``-T protocol=per_instance``). Tasks and scorers
reach these through this protocol only, never through a provider's engine, and check for them with
:func:`require_capability` before any sample runs, so a provider without them (Inspect's ``hf/`` or
``vllm/``, an API model, ``mockllm/``) stops the eval with one line instead of an error from deep inside.

steerboard's method providers (``base/``, ``prompt/``, ``sae/``, ... one per entry point of the
``steerboard.methods`` group: :class:`steerboard.methods.provider.MethodModelAPI`) implement the protocol; a
method class opts out of log-likelihoods with ``supports_loglik = False`` and has per-instance edits when it
implements ``apply_edit`` and ``restore``. Any other provider can join by implementing the same members.

The capabilities (:data:`CAPABILITIES`), each a set of members plus the flag that must be true:

* ``loglik``: :meth:`ScoringModel.loglik` (``supports_loglik``);
* ``reference``: :meth:`~ScoringModel.loglik` with ``reference=True``, :meth:`~ScoringModel.reference_reply`
  and :meth:`~ScoringModel.decode` (``supports_loglik``);
* ``edit``: :meth:`ScoringModel.edit` and :attr:`~ScoringModel.edit_prompt_suffix` (``supports_edit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from steerboard.errors import UserError

METHODS_GROUP = "steerboard.methods"
"""The entry-point group of method providers (the same group ``steerboard.methods.registry`` registers)."""


@runtime_checkable
class ScoringModel(Protocol):
    """A model provider's side of the capabilities beyond ``generate`` (an Inspect ``ModelAPI``: ``model.api``).

    ``isinstance(api, ScoringModel)`` says the provider has every member; whether its method can use them is
    in ``supports_loglik`` and ``supports_edit`` (:func:`has_capability` checks both).
    """

    @property
    def supports_loglik(self) -> bool:
        """Whether :meth:`loglik`, :meth:`reference_reply` and :meth:`decode` work for this model's method."""
        ...

    @property
    def supports_edit(self) -> bool:
        """Whether :meth:`edit` works for this model's method."""
        ...

    async def loglik(
        self,
        input: Sequence[Any],
        continuations: Sequence[str] | Sequence[Sequence[int]],
        *,
        reference: bool = False,
        distributions: bool = False,
        shared_prefix: str | None = None,
        template: str = "chat",
    ) -> list[Any]:
        """Teacher-forced log-likelihood of each continuation as the reply to ``input``, the method applied
        exactly as when it generates.

        Args:
            input: the conversation (Inspect chat messages or ``{"role", "content"}`` dicts).
            continuations: reply texts (tokenized without special tokens) or token ids.
            reference: score with the unsteered model (the same model and runtime, without the method).
            distributions: also return every position's full next-token log-distribution.
            shared_prefix: text the last message starts with that many calls share (computed once).
            template: ``chat`` (continuations are the assistant's reply under the chat template) or ``plain``
                (the messages as plain text; continuations follow the text directly).

        Returns:
            One result per continuation (:class:`steerboard.engine.ScoredContinuation`): ``logprobs`` (one
            per token), ``token_ids`` and, with ``distributions``, ``distributions`` (``[tokens, vocab]``).
        """
        ...

    async def reference_reply(self, input: Sequence[Any], max_tokens: int) -> list[int]:
        """The unsteered model's greedy reply to ``input`` as token ids (at most ``max_tokens``, plus the
        end-of-turn token when the reply finished)."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` under the model's tokenizer, special tokens left out."""
        ...

    def edit(self, instance: Any) -> AbstractAsyncContextManager[dict[str, Any]]:
        """An async context manager that edits the weights for one instance
        (:class:`steerboard.methods.base.EditInstance`) while the block runs, yields the edit's statistics
        (layer, seconds, losses) and restores the weights on exit; edits are serialized by the provider."""
        ...

    @property
    def edit_prompt_suffix(self) -> str:
        """Text the editor appends to the prompts asked under an edit (DINM's protocol; ``""``: none)."""
        ...


@dataclass(frozen=True)
class Capability:
    """One capability: the methods it calls, the flag that must be true, what it is (for messages) and the
    plain attributes it reads."""

    members: tuple[str, ...]
    flag: str
    description: str
    attributes: tuple[str, ...] = ()


CAPABILITIES: dict[str, Capability] = {
    "loglik": Capability(("loglik",), "supports_loglik", "return log-likelihoods of given answers"),
    "reference": Capability(
        ("loglik", "reference_reply", "decode"), "supports_loglik",
        "return log-likelihoods of the unsteered model's own reply",
    ),
    "edit": Capability(("edit",), "supports_edit", "edit its weights per instance", ("edit_prompt_suffix",)),
}


class CapabilityError(UserError):
    """The model's provider lacks a capability the task needs (one line: the capability, the providers that
    have it, the fallback where there is one)."""


def _api(model: Any) -> Any:
    """The provider of ``model``: an Inspect ``Model``'s ``api``, or ``model`` itself (a ``ModelAPI``)."""
    return getattr(model, "api", model)


def _capability(name: str) -> Capability:
    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}; valid capabilities: {', '.join(CAPABILITIES)}")
    return CAPABILITIES[name]


def has_capability(model: Any, capability: str) -> bool:
    """Whether ``model`` (an Inspect ``Model`` or its ``ModelAPI``) has ``capability``: every method it calls
    is there and callable, every attribute it reads is there, and the capability's flag is true.

    Raises:
        ValueError: ``capability`` is not one of :data:`CAPABILITIES`.
    """
    cap = _capability(capability)
    api = _api(model)
    return (
        all(callable(getattr(api, m, None)) for m in cap.members)
        and all(hasattr(api, a) for a in cap.attributes)
        and bool(getattr(api, cap.flag, False))
    )


def _class_has(method_cls: Any, capability: str) -> bool:
    """Whether a method class gives its provider ``capability`` (the provider's rules, read off the class)."""
    if capability == "edit":
        return callable(getattr(method_cls, "apply_edit", None)) and callable(getattr(method_cls, "restore", None))
    return bool(getattr(method_cls, "supports_loglik", True))


def providers_with(capability: str) -> list[str]:
    """The installed method providers (``name/``) that have ``capability``: ``base/`` (the control) first, then
    by name.

    Reads the ``steerboard.methods`` entry points and imports their method classes (used on the error path
    only); an entry point that does not load is left out.
    """
    from importlib.metadata import entry_points

    _capability(capability)
    names: list[str] = []
    for ep in sorted(entry_points(group=METHODS_GROUP), key=lambda ep: (ep.name != "base", ep.name)):
        try:
            cls = ep.load()
        except Exception:  # noqa: BLE001, S112 - a broken plug-in cannot be offered
            continue
        if _class_has(cls, capability) and f"{ep.name}/" not in names:
            names.append(f"{ep.name}/")
    return names


def capability_message(model: Any, capability: str, task: str, fallback: str | None = None) -> str:
    """The one-line refusal: what ``task`` needs, that ``model`` lacks it, who has it, the fallback."""
    cap = _capability(capability)
    providers = ", ".join(providers_with(capability)) or "none installed"
    if capability == "edit":
        how = "a plug-in method that implements apply_edit and restore"
    else:
        how = "a plug-in method with supports_loglik = True"
    hint = f"; or run {fallback}, which needs none" if fallback else ""
    return (
        f"{task}: model {str(model)!r} cannot {cap.description}, which this task needs (capability "
        f"{capability!r}); providers that can: {providers} (or {how}){hint}"
    )


def require_capability(model: Any, capability: str, *, task: str, fallback: str | None = None) -> ScoringModel:
    """``model``'s provider as a :class:`ScoringModel`, checked to have ``capability``.

    Tasks call it when Inspect constructs them (on :func:`steerboard.inspect_private.active_model`, before any
    sample) and their solvers call it for the provider they use.

    Args:
        model: an Inspect ``Model`` (``get_model()``) or its ``ModelAPI``.
        capability: one of :data:`CAPABILITIES` (``loglik``, ``reference``, ``edit``).
        task: the task (and option) that needs it, for the message (e.g. ``"mmlu (format=cloze)"``).
        fallback: the task option that needs no such capability (``-T format=letters``), or None.

    Raises:
        CapabilityError: the provider lacks the capability; one line naming the capability, the installed
            providers that have it and ``fallback``.
        ValueError: ``capability`` is unknown.
    """
    if not has_capability(model, capability):
        raise CapabilityError(capability_message(model, capability, task, fallback))
    return _api(model)  # type: ignore[no-any-return]
