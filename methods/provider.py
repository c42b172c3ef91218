"""Turns a :class:`~steerboard.methods.base.Method` into an Inspect model provider.

``MethodModelAPI`` validates ``-M`` options into the method's config *before* loading any weights,
loads (or shares) an :class:`~steerboard.engine.Engine`, lets the method fit its artifact, and serves
``generate`` by batching concurrent Inspect requests into engine batches on a worker thread.

Imported lazily by the provider factories in ``steerboard.methods.registry`` (torch and
transformers load only when a provider is actually used).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    TopLogprob,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from steerboard.engine import Engine, GenerationRequest, GenerationResult, ScoredContinuation
from steerboard.inspect_private import MODEL_INFO_LOOKUP_API_KEY
from steerboard.methods.base import EditInstance, Method, cli_model_arg_texts, require_modules

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256  # Inspect's default of 16 is too short for refusal judging; CPU-friendly cap

_MODEL_INFO_LOOKUP_API_KEY = MODEL_INFO_LOOKUP_API_KEY
"""The api_key Inspect passes when it builds a provider only to look up model info (no public API gives it:
:mod:`steerboard.inspect_private`)."""

_ENGINES: dict[tuple[Any, ...], Engine] = {}
_ENGINES_LOCK = threading.Lock()


class _DropMessages(logging.Filter):
    """Drops log records whose message contains any of ``needles``."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.needles)


_QUIET = False


def quiet_library_noise() -> None:
    """Silence library output an evaluation's user cannot act on (idempotent; process-wide).

    * transformers' deprecation of the ``past_key_values`` keyword, printed as a FutureWarning and again as
      a log line on the first forward pass: the engine passes the KV cache that way so it works across the
      transformers versions it supports; nothing a user runs can change it;
    * transformers' "Loading weights" progress bars (the model's and the embedding judge's): loading a
      local checkpoint takes about a second and the bars interleave with Inspect's own display.

    Set ``STEERBOARD_LIBRARY_NOISE=1`` to keep them (e.g. when debugging a transformers upgrade).
    """
    global _QUIET
    import os
    import warnings

    if _QUIET or os.environ.get("STEERBOARD_LIBRARY_NOISE", "") not in ("", "0"):
        return
    _QUIET = True
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    logging.getLogger("transformers.utils.generic").addFilter(
        _DropMessages("`past_key_values`/`cache_params` are deprecated")
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_engine(model_name: str, method: Method) -> Engine:
    """Load an engine for ``method``; methods that only hook or prompt share one per model."""
    quiet_library_noise()
    cfg = method.config
    # the settings that make two engines differ (a shared engine is keyed on them): the fields EngineConfig
    # declares engine settings (EngineConfig.ENGINE_KEYS); the batch size is not one
    settings = cfg.engine_settings()
    key = (model_name, *settings.values())

    def _load() -> Engine:
        return Engine.load(model_name, max_batch_size=cfg.max_batch_size, **settings)

    if method.private_weights:
        return _load()
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _load()
        return _ENGINES[key]


def _gather(q: queue.Queue[Any], pending: list[Any], wait: float, max_batch: int, peak: int) -> None:
    """Wait for a batch's jobs: the first blocks; then more until ``wait`` passes with no new one (at most
    ``10 * wait`` in all), ``max_batch`` are pending, or as many as ``peak`` (the most ever in flight at once:
    the client's concurrency, so waiting for more would only idle the engine)."""
    if not pending:
        pending.append(q.get())
    deadline = time.monotonic() + 10 * wait
    while len(pending) < max_batch and not (peak and len(pending) >= peak):
        try:
            pending.append(q.get(timeout=wait))
        except queue.Empty:
            break
        if time.monotonic() > deadline:
            break


@dataclass
class _Job:
    request: GenerationRequest
    future: Future[GenerationResult]
    method: Method
    submitted: float = field(default_factory=time.monotonic)


class Batcher:
    """Collects concurrent requests into engine batches, one batch at a time, on a worker thread.

    After the first request arrives it waits until ``wait_ms`` pass with no new arrival, or until the batch
    is as large as the most requests ever seen in flight at once (Inspect's ``max_connections`` caps
    that, so waiting for more would only idle the engine), so requests that Inspect issues together run
    together.
    """

    def __init__(self, engine: Engine, wait_ms: float, max_batch: int) -> None:
        self.engine = engine
        self.wait = wait_ms / 1000.0
        self.max_batch = max_batch
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.peak = 0  # most requests ever in one engine batch (grows to the client's concurrency)
        self.thread = threading.Thread(target=self._run, name="steerboard-batcher", daemon=True)
        self.thread.start()

    def submit(self, request: GenerationRequest, method: Method) -> Future[GenerationResult]:
        fut: Future[GenerationResult] = Future()
        self.queue.put(_Job(request, fut, method))
        return fut

    def _run(self) -> None:
        from steerboard import torch_thread

        pending: list[_Job] = []
        while True:
            _gather(self.queue, pending, self.wait, self.max_batch, self.peak)
            # one method per engine batch (its hooks apply to the whole batch); other methods wait
            method = pending[0].method
            batch = [j for j in pending if j.method is method][: self.max_batch]
            pending = [j for j in pending if not any(j is b for b in batch)]
            jobs = list(batch)
            self.peak = max(self.peak, len(batch))

            def more(free: int, method: Method = method, jobs: list[_Job] = jobs) -> list[GenerationRequest]:
                """Continuous batching: requests that arrived meanwhile join the running batch."""
                nonlocal pending
                while True:
                    try:
                        pending.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                take = [j for j in pending if j.method is method][: max(0, free)]
                # Each admission prefills the newcomers and re-stacks the whole KV cache (a copy of
                # every layer's keys/values), so admitting requests one by one as Inspect trickles
                # them in costs more than it saves; wait for a group unless the batch ran dry or
                # the oldest newcomer has waited ``10 * wait_ms``.
                live = self.max_batch - free
                self.peak = max(self.peak, live + len(take))
                if (
                    take
                    and live > 0
                    and len(take) < min(free, max(1, min(self.peak, self.max_batch) // 8))
                    and time.monotonic() - min(j.submitted for j in take) < 10 * self.wait
                ):
                    return []
                if take:
                    pending = [j for j in pending if not any(j is t for t in take)]
                    jobs.extend(take)
                return [j.request for j in take]

            def on_done(i: int, result: GenerationResult, jobs: list[_Job] = jobs) -> None:
                jobs[i].future.set_result(result)

            try:  # on the one torch thread (one OpenMP team; see steerboard.torch_thread)
                torch_thread.call(
                    self.engine.generate_continuous,
                    [j.request for j in batch], method.intervention(), more=more, on_done=on_done,
                )
            except BaseException as ex:  # noqa: BLE001 - surfaced to every waiting caller
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(ex)


_BATCHERS: dict[int, Batcher] = {}


def _per_engine(registry: dict[int, Any], cls: type, engine: Engine, method: Method) -> Any:
    """The engine's one ``cls`` batcher (started on first use with the method's batching options)."""
    with _ENGINES_LOCK:
        b = registry.get(id(engine))
        if b is None:
            b = registry[id(engine)] = cls(engine, method.config.batch_wait_ms, method.config.max_batch_size)
        return b


def _batcher(engine: Engine, method: Method) -> Batcher:
    return _per_engine(_BATCHERS, Batcher, engine, method)


@dataclass
class _ScoreJob:
    request: GenerationRequest
    continuations: list[list[int]]
    method: Method
    distributions: bool
    prefix_len: int
    future: Future[list[ScoredContinuation]] = field(default_factory=Future)


class LoglikBatcher:
    """Runs concurrent log-likelihood calls (one question each) as one engine batch, on a worker thread.

    Inspect scores samples concurrently, so a log-likelihood task has up to ``max_connections`` questions in
    flight; scored one by one, each question's two short forwards are mostly per-operation overhead on a CPU.
    Calls that arrive together (same method, same ``distributions`` and shared prefix) go to
    :meth:`~steerboard.engine.Engine.score_groups` as one batch. Only for an engine whose batches are invariant
    (:attr:`~steerboard.engine.Engine.invariant_batches`): a question's scores are then the same bits whichever
    questions share its batch, so the timing of concurrent calls never changes a result. The waiting rule is the
    generation :class:`Batcher`'s: until ``wait_ms`` pass with no new call, or as many calls as ever were in
    flight at once are waiting.
    """

    def __init__(self, engine: Engine, wait_ms: float, max_batch: int) -> None:
        self.engine = engine
        self.wait = wait_ms / 1000.0
        self.max_batch = max_batch
        self.queue: queue.Queue[_ScoreJob] = queue.Queue()
        self.peak = 0
        self.thread = threading.Thread(target=self._run, name="steerboard-loglik-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: _ScoreJob) -> Future[list[ScoredContinuation]]:
        self.queue.put(job)
        return job.future

    def _run(self) -> None:
        from steerboard import torch_thread

        pending: list[_ScoreJob] = []
        while True:
            _gather(self.queue, pending, self.wait, self.max_batch, self.peak)
            while True:  # calls already waiting join (so the batch can grow past the largest seen so far)
                try:
                    pending.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            self.peak = max(self.peak, len(pending))
            head = pending[0]
            batch = [
                j for j in pending
                if j.method is head.method and j.distributions == head.distributions and j.prefix_len == head.prefix_len
            ][: self.max_batch]
            pending = [j for j in pending if not any(j is b for b in batch)]
            try:  # on the one torch thread (one OpenMP team; see steerboard.torch_thread)
                scored = torch_thread.call(
                    self.engine.score_groups, [(j.request, j.continuations) for j in batch],
                    intervention=head.method.intervention(), distributions=head.distributions,
                    prefix_len=head.prefix_len,
                )
            except BaseException as ex:  # noqa: BLE001 - surfaced to every waiting caller
                for j in batch:
                    j.future.set_exception(ex)
                continue
            for j, res in zip(batch, scored):
                j.future.set_result(res)


class _ReferenceMemo:
    """The unsteered reference model's results (greedy replies, scored continuations), kept for the process.

    Every configuration of a suite that measures side effects asks the same reference engine the same questions
    (the base model's reply to each harmless prompt, its log-likelihoods of them); a suite run in one process
    (or one Ray actor) computes each once. Bounded by ``max_bytes`` (distributions count by size), least
    recently used first out. Results are what a recomputation would return: the reference engine's weights
    never change, and its batches are invariant or run one call each.
    """

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self.lock:
            item = self.items.get(key)
            if item is None:
                return None
            self.items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: tuple[Any, ...], value: Any, nbytes: int) -> None:
        with self.lock:
            if key in self.items or nbytes > self.max_bytes:
                return
            self.items[key] = (value, nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes:
                _, (_, n) = self.items.popitem(last=False)
                self.bytes -= n


REFERENCE_MEMO = _ReferenceMemo(1 << 30)


_LOGLIK_BATCHERS: dict[int, LoglikBatcher] = {}


def _loglik_batcher(engine: Engine, method: Method) -> LoglikBatcher:
    return _per_engine(_LOGLIK_BATCHERS, LoglikBatcher, engine, method)


def message_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Inspect chat messages -> ``[{"role", "content"}]`` with text content; consecutive user turns merged."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else ("system" if m.role == "system" else "user")
        text = m.text
        if out and out[-1]["role"] == role and role == "user":
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    return checked_text(out)


def checked_text(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    """``msgs`` unchanged when every content is text a tokenizer can take.

    Raises:
        ValueError: a message holds a lone surrogate (e.g. a ``\\ud800`` JSON escape): the sample fails with
            this message instead of a tokenizer ``TypeError`` (the other samples go on).
    """
    for i, m in enumerate(msgs):
        content = m.get("content")
        if isinstance(content, str):
            try:
                content.encode("utf-8")
            except UnicodeEncodeError as ex:
                raise ValueError(
                    f"message {i} ({m.get('role')}) holds a lone surrogate (U+{ord(content[ex.start]):04X} at "
                    f"character {ex.start}), which no tokenizer can take; fix the sample's text"
                ) from None
    return msgs


_REFERENCES: dict[tuple[Any, ...], tuple[Engine, Method]] = {}
"""The unsteered ``base/`` (engine, method) per model and runtime options, for reference log-likelihoods."""


def _shared_prefix_len(
    render: Callable[[list[dict[str, Any]]], list[int]], msgs: list[dict[str, Any]], ids: list[int], shared_prefix: str
) -> int:
    """How many of ``ids`` (``render(msgs)``) belong to ``msgs`` cut after ``shared_prefix``.

    The last message must start with ``shared_prefix``; the count is the common token prefix of the full prompt
    and the prompt whose last message is just ``shared_prefix``, so a token that merges across the cut is not
    counted.
    """
    last = msgs[-1]
    if not str(last.get("content", "")).startswith(shared_prefix):
        raise ValueError("shared_prefix: the last message does not start with it")
    cut = render([*msgs[:-1], {**last, "content": shared_prefix}])
    return len(os.path.commonprefix([ids, cut]))


def _end_of_turn(engine: Engine) -> int:
    """The token that ends an assistant turn under the chat template (the one after a templated reply)."""
    ids = engine.chat_ids([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], False)
    for t in ids[::-1]:
        if t in engine.eos_ids:
            return t
    return min(engine.eos_ids)


def inspect_cli_model_arg_texts() -> dict[str, str]:
    """The typed text of each ``-M key=value`` given to the ``inspect eval`` (or ``eval-set``) command now running.

    Read from the parameters of Inspect's command (click's current context: the raw ``-M`` strings, or
    ``INSPECT_EVAL_MODEL_ARGS`` when no ``-M`` was given), never from ``sys.argv``; empty outside Inspect's
    command line (the Python API, ``steerboard run``), whose values arrive as given.
    """
    import click

    ctx = click.get_current_context(silent=True)
    items = ctx.params.get("m") if ctx is not None else None
    if not items or not isinstance(items, (list, tuple)):
        return {}
    return cli_model_arg_texts([a for item in items for a in ("-M", str(item))], environ={})


class MethodModelAPI(ModelAPI):
    """Inspect provider serving one steerboard method on one local model."""

    method_class: type[Method] = Method

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        self._active_edit: dict[str, Any] | None = None  # the per-instance edit now applied (see :meth:`edit`)
        # validate everything cheap before any weights load
        # Inspect has read -M values as YAML; parse the typed text by the config's field types instead
        with _one_line_errors():
            cfg = self.method_class.config_class.from_dict(model_args, inspect_cli_model_arg_texts())
            self.method = self.method_class(cfg, model_name)
            require_modules(self.method.required_modules(), f"{self.method.name}/")
        self._engine: Engine | None = None
        self._setup_error: BaseException | None = None
        self._setup_lock = threading.Lock()
        self._ready_lock = asyncio.Lock()
        self._edit_lock = asyncio.Lock()
        self._setup: Any = None
        self.provenance: dict[str, Any] = {}  # filled once the engine is ready (see :meth:`provenance_record`)
        if api_key == _MODEL_INFO_LOOKUP_API_KEY:
            # Inspect instantiates a provider (by model string, without model_args) only to read its canonical
            # name for usage metadata; preparing it would load weights and fit the method's defaults (for dpo/
            # with non-default options: train a second adapter) for nothing.
            return  # this instance never generates (engine stays None)
        from steerboard._runtime_env import configure_openmp

        configure_openmp()  # this process will run the engine: bound OpenMP's spin before torch loads
        from steerboard.models import read_model_config, resolve_model

        if model_name not in ("", None):
            with _one_line_errors():
                # resolves the alias (fetching the embedded model once) or raises listing valid aliases
                model_config = read_model_config(resolve_model(model_name))
                if model_config is not None:  # options checked against the model's config (layer ranges)
                    self.method.check_model_config(model_config)

        def _setup() -> Engine:  # fitting/training belongs on the one torch thread (one OpenMP team)
            engine = load_engine(model_name, self.method)
            self.method.prepare(engine)
            if self.method.private_weights:
                engine.weights_changed()
            return engine

        # Weights load and the method fits on first use, not here: Inspect builds the model before it
        # constructs the tasks, and a task option error must not wait for (or follow) a DPO training run.
        self._setup = _setup
        from steerboard.methods import provenance

        # what ran, for the eval log's header (``eval.metadata["steerboard"]``, see methods/provenance.py): the
        # hook awaits this at task start, after every task option was checked, so it loads and fits then
        provenance.record(f"{self.method.name}/{model_name}", model_args, self.provenance_record)

    async def provenance_record(self) -> dict[str, Any]:
        """The method's provenance record (resolved settings, artifact sha256s, fit statistics, runtime)."""
        engine = await self.ready()
        if not self.provenance:
            self.provenance.update(self.method.provenance(engine))
        return self.provenance

    @property
    def engine(self) -> Engine:
        """The loaded, prepared engine (loads weights and fits the method on first use)."""
        if self._engine is None and self._setup is not None:
            from steerboard import torch_thread

            with self._setup_lock:
                if self._setup_error is not None:
                    raise self._setup_error
                if self._engine is None:
                    try:
                        self._engine = torch_thread.call(self._setup)
                    except Exception as ex:
                        self._setup_error = ex
                        raise
        return self._engine  # type: ignore[return-value]

    async def ready(self) -> Engine:
        """Await the engine without blocking the event loop (first caller loads and fits; others wait)."""
        if self._engine is None and self._setup is not None:
            from steerboard import torch_thread

            async with self._ready_lock:
                if self._setup_error is not None:
                    raise self._setup_error
                if self._engine is None:
                    try:
                        self._engine = await torch_thread.acall(self._setup)
                    except Exception as ex:  # every waiting sample gets the one failure, no second fit
                        self._setup_error = ex
                        raise
        return self.engine

    # -- Inspect API
    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return 32

    def collapse_user_messages(self) -> bool:
        return True

    def build_request(self, messages: list[dict[str, str]], config: GenerateConfig) -> GenerationRequest:
        msgs = self.method.messages(messages)
        ids = self.engine.chat_ids(msgs)
        return GenerationRequest(
            input_ids=ids,
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=config.temperature or 0.0,
            top_p=config.top_p,
            top_k=config.top_k,
            seed=config.seed,
            stop=tuple(config.stop_seqs or ()),
            logprobs=bool(config.logprobs),
            top_logprobs=config.top_logprobs or 0,
            meta=self.method.request_meta(self.engine, msgs, ids),
        )

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        if tools:
            raise ValueError(f"{self.method.name}/ providers do not support tool calling")
        await self.ready()
        msgs = message_dicts(input)
        request = self.build_request(msgs, config)
        request.meta.update(await self.method.async_request_meta(self.engine, self.method.messages(msgs)))
        edit_at_submit = self._active_edit
        fut = _batcher(self.engine, self.method).submit(request, self.method)
        res = await asyncio.wrap_future(fut)
        logprobs = None
        if res.logprobs is not None:
            logprobs = Logprobs(
                content=[
                    Logprob(
                        token=t.token,
                        logprob=t.logprob,
                        top_logprobs=[TopLogprob(token=a, logprob=lp) for a, _, lp in t.top] or None,
                    )
                    for t in res.logprobs
                ]
            )
        choice = ChatCompletionChoice(
            message=ChatMessageAssistant(content=res.text, model=self.model_name, source="generate"),
            stop_reason="stop" if res.finish_reason == "stop" else "max_tokens",
            logprobs=logprobs,
        )
        return ModelOutput(
            model=self.model_name,
            choices=[choice],
            # what the intervention did for this generation (gate, tokens steered); the key names the settings
            metadata={"steerboard": self._sample_record(request, res, edit_at_submit)},
            usage=ModelUsage(
                input_tokens=res.input_tokens,
                output_tokens=res.output_tokens,
                total_tokens=res.input_tokens + res.output_tokens,
            ),
            time=res.seconds,
        )

    def _sample_record(self, request: GenerationRequest, res: GenerationResult, edit: dict[str, Any] | None) -> dict[str, Any]:
        rec = {**self.method.sample_record(request, res), "settings_key": self.provenance.get("settings_key")}
        if self.method.supports_edit:
            # the per-instance edit in place when the request was queued (None: the unedited/persistent model)
            rec["edit"] = edit
            if edit is not self._active_edit:
                rec["edit_changed_during_generation"] = True
        return rec
    # -- log-likelihood (teacher forcing; see steerboard.tasks._loglik)
    @property
    def supports_loglik(self) -> bool:
        """Whether this method can score continuations (a method opts out with ``supports_loglik = False``)."""
        return bool(getattr(self.method, "supports_loglik", True))

    async def loglik(
        self,
        input: list[ChatMessage] | list[dict[str, str]],
        continuations: list[str] | list[list[int]],
        *,
        reference: bool = False,
        distributions: bool = False,
        shared_prefix: str | None = None,
        template: str = "chat",
    ) -> list[ScoredContinuation]:
        """Teacher-forced log-likelihood of each continuation as the assistant's reply to ``input``.

        The method applies exactly as in :meth:`generate`: its message rewrite, per-request meta (gates) and
        intervention hooks, on its own engine (edited weights, adapters). All continuations of one call run in
        one batch (one prefill and one decode forward), with the calls of other samples that arrive meanwhile
        where the engine's batches are invariant (:class:`LoglikBatcher`).

        Args:
            input: the conversation (Inspect messages or ``{"role", "content"}`` dicts).
            continuations: reply texts (tokenized without special tokens) or token ids.
            reference: score with the unsteered model instead: ``base/`` with this provider's runtime options
                (no message rewrite, no hooks, the model's original weights).
            distributions: also return every position's full next-token log-distribution.
            shared_prefix: text the last message starts with that many calls share (a few-shot primer): the
                engine computes its keys/values once and reuses them (with the engine's ``prefix_cache``).
            template: ``chat`` (the model's chat template; continuations are the assistant's reply) or ``plain``
                (the messages as plain text, :meth:`~steerboard.engine.Engine.plain_ids`; continuations follow the
                text directly, so give them their leading space).

        Raises:
            NotImplementedError: the method cannot return log-likelihoods.
        """
        if not self.supports_loglik:
            raise NotImplementedError(f"method {self.method.name!r} cannot return log-likelihoods")
        if template not in ("chat", "plain"):
            raise ValueError(f"template={template!r}: valid templates are chat, plain")
        from steerboard import torch_thread

        msgs = message_dicts(input) if input and not isinstance(input[0], dict) else checked_text([dict(m) for m in input])  # type: ignore[arg-type]
        if reference:
            engine, method = await torch_thread.acall(self._reference)
        else:
            engine, method = await self.ready(), self.method
        given, msgs = msgs, method.messages(msgs)
        if shared_prefix is None and msgs[-1:] == given[-1:] and msgs[:-1] != given[:-1]:
            # what the method puts before the question (a system prompt) is the same for every question: its
            # keys/values are computed once (the question is the last message, left as it was)
            shared_prefix = ""
        render = engine.chat_ids if template == "chat" else engine.plain_ids
        ids = render(msgs)
        meta = dict(method.request_meta(engine, msgs, ids))
        meta.update(await method.async_request_meta(engine, msgs))
        conts = [
            list(c) if not isinstance(c, str) else engine.tokenizer(c, add_special_tokens=False)["input_ids"]
            for c in continuations
        ]
        prefix_len = _shared_prefix_len(render, msgs, ids, shared_prefix) if shared_prefix is not None else 0
        memo_key = None
        if reference:
            memo_key = ("loglik", id(engine), tuple(ids), repr(meta), tuple(map(tuple, conts)), distributions, prefix_len)
            hit = REFERENCE_MEMO.get(memo_key)
            if hit is not None:
                return hit
        scored = await self._score(engine, method, ids, meta, conts, distributions, prefix_len)
        if memo_key is not None:
            size = sum(s.distributions.numel() * s.distributions.element_size() for s in scored if s.distributions is not None)
            REFERENCE_MEMO.put(memo_key, scored, size + 64 * sum(len(c) for c in conts))
        return scored

    async def _score(
        self, engine: Engine, method: Method, ids: list[int], meta: dict[str, Any], conts: list[list[int]],
        distributions: bool, prefix_len: int,
    ) -> list[ScoredContinuation]:
        """One question's continuations scored on ``engine`` (with other callers' where batches are invariant)."""
        from steerboard import torch_thread

        job = _ScoreJob(GenerationRequest(input_ids=list(ids), max_new_tokens=1, meta=dict(meta)), conts, method,
                        distributions, prefix_len)
        if await torch_thread.acall(lambda: engine.invariant_batches):
            return await asyncio.wrap_future(_loglik_batcher(engine, method).submit(job))
        # batches that are not invariant: one call per batch, so a result never depends on other callers
        (scored,) = await torch_thread.acall(
            engine.score_groups, [(job.request, conts)], intervention=method.intervention(),
            distributions=distributions, prefix_len=prefix_len,
        )
        return scored

    async def reference_reply(self, input: list[ChatMessage] | list[dict[str, str]], max_tokens: int) -> list[int]:
        """The unsteered model's greedy reply to ``input`` as token ids (ending with the end-of-turn token when
        the reply finished), generated through the shared engine's batcher."""
        from steerboard import torch_thread

        engine, method = await torch_thread.acall(self._reference)
        msgs = message_dicts(input) if input and not isinstance(input[0], dict) else checked_text([dict(m) for m in input])  # type: ignore[arg-type]
        request = GenerationRequest(input_ids=engine.chat_ids(msgs), max_new_tokens=max_tokens)
        memo_key = ("reply", id(engine), tuple(request.input_ids), max_tokens)
        hit = REFERENCE_MEMO.get(memo_key)
        if hit is not None:
            return list(hit)
        res = await asyncio.wrap_future(_batcher(engine, method).submit(request, method))
        ids = list(res.token_ids)
        if res.finish_reason == "stop" and engine.eos_ids:
            ids.append(_end_of_turn(engine))
        REFERENCE_MEMO.put(memo_key, tuple(ids), 64 * len(ids))
        return ids

    def _reference(self) -> tuple[Engine, Method]:
        """(engine, method) of the unsteered model: ``base/`` with this provider's runtime options (torch thread)."""
        from steerboard.methods.base import BaseMethod, MethodConfig

        cfg = self.method.config
        # the options every method takes (EngineConfig: runtime, precision, determinism): the reference runs
        # exactly as the method's own engine does, without the method
        shared = cfg.engine_options()
        key = (self.model_name, *sorted((k, repr(v)) for k, v in shared.items()))
        with _ENGINES_LOCK:
            ref = _REFERENCES.get(key)
        if ref is None:
            base_cfg = MethodConfig(**shared)
            method = BaseMethod(base_cfg, self.model_name)
            engine = load_engine(self.model_name, method)
            method.prepare(engine)
            with _ENGINES_LOCK:
                ref = _REFERENCES.setdefault(key, (engine, method))
        return ref

    async def count_tokens(self, input: str | list[ChatMessage], config: GenerateConfig | None = None) -> int:
        """Exact count with the model's own tokenizer and chat template (Inspect's default uses tiktoken,
        which downloads its vocabulary and so fails offline)."""
        await self.ready()
        if isinstance(input, str):
            return len(self.engine.tokenizer(input, add_special_tokens=False)["input_ids"])
        return len(self.engine.chat_ids(self.method.messages(message_dicts(input))))

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` under the model's tokenizer, special tokens left out (the engine is ready:
        called on ids a :meth:`loglik` or :meth:`reference_reply` call returned)."""
        return str(self.engine.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    # -- per-instance editing (the SafeEdit protocol)
    @property
    def supports_edit(self) -> bool:
        return self.method.supports_edit

    @property
    def edit_prompt_suffix(self) -> str:
        """Text the method appends to the prompts asked under an edit (``""``: none)."""
        return str(getattr(self.method, "edit_prompt_suffix", "") or "")

    @contextlib.asynccontextmanager
    async def edit(self, instance: EditInstance) -> AsyncIterator[dict[str, Any]]:
        """Apply a per-instance edit for the duration of the block (serialized across samples).

        Raises:
            NotImplementedError: the method cannot edit (check ``supports_edit`` first).
        """
        if not self.method.supports_edit:
            raise NotImplementedError(f"method {self.method.name!r} does not support per-instance editing")
        from steerboard import torch_thread

        await self.ready()
        async with self._edit_lock:
            cm = self.method.edit(self.engine, instance)
            stats = await torch_thread.acall(cm.__enter__)
            self.engine.weights_changed()
            self._active_edit = {"id": instance.id, "layer": stats.get("layer"), "module": stats.get("module")}
            try:
                yield stats
            finally:
                self._active_edit = None
                await torch_thread.acall(cm.__exit__, None, None, None)
                self.engine.weights_changed()


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Re-raise a ValueError (a bad ``-M`` option, an unknown model) as a one-line user error: ``inspect eval``
    then prints its message alone instead of a traceback (``steerboard`` already prints a ValueError's)."""
    from steerboard.errors import UserError

    try:
        yield
    except UserError:
        raise
    except ValueError as ex:
        raise UserError(str(ex)) from ex


def method_class(method_path: str) -> type[Method]:
    """Import ``module:Class`` and check it is a Method subclass."""
    module, _, attr = method_path.partition(":")
    method_cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(method_cls, type) and issubclass(method_cls, Method)):
        raise TypeError(f"{method_path} is not a steerboard Method subclass")
    return method_cls


def provider_class(method_path: str) -> type[MethodModelAPI]:
    """Import ``module:Class`` (a Method subclass) and return a provider class bound to it."""
    method_cls = method_class(method_path)
    return type(f"{method_cls.__name__}API", (MethodModelAPI,), {"method_class": method_cls})
