"""The engine's public types: requests and results, the batch state an intervention sees, and the hook helpers.

Methods build :class:`GenerationRequest` objects, return an :data:`Intervention` that registers forward hooks
with :func:`hooks` (editing hidden states with :func:`map_hidden`) and read :class:`BatchState` while it
runs. Everything here is re-exported by :mod:`steerboard.engine`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # heavy imports stay lazy
    import torch


@dataclass
class GenerationRequest:
    """One sequence to continue.

    Attributes:
        input_ids: prompt token ids (already chat-templated).
        max_new_tokens: cap on generated tokens.
        temperature: 0 (default) is greedy; > 0 samples.
        top_p: nucleus sampling mass (sampling only).
        top_k: top-k sampling cut (sampling only).
        seed: seed of this request's sampling generator (sampling only).
        stop: stop strings; generation ends when one appears and the text is cut before it.
        logprobs: return the log-probability of each generated token.
        top_logprobs: also return this many most likely alternatives per position.
        meta: free-form per-request data that interventions can read (e.g. a gate decision).
    """

    input_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.input_ids:
            raise ValueError("GenerationRequest.input_ids is empty: a prompt needs at least one token")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")


@dataclass
class TokenLogprob:
    """Log-probability of one generated token, with its top alternatives."""

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, int, float]]


@dataclass
class GenerationResult:
    """What the engine produced for one request."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "max_tokens"]
    input_tokens: int
    output_tokens: int
    logprobs: list[TokenLogprob] | None = None
    seconds: float = 0.0


@dataclass
class ScoredContinuation:
    """Teacher-forced scores of one continuation (see :meth:`Engine.score_requests`).

    Attributes:
        token_ids: the continuation's tokens.
        logprobs: log-probability of each of them given the prompt and the tokens before it.
        distributions: ``[len(token_ids), vocab]`` next-token log-distributions (only when asked for).
    """

    token_ids: list[int]
    logprobs: list[float]
    distributions: Any = None


@dataclass
class BatchState:
    """What an intervention sees while a batch runs (public API: read it, never modify it).

    One ``BatchState`` lives for one call of the engine's batch loop; the engine updates it in place
    before every forward pass, so a hook reads the current values each time it fires.

    A batch runs one **prefill** forward pass over the left-padded prompts (``phase == "prefill"``; hidden
    states ``[len(rows), padded_length, hidden_size]``), then one **decode** forward pass per new token
    (``phase == "decode"``; hidden states ``[len(rows), 1, hidden_size]``, the newest token of every live
    row). Under continuous batching, requests that arrive while a batch runs get their own prefill
    between two decode steps: ``phase`` is then ``"prefill"`` again and ``rows`` holds only the new rows.
    When the chat template's fixed preamble is reused (see :data:`Intervention`), a prefill covers only
    the tokens after it: hidden states are ``[len(rows), padded_length - len(preamble), hidden_size]``.

    Attributes:
        requests: every request of the batch so far; ``rows`` index into it (it grows as requests join).
        prompt_lengths: unpadded prompt length of each request, same indexing as ``requests``.
        padded_length: the left-padded prompt length of the current prefill (preamble included).
        phase: ``"prefill"`` during a prompt forward pass, ``"decode"`` during each one-token step.
        rows: for each row of the current forward pass (dimension 0 of every hidden state), the index of
            its request in ``requests``; finished rows are dropped, so this shrinks during decoding.
        step: number of decode steps run so far in this batch (0 before the first).
        attention_mask: the current attention mask ``[len(rows), key_length]`` (1 = real token).
    """

    requests: list[GenerationRequest]
    prompt_lengths: list[int]
    padded_length: int
    phase: Literal["prefill", "decode"] = "prefill"
    rows: list[int] = field(default_factory=list)
    step: int = 0
    attention_mask: Any = None

    def row_meta(self, key: str, default: Any = None) -> list[Any]:
        """``requests[r].meta[key]`` (or ``default``) for every row ``r`` of the current forward pass, in row order.

        ``meta`` is what :meth:`steerboard.methods.base.Method.request_meta` returned for that request,
        e.g. a per-prompt gate decision.
        """
        return [self.requests[r].meta.get(key, default) for r in self.rows]


Intervention = Callable[[BatchState], contextlib.AbstractContextManager[Any]]
"""A method's hooks (public API): ``intervention(state) -> context manager``.

The engine calls it once per batch with the batch's :class:`BatchState`, enters the returned context
manager before the first forward pass and exits it after the last (also on error). Register forward hooks
on entry (:func:`hooks` removes them on exit); they then fire on every forward pass of the batch: the
prefill and each decode step, one per generated token, with ``state`` describing that pass. A hook that
returns a new output (see :func:`map_hidden`) replaces the module's output, so editing a decoder block's
output (:meth:`Engine.layer_module_name`) edits the residual stream seen by every later layer.
Passed to :meth:`Engine.forward` or :meth:`Engine.score` (teacher forcing, e.g. while fitting), it sees
one prefill-phase pass over the whole sequences.
Method authors return one from :meth:`steerboard.methods.base.Method.intervention`.

Optional: an intervention whose effect on a prompt position depends on that position alone (the same
steering for every row at hand) may carry a ``preamble_key(requests) -> Hashable | None`` attribute. For a
prefill whose key is not None the engine computes the chat template's preamble once under the hooks (as a
one-row batch whose request has empty ``meta``) and reuses its keys/values, as it does for plain prefills
(``Engine.prefix_cache``); without the attribute, hooked prefills always run the whole prompt.
"""


def prefix_reuse(intervention: Intervention | None) -> tuple[bool, Callable[[list[GenerationRequest]], Any] | None]:
    """Whether prefills under ``intervention`` may reuse cached prefix keys/values, and its ``preamble_key``.

    Hooks may change a prefix's keys/values: it is reused without hooks, or under hooks that say how
    (``preamble_key``).
    """
    key_fn = getattr(intervention, "preamble_key", None) if intervention is not None else None
    return intervention is None or key_fn is not None, key_fn


@contextlib.contextmanager
def hooks(model: torch.nn.Module, spec: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """Register forward hooks keyed by module name for the duration of the block; always removed (public API).

    Use it inside an :data:`Intervention`: ``with hooks(engine.model, {engine.layer_module_name(8): fn}):
    yield``. Each hook is a plain torch forward hook, called after the module's forward on every forward
    pass (prefill and every decode step).

    Args:
        model: the module tree (``Engine.model``).
        spec: ``{module_name: hook(module, args, output) -> output | None}``. Returning ``None`` keeps the
            output; returning a value replaces it. A decoder block's output is a tuple (or a tensor in some
            transformers versions) whose first element is the hidden states ``[rows, seq, hidden_size]``;
            use :func:`map_hidden` to edit it either way.

    Raises:
        KeyError: a module name does not exist (lists a few valid ones).
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        for name, fn in spec.items():
            if name not in modules:
                near = [n for n in modules if n.endswith(name.split(".")[-1])][:5]
                raise KeyError(f"no module named {name!r} in {type(model).__name__}; e.g. {near}")
            handles.append(modules[name].register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def map_hidden(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to a module output's hidden states, whether it is a tensor or a tuple (public API).

    Args:
        output: a forward hook's ``output`` (a tensor, or a tuple whose first element is the hidden states).
        fn: maps hidden states ``[rows, seq, hidden_size]`` to a tensor of the same shape and dtype.

    Returns:
        The output with its hidden states replaced, in the same structure; return it from the hook.
    """
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)
