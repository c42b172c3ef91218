"""Helpers shared by the activation-steering methods (``sae/``, ``actadd/``).

* the gate options both methods accept (:class:`GatedSteeringConfig`);
* residual-stream capture that stops the forward pass at the hooked layer (no wasted later layers);
* teacher-forced (prompt, response) token sequences under the chat template;
* the steering mask (which positions get steered: ``steer_on``) and the per-row gate (:func:`gated_intervention`);
* the gate probe on prompt activations (a :class:`steerboard.linear.LinearProbe`): its key, shipped path and
  loading (its fit, the thresholds' choice and dev-split screening are training code:
  :mod:`steerboard.methods.training.gates`);
* :class:`HookSteering`, the apply side, whose interventions declare their ``preamble_key``
  (:class:`SteeringIntervention`).

Torch is imported inside functions (the registry and CLI import this module at start-up).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerboard.linear import load_or_fit_linear
from steerboard.methods.base import MethodConfig, detail_field

if TYPE_CHECKING:
    import torch

    from steerboard.engine import BatchState, Engine, Intervention

SteerOn = Literal["prompt", "generated", "both"]
GATE_META_KEY = "steer_gate"
GATE_DECISION_KEY = "_steer_gate_decided"  # the gate's decision for a request, written by the hook at prefill
DECODE_STEERED_KEY = "_decode_steps_steered"  # decode forward passes in which the hook steered the request
GATE_FEATURES: tuple[str, ...] = ("mean", "last", "mean_last")
"""How the gate probe pools the hooked layer's prompt residual: mean over the user span (chat-template tail
included), the last prompt token, or both concatenated."""
DEFAULT_GATE_FEATURE = "mean_last"
PROBE_VERSION = "gate-probe-v2"


PRESET_THRESHOLD_KEYS: dict[str, str] = {
    "probe": "gate_threshold", "classifier": "classifier_threshold", "both": "both_threshold",
}
"""Which preset key holds each gate's threshold."""
CLF_SCORE_KEY = "gate_clf_score"
"""Request meta key carrying the prompt-text classifier's P(harmful) to the in-hook gate (``gate=both``)."""


def combine_gate_scores(p_probe: float, p_clf: float) -> float:
    """``gate=both``: the mean of the probe's and the classifier's log-odds, as a probability.

    Equal weights, no extra fit: the two gates read different views of the prompt (the steered model's
    residual, a sentence encoder's embedding of the text), and on the gate data's dev split this rule
    separates harmful from benign prompts as well as a logistic regression on both feature sets together
    (dev AUC 0.968 against 0.969; probe alone 0.957, classifier alone 0.943).
    """
    eps = 1e-6

    def logit(p: float) -> float:
        p = min(max(float(p), eps), 1.0 - eps)
        return math.log(p / (1.0 - p))

    z = 0.5 * (logit(p_probe) + logit(p_clf))
    return 1.0 / (1.0 + math.exp(-z))


def preset_gate_threshold(preset: dict[str, Any], gate: str) -> float:
    """The preset's threshold for ``gate`` (0.5 when the preset has none)."""
    return float(preset.get(PRESET_THRESHOLD_KEYS.get(gate, "gate_threshold"), 0.5))


@dataclass
class GatedSteeringConfig(MethodConfig):
    """The conditional-steering gate options shared by ``sae/`` and ``actadd/`` (``-M key=value``).

    Unset options come from the method's preset (see :meth:`resolve_gate`).

    Attributes:
        gate: ``none`` (always steer), ``probe`` (steer only prompts a probe on the hooked layer's prompt
            residual flags) or ``classifier`` (steer only prompts a text classifier flags: MiniLM prompt
            embedding + logistic regression, :mod:`steerboard.methods.prompt_gate`) or ``both`` (steer when
            the mean of the two's log-odds clears the threshold).
        gate_threshold: gate probability at or above which a prompt is steered (the preset's values --
            ``gate_threshold`` for the probe, ``classifier_threshold`` for the classifier, ``both_threshold``
            for both -- were chosen on the gate data's dev split, see ``steerboard sae gate``).
        gate_feature: how the probe pools the hooked layer's prompt residual: ``mean`` (user span),
            ``last`` (last prompt token) or ``mean_last`` (both; default).
    """

    gate: Literal["none", "probe", "classifier", "both"] | None = None
    gate_threshold: float | None = None
    gate_feature: Literal["mean", "last", "mean_last"] | None = detail_field(None)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gate_threshold is not None and not 0.0 <= self.gate_threshold <= 1.0:
            raise ValueError(f"-M gate_threshold must be in [0, 1], got {self.gate_threshold}")

    def resolve_gate(self, preset: dict[str, Any]) -> tuple[str, float, str]:
        """(gate, threshold, pooling) from these options, else ``preset``, else the defaults.

        Raises:
            ValueError: the preset names an unknown pooling.
        """
        gate = self.gate or preset.get("gate", "none")
        threshold = self.gate_threshold if self.gate_threshold is not None else preset_gate_threshold(preset, gate)
        return gate, threshold, valid_gate_feature(self.gate_feature or preset.get("gate_feature", DEFAULT_GATE_FEATURE))


def read_preset(preset_dir: Path, name: str) -> dict[str, Any]:
    """A preset from ``preset_dir/<name>.json``, or from ``name`` when it is a path to a ``.json`` file.

    Raises:
        ValueError: unknown preset (lists the valid ones).
    """
    path = Path(name).expanduser() if name.endswith(".json") else preset_dir / f"{name}.json"
    if not path.is_file():
        valid = sorted(p.stem for p in preset_dir.glob("*.json"))
        raise ValueError(f"-M preset={name!r}: unknown preset; valid presets: {', '.join(valid)} (or a path to a .json)")
    return json.loads(path.read_text())


class _StopForward(Exception):
    """Raised by a capture hook to end the forward pass once the hooked layer has run."""


def residuals(
    engine: Engine,
    seqs: Sequence[Sequence[int]],
    layer: int,
    *,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "activations",
) -> list[torch.Tensor]:
    """Residual stream after decoder block ``layer`` for each sequence, ``[len(seq), hidden]`` float32 on CPU.

    The forward pass is cut right after block ``layer`` (a hook raises once it has the output), so
    collecting a middle layer costs about ``(layer + 1) / n_layers`` of a full pass.
    """
    from steerboard.engine import hooks

    name = engine.layer_module_name(layer)
    out: list[torch.Tensor] = []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # length-bucketed: less padding
    result: dict[int, Any] = {}
    starts = list(range(0, len(order), batch_size))
    it: Any = starts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(starts, desc=desc, unit="batch")
    for b in it:
        idx = order[b : b + batch_size]
        chunk = [seqs[i] for i in idx]
        box: dict[str, Any] = {}

        def grab(_mod: Any, _args: Any, output: Any, box: dict[str, Any] = box) -> None:
            box["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        @contextlib.contextmanager
        def capture(_state: BatchState) -> Iterator[None]:
            with hooks(engine.model, {name: grab}):
                yield

        with contextlib.suppress(_StopForward):
            engine.forward(chunk, intervention=capture)
        h = box["h"]
        width = h.shape[1]
        for row, (j, s) in enumerate(zip(idx, chunk)):
            result[j] = h[row, width - len(s) :].float().cpu()
    for i in range(len(seqs)):
        out.append(result[i])
    return out


def prompt_ids(engine: Engine, prompt: str) -> list[int]:
    """Chat-templated ids of a single user turn, ending with the assistant header."""
    return engine.chat_ids([{"role": "user", "content": prompt}])


def pair_ids(engine: Engine, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids with the assistant header, response ids) for teacher forcing."""
    p = prompt_ids(engine, prompt)
    r = engine.tokenizer(response, add_special_tokens=False)["input_ids"]
    return p, list(r)


def position_mask(state: BatchState, seq_len: int, steer_on: SteerOn, device: Any) -> torch.Tensor | None:
    """``[rows, seq_len, 1]`` float mask of the positions to steer in this forward pass, or None = none.

    Prompt positions are the real (non-pad) prompt tokens during prefill; generated positions are the
    decode steps. Which rows are steered (the gate) is applied by :func:`gated_intervention`.
    """
    import torch

    if state.phase == "prefill" and steer_on == "generated":
        return None
    if state.phase == "decode" and steer_on == "prompt":
        return None
    mask = state.attention_mask
    if state.phase == "prefill" and mask is not None and mask.shape[1] >= seq_len:
        return mask[:, -seq_len:].to(device=device, dtype=torch.float32).unsqueeze(-1)
    return torch.ones(len(state.rows), seq_len, 1, device=device)


# ---------------------------------------------------------------------- gate probe
def check_gate_feature(feature: str) -> None:
    """Raises ValueError naming the valid pooling choices."""
    if feature not in GATE_FEATURES:
        raise ValueError(f"gate_feature {feature!r} is unknown; valid: {', '.join(GATE_FEATURES)}")


def valid_gate_feature(feature: str) -> str:
    """``feature`` if it is a valid gate pooling (e.g. read from a preset), else ValueError."""
    check_gate_feature(feature)
    return feature


def pool_span(span: torch.Tensor, feature: str) -> torch.Tensor:
    """Pool one prompt's residuals ``[tokens, hidden]`` (user span to the end of the prompt) into a gate feature.

    ``mean`` -> ``[hidden]``; ``last`` (the final prompt token) -> ``[hidden]``; ``mean_last`` -> ``[2 * hidden]``.
    """
    import torch

    check_gate_feature(feature)
    span = span.float()
    if feature == "mean":
        return span.mean(0)
    if feature == "last":
        return span[-1]
    return torch.cat([span.mean(0), span[-1]])


def prompt_features(
    engine: Engine, prompts: Sequence[str], layer: int, feature: str = "mean", **kw: Any
) -> torch.Tensor:
    """Gate features of ``prompts`` at ``layer`` (pooled from the user span on; see :func:`pool_span`)."""
    import torch

    check_gate_feature(feature)
    off = user_span_offset(engine)
    seqs = [prompt_ids(engine, p) for p in prompts]
    hs = residuals(engine, seqs, layer, **kw)
    return torch.stack([pool_span(h[min(off, h.shape[0] - 1) :], feature) for h in hs])


# ---------------------------------------------------------------------- gated steering
def user_span_offset(engine: Engine) -> int:
    """Tokens of chat template before the user's text (identical for every single-turn prompt)."""
    return len(engine.template_prefix)


@dataclass(frozen=True)
class SteeringIntervention:
    """An engine intervention (see :data:`steerboard.engine.Intervention`) with its declared ``preamble_key``.

    Attributes:
        enter: ``state -> context manager`` entered around each batch (the hooks).
        preamble_key: ``requests -> Hashable | None``: for per-position steering, a key under which the engine
            may compute the chat template's preamble once under these hooks and reuse it (None: never reuse).
    """

    enter: Intervention
    preamble_key: Callable[[Sequence[Any]], Hashable | None] | None = None

    def __call__(self, state: BatchState) -> contextlib.AbstractContextManager[Any]:
        return self.enter(state)


def gated_intervention(
    model: Any,
    module_name: str,
    steer: Any,
    steer_on: SteerOn,
    gate_fn: Any | None,
) -> Intervention:
    """Steering hook with an optional per-row gate decided at prefill.

    Args:
        model: the model the hook goes on.
        module_name: decoder block to hook.
        steer: ``(hidden, mask) -> hidden``.
        steer_on: which positions to steer.
        gate_fn: ``(state, hidden) -> list[bool]`` (one per live row at prefill), or None (steer all).
            A request's ``meta["steer_gate"]`` overrides it.
    """
    from steerboard.engine import hooks, map_hidden
    
    @contextlib.contextmanager
    def intervention(state: BatchState) -> Iterator[None]:
        gates: dict[int, bool] = {}

        def hook(_mod: Any, _args: Any, output: Any) -> Any:
            import torch

            h = output[0] if isinstance(output, tuple) else output
            if state.phase == "prefill":
                override = state.row_meta(GATE_META_KEY, None)
                need = [i for i, o in enumerate(override) if o is None]
                computed = gate_fn(state, h, need) if (gate_fn is not None and need) else {}
                for i, r in enumerate(state.rows):
                    o = override[i]
                    gates[r] = bool(o) if o is not None else bool(computed.get(i, True))
                    state.requests[r].meta[GATE_DECISION_KEY] = gates[r]
            live_gate = [gates.get(r, True) for r in state.rows]
            mask = position_mask(state, h.shape[1], steer_on, h.device)
            if mask is None or not any(live_gate):
                return None
            if state.phase == "decode":  # per-sample record: decode steps that ran steered
                for r, g in zip(state.rows, live_gate):
                    if g:
                        meta = state.requests[r].meta
                        meta[DECODE_STEERED_KEY] = meta.get(DECODE_STEERED_KEY, 0) + h.shape[1]
            if not all(live_gate):
                mask = mask * torch.tensor(live_gate, dtype=mask.dtype, device=mask.device).view(-1, 1, 1)
            return map_hidden(output, lambda x: steer(x, mask.to(x.dtype)))

        with hooks(model, {module_name: hook}):
            yield

    return intervention


def probe_gate_fn(
    probe: Any, span_offset: int, threshold: float, feature: str = "mean", clf_key: str | None = None
) -> Any:
    """Gate from the pre-steering residual at prefill: each row's user span pooled (``feature``) -> probe.

    A row is steered when the probe's probability is ``>= threshold``. With ``clf_key`` (``gate=both``) the
    probability compared is :func:`combine_gate_scores` of the probe's and the classifier score each request
    carries in ``meta[clf_key]``; a request without it is an error (the provider sets it per request).
    """
    check_gate_feature(feature)

    def fn(state: BatchState, h: torch.Tensor, rows: list[int]) -> dict[int, bool]:
        import torch

        width = h.shape[1]
        feats = []
        for i in rows:
            start = width - state.prompt_lengths[state.rows[i]] + span_offset
            feats.append(pool_span(h[i, min(start, width - 1) :], feature))
        p = probe.predict_proba(torch.stack(feats)).tolist()
        if clf_key is not None:
            clf = state.row_meta(clf_key, None)
            missing = [i for i in rows if clf[i] is None]
            if missing:
                raise ValueError(
                    f"gate=both: {len(missing)} request(s) lack meta[{clf_key!r}] (the prompt-text classifier's "
                    "score); generate through the provider, or build the requests with HookSteering.with_gate_meta"
                )
            p = [combine_gate_scores(v, clf[i]) for i, v in zip(rows, p)]
        return {i: bool(v >= threshold) for i, v in zip(rows, p)}

    return fn


def gate_data(split: Literal["fit", "dev"]) -> tuple[list[str], list[str]]:
    """(harmful, benign) prompts of ``split`` for the gate: :func:`fitdata.gate_harmful_prompts` /
    :func:`fitdata.gate_benign_prompts` (long requests, short direct questions, harmless prompts that
    sound harmful, ordinary requests)."""
    from steerboard.methods import fitdata

    return fitdata.gate_harmful_prompts(split), fitdata.gate_benign_prompts(split)


def probe_key(engine: Engine, layer: int, feature: str = DEFAULT_GATE_FEATURE) -> str:
    """Hash of (probe version, model, layer, pooling, fit data): names the cached or shipped probe."""
    from steerboard.models import ALIASES, resolve_model

    src = str(engine.source)
    model = Path(resolve_model(src) if src in ALIASES else src).name  # alias and its directory: one key
    harmful, benign = gate_data("fit")
    key = json.dumps([PROBE_VERSION, model, layer, feature, harmful, benign])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def shipped_probe_path(engine: Engine, layer: int, feature: str = DEFAULT_GATE_FEATURE) -> Path:
    """Where a shipped probe for (model, layer, feature, fit data) lives inside the package."""
    return Path(__file__).parent / "artifacts" / f"gate-probe-{probe_key(engine, layer, feature)}.json"


def load_or_fit_probe(engine: Engine, layer: int, feature: str = DEFAULT_GATE_FEATURE) -> Any:
    """The gate probe for ``engine``'s model at ``layer`` pooling ``feature``.

    Looked up in the shipped ``artifacts/gate-probe-<key>.json``, then the cache, else fitted (on the
    gate data's ``fit`` split, a minute or two on CPU) and cached; ``<key>`` = :func:`probe_key`. The fit is
    this module's one lazy call into training code
    (:func:`steerboard.methods.training.gates.fit_gate_probe`).
    """
    from steerboard.paths import cache_dir

    check_gate_feature(feature)
    key = probe_key(engine, layer, feature)

    def fit() -> Any:
        from steerboard.methods.training.gates import fit_gate_probe

        return fit_gate_probe(engine, layer, feature)

    return load_or_fit_linear(
        shipped_probe_path(engine, layer, feature), cache_dir("artifacts", "gate-probe") / f"{key}.json", fit
    )


class HookSteering:
    """The apply side shared by ``sae/`` and ``actadd/``: one steerer hooked on one block, optionally gated.

    A method using it sets ``self.resolved`` (with ``gate``, ``gate_threshold``, ``gate_feature``, ``steer_on``)
    and calls
    :meth:`bind_steering` at the end of ``prepare``.
    """

    name: str
    resolved: Any
    steerer: Any = None
    probe: Any = None
    _module: str | None = None
    _model: Any = None
    _span_offset: int = 0

    def check_model_config(self, model_config: dict[str, Any]) -> None:
        self.check_layer(self.resolved.layer, model_config)  # type: ignore[attr-defined]  # Method.check_layer

    def layer_count(self, engine: Engine) -> int:
        """The model's number of decoder layers, after checking that the steered layer is one of them."""
        layer = self.resolved.layer
        n_layers = len(engine.decoder_layers())
        if not 0 <= layer < n_layers:
            raise ValueError(f"-M layer={layer}: the model has {n_layers} decoder layers (0..{n_layers - 1})")
        return n_layers

    def required_modules(self) -> dict[str, str]:
        """The text-classifier gate (``gate=classifier|both``) needs the sentence encoder (the ``judges`` extra)."""
        if self.resolved.gate in ("classifier", "both"):
            return {"sentence_transformers": "judges"}
        return {}

    def bind_steering(self, engine: Engine, steerer: Any, layer: int) -> None:
        """Attach ``steerer`` (an object with ``apply(hidden, mask)``) to block ``layer`` of ``engine``."""
        self.steerer = steerer
        self._module = engine.layer_module_name(layer)
        self._bound = (engine, layer)  # for :meth:`gate_artifacts`
        self._model = engine.model
        self.classifier_gate = None
        gate = self.resolved.gate
        if gate in ("probe", "both"):
            self.probe = load_or_fit_probe(engine, layer, self.resolved.gate_feature)
            self._span_offset = user_span_offset(engine)
        if gate in ("classifier", "both"):
            from steerboard.methods.prompt_gate import ClassifierGate

            # with gate=both only its score is used; the threshold applies to the combined score in the hook
            self.classifier_gate = ClassifierGate(self.resolved.gate_threshold)

    async def async_request_meta(self, engine: Engine, messages: list[dict[str, str]]) -> dict[str, Any]:
        """With ``gate=classifier``: the gate's decision for this prompt (``meta["steer_gate"]``) and its score;
        with ``gate=both``: the classifier's score (``meta["gate_clf_score"]``), combined with the probe's in the hook."""
        if getattr(self, "classifier_gate", None) is None:
            return {}
        from steerboard.methods.prompt_gate import last_user_text

        fire, p = await self.classifier_gate.adecide(last_user_text(messages))  # type: ignore[union-attr]
        if self.resolved.gate == "both":
            return {CLF_SCORE_KEY: p}
        return {GATE_META_KEY: fire, "gate_score": p}

    def gate_meta(self, prompts: Sequence[str]) -> list[dict[str, Any]]:
        """Synchronous :meth:`async_request_meta` for single-turn prompts (scripts calling the engine directly)."""
        if getattr(self, "classifier_gate", None) is None:
            return [{} for _ in prompts]
        scores = self.classifier_gate.scores(prompts)  # type: ignore[union-attr]
        if self.resolved.gate == "both":
            return [{CLF_SCORE_KEY: p} for p in scores]
        t = self.classifier_gate.threshold  # type: ignore[union-attr]
        return [{GATE_META_KEY: p >= t, "gate_score": p} for p in scores]

    def with_gate_meta(self, requests: Sequence[Any], prompts: Sequence[str]) -> list[Any]:
        """``requests`` (one per single-turn prompt) with :meth:`gate_meta` merged into each one's meta, as the
        provider adds it; the same requests when no text-classifier gate is on."""
        import dataclasses

        if getattr(self, "classifier_gate", None) is None:
            return list(requests)
        return [dataclasses.replace(r, meta={**r.meta, **m}) for r, m in zip(requests, self.gate_meta(prompts), strict=True)]

    def gate_artifacts(self) -> dict[str, dict[str, Any]]:
        """``{kind: {"path", "sha256"}}`` of the gate's probe and/or classifier files (empty without a gate)."""
        from steerboard.methods.base import file_sha256
        from steerboard.paths import cache_dir

        out: dict[str, dict[str, Any]] = {}
        bound = getattr(self, "_bound", None)
        gate = self.resolved.gate
        if bound is not None and gate in ("probe", "both"):
            engine, layer = bound
            shipped = shipped_probe_path(engine, layer, self.resolved.gate_feature)
            key = probe_key(engine, layer, self.resolved.gate_feature)
            path = shipped if shipped.is_file() else cache_dir("artifacts", "gate-probe") / f"{key}.json"
            out["gate_probe"] = {"path": str(path), "sha256": file_sha256(path)}
        if gate in ("classifier", "both"):
            from steerboard.methods.prompt_gate import classifier_key, shipped_classifier_path

            shipped = shipped_classifier_path()
            path = shipped if shipped.is_file() else cache_dir("artifacts", "gate-classifier") / f"{classifier_key()}.json"
            out["gate_classifier"] = {"path": str(path), "sha256": file_sha256(path)}
        return out

    def sample_record(self, request: Any, result: Any) -> dict[str, Any]:
        """Per generation: gate decision and score, prompt tokens steered, decode steps steered."""
        meta = request.meta
        r = self.resolved
        fired = meta.get(GATE_DECISION_KEY, meta.get(GATE_META_KEY, True))
        fired = bool(fired) if fired is not None else True
        rec: dict[str, Any] = {
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "gate": r.gate,
            "steered": fired,
            "prompt_tokens_steered": result.input_tokens if fired and r.steer_on in ("prompt", "both") else 0,
            "decode_steps_steered": int(meta.get(DECODE_STEERED_KEY, 0)),
        }
        for k in ("gate_score", CLF_SCORE_KEY):
            if meta.get(k) is not None:
                rec[k] = float(meta[k])
        return rec

    def intervention(self) -> SteeringIntervention:
        if self.steerer is None or self._module is None:
            raise RuntimeError(f"{self.name}/: prepare(engine) must run before generation")
        gate_fn = None
        if self.resolved.gate in ("probe", "both"):
            gate_fn = probe_gate_fn(
                self.probe, self._span_offset, self.resolved.gate_threshold, self.resolved.gate_feature,
                clf_key=CLF_SCORE_KEY if self.resolved.gate == "both" else None,
            )
        iv = gated_intervention(self._model, self._module, self.steerer.apply, self.resolved.steer_on, gate_fn)
        if self.resolved.gate != "none":
            return SteeringIntervention(iv)  # a gate makes rows differ: no shared preamble
        key = ("steer", id(self), id(self.steerer), self._module, self.resolved.steer_on)

        def preamble_key(requests: Sequence[Any]) -> Hashable | None:
            """Per-position steering, the same for every row unless a request's meta turns it off: then the
            engine may compute the chat preamble once under these hooks."""
            return key if all(r.meta.get(GATE_META_KEY) in (None, True) for r in requests) else None

        return SteeringIntervention(iv, preamble_key)


_MOVED_TO_TRAINING = frozenset({
    "fit_gate_probe", "GatePoint", "gate_curve", "choose_gate_threshold", "DEFAULT_THRESHOLD_GRID", "choose_gate",
    "OutcomePoint", "outcome_curve", "choose_outcome_threshold", "choose_gate_by_outcome", "gate_scores",
    "write_gate_to_preset", "distinct_n", "is_degenerate", "mean", "ScreenResult", "judge_refusal_flags", "screen",
})


def __getattr__(name: str) -> Any:
    """The gate fitting and selection names, moved to :mod:`steerboard.methods.training.gates`, still resolve here
    (that module is imported only when one of them is asked for)."""
    if name in _MOVED_TO_TRAINING:
        from steerboard.methods.training import gates

        return getattr(gates, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
