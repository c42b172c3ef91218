"""The method plug-in API (config dataclass + fit + apply) and the ``base/`` control method.

A method is a subclass of :class:`Method` with a :class:`MethodConfig` subclass. The harness turns
every method into an Inspect model provider ``<name>/<model>`` (see ``steerboard.methods.provider``);
a method only says how to *fit* its artifact (``prepare``) and how to *apply* it (``messages``,
``intervention``, weight changes, or ``edit`` for per-instance editing). Generation stays in the
shared :class:`steerboard.engine.Engine`.

To add a method from another package, write one module with a config and a ``Method`` subclass and
add one entry-point line to that package::

    [project.entry-points."steerboard.methods"]
    mymethod = "mypkg.mymethod:MyMethod"

``inspect eval ... --model mymethod/smollm2-135m -M key=value`` then works (after the package is
(re)installed: entry points are read at install time), and ``steerboard run`` suites can name it.
``docs/methods.md`` is the method author's guide, with a complete example package for each kind of method
(messages, activation hook, weight edit) in ``examples/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union, get_args, get_origin

if TYPE_CHECKING:
    from steerboard.engine import Engine, Intervention

C = TypeVar("C", bound="MethodConfig")


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


def _number(value: Any, tp: type[int] | type[float], key: str) -> int | float:
    """An ``int`` (decimal text, or a whole number) or ``float`` option value; booleans are not numbers."""
    if tp is int and isinstance(value, str) and not value.strip().lstrip("+-").isdecimal():
        raise ValueError(f"-M {key}={value!r}: expected an integer (decimal digits)")
    whole = not (tp is int and isinstance(value, float) and not value.is_integer())
    if not isinstance(value, bool) and whole:
        try:
            return tp(value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"-M {key}={value!r}: expected {'an integer' if tp is int else 'a number'}")
def stable_hash(obj: Any, n: int = 16) -> str:
    """First ``n`` hex digits of the sha256 of ``obj`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: str | Path | None) -> str | None:
    """sha256 of a file, or of a folder's files (relative path + content, sorted); None when absent.

    Cached per (path, size, mtime), so a run that records the same artifact twice hashes it once.
    """
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        return None
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    st = [f.stat() for f in files]
    key = (str(p.resolve()), sum(s.st_size for s in st), max((s.st_mtime for s in st), default=0.0))
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Parse one ``-M`` value by a config field's declared type.

    Text (the command line's raw value) is parsed by the field's type alone: a ``str`` field keeps it
    verbatim, ``int`` takes decimal digits (``012`` is 12), ``float`` any Python float literal, ``bool``
    ``true/false/yes/no/1/0``, a ``list[...]`` field splits it on commas. Values that are already typed (a
    suite file, ``--model-config``, the Python API) must match the field: a ``str`` field never turns a
    boolean or number into text, since YAML may already have rewritten what was typed (``yes`` -> True,
    ``012`` -> 10); it names the quoting that keeps the text instead.
    """
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in get_args(tp):
                return None
        errors = []
        for a in args:
            try:
                return _coerce(value, a, key)
            except (TypeError, ValueError) as ex:
                errors.append(str(ex))
        if len(args) == 1 and errors:  # Optional[X]: X's own message names the valid values
            raise ValueError(errors[0])
        raise ValueError(f"-M {key}={value!r}: expected {tp}")
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ValueError(f"-M {key}={value!r}: must be one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (Any,)
        items = value.split(",") if isinstance(value, str) else list(value if isinstance(value, (list, tuple)) else [value])
        items = [i.strip() if isinstance(i, str) else i for i in items if not (isinstance(i, str) and not i.strip())]
        coerced = [_coerce(i, inner, key) for i in items]
        return tuple(coerced) if origin is tuple else coerced
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"-M {key}={value!r}: expected true or false")
    if tp in (int, float):
        return _number(value, tp, key)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            # Inspect splits an unquoted value on commas; joining the pieces restores the exact text
            return ",".join(value)
        raise ValueError(
            f"-M {key}={value!r}: expected text, got {_type_name(value)} (a YAML reading of what was typed); "
            f"quote the value to keep it as text, e.g. {key}: \"yes\" in a suite file"
        )
    return value


_INSPECT_MODEL_ARG_FLAGS = ("-M", "--model-arg")
_INSPECT_MODEL_ARGS_ENV = "INSPECT_EVAL_MODEL_ARGS"


def cli_model_arg_texts(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The raw text of each ``-M key=value`` on this process's command line (last one wins).

    ``inspect eval`` reads ``-M`` values as YAML before a provider sees them (``yes`` -> True, ``012`` -> 10,
    ``a, b`` -> a list); the command line still holds what was typed. Also read: Inspect's
    ``INSPECT_EVAL_MODEL_ARGS`` environment variable (whitespace-separated ``key=value`` items).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    items = list(environ.get(_INSPECT_MODEL_ARGS_ENV, "").split())
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in _INSPECT_MODEL_ARG_FLAGS and i + 1 < len(argv):
            items.append(argv[i + 1])
            i += 2
            continue
        if tok.startswith("--model-arg="):
            items.append(tok[len("--model-arg=") :])
        elif tok.startswith("-M") and len(tok) > 2 and not tok.startswith("--"):
            items.append(tok[2:])
        i += 1
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if sep:
            out[k.replace("-", "_")] = v
    return out


def _yaml_readings(text: str) -> list[Any]:
    """The values Inspect's ``-M`` parsing can make of ``text`` (YAML, then a comma split of a plain string)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    out = [value]
    if isinstance(value, str):
        parts = value.split(",")
        out.append(parts if len(parts) > 1 else parts[0])
    return out


def restore_cli_text(values: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
    """``values`` with each value replaced by the command line's raw text for its key, where that text is what
    the value was read from (Inspect's YAML reading of it equals the value; otherwise the value came from
    elsewhere, e.g. ``--model-config``, and is kept)."""
    out = dict(values)
    for k, v in values.items():
        text = texts.get(k)
        if text is not None and not isinstance(v, str) and any(r == v and type(r) is type(v) for r in _yaml_readings(text)):
            out[k] = text
    return out


_OUT_OF_BOUND: dict[str, Callable[[float, float], bool]] = {
    ">": lambda value, limit: not value > limit,  # also rejects NaN
    ">=": lambda value, limit: value < limit,
}
"""Whether a value breaks a lower bound, per comparison of :meth:`MethodConfig.check_bounds`."""


@dataclass
class MethodConfig:
    """Options every method accepts through ``-M key=value``; subclasses add their own fields.

    Validation lives in ``__post_init__`` (so a config is valid whenever it exists) and
    :meth:`from_dict` rejects unknown keys, naming the valid ones, before any model work.

    ``-M`` values are parsed by each field's declared type, from the text the user typed: a ``str`` field
    keeps it verbatim (``-M system_prompt=yes`` is ``"yes"``; ``-M system_prompt="Be safe, and kind."`` keeps
    its comma), an ``int`` is decimal (``012`` is 12), a list splits on commas (``features=012,7`` is
    ``[12, 7]``), a ``bool`` is ``true/false/yes/no/1/0``. ``inspect eval`` reads ``-M`` as YAML first; the
    provider recovers the typed text from the command line (:func:`cli_model_arg_texts`). Values from a suite
    file or ``--model-config`` are YAML as written there: quote text that YAML would read otherwise
    (``system_prompt: "yes"``); a ``str`` field rejects a boolean or number rather than guess its spelling.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``; default picks the best available.
        dtype: ``auto`` (float32 on CPU, bfloat16 on accelerators), ``float32``, ``bfloat16``, ``float16``.
        matmul_dtype: ``auto`` (bfloat16 linear layers for a float32 model on a CPU with native bf16 --
            AMX/AVX512-BF16 -- else the model's dtype), ``float32`` (exact float32) or ``bfloat16``.
        head_screen: with bfloat16 matmuls, choose greedy tokens by screening the vocabulary in bfloat16
            and re-scoring the near-best in float32 (see :func:`steerboard.precision.screened_greedy`);
            ``false`` runs the whole output head in float32.
        deterministic: batch-invariant generation (default): a completion does not depend on which requests
            share its batch, so the same run repeats exactly; ``false`` is a little faster but near-tie
            tokens may flip between runs (see ``steerboard.engine.Engine``).
        max_batch_size: most sequences per forward pass.
        batch_wait_ms: how long the batcher waits for more concurrent requests before starting a batch.
        trust_remote_code: allow model code from the hub (off by default).
    """

    device: str | None = None
    dtype: typing.Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    matmul_dtype: typing.Literal["auto", "float32", "bfloat16"] = "auto"
    head_screen: bool = True
    deterministic: bool = True
    max_batch_size: int = 64
    batch_wait_ms: float = 30.0
    trust_remote_code: bool = False

    # keys that do not change what the method computes (left out of cache hashes and leaderboard row keys).
    # ``dtype`` and ``matmul_dtype`` do change it; they are listed here as typed ("auto") and enter hashes
    # resolved instead (see :meth:`Method.precision`), so ``auto`` on a CPU without bf16 and an explicit
    # ``float32`` share one key while ``auto`` resolving to bfloat16 gets its own.
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = (
        "device", "dtype", "head_screen", "max_batch_size", "batch_wait_ms", "trust_remote_code"
    )
    # precision keys: hashed by their resolved value, never by their spelling
    PRECISION_KEYS: ClassVar[tuple[str, ...]] = ("dtype", "matmul_dtype")

    def __post_init__(self) -> None:
        self.check_bounds(max_batch_size=">= 1", batch_wait_ms=">= 0")
        if self.matmul_dtype == "bfloat16":  # said before any weights load; the engine then runs float32
            from steerboard import precision

            device = self.device
            if device is None:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            note = precision.native_matmul_note(self.matmul_dtype, device)
            if note is not None and os.environ.get("STEERBOARD_FORCE_BF16") != "1":
                logging.getLogger(__name__).warning(note)

    def check_bounds(self, **bounds: str) -> None:
        """Raise a one-line error naming the first option (in the order given) outside its lower bound.

        Args:
            **bounds: option name -> ``"> N"`` or ``">= N"``; an option that is None is not checked.

        Raises:
            ValueError: ``-M <name> must be <bound>, got <value>``.
        """
        for name, bound in bounds.items():
            op, _, limit = bound.partition(" ")
            value = getattr(self, name)
            if value is not None and _OUT_OF_BOUND[op](value, float(limit)):
                raise ValueError(f"-M {name} must be {bound}, got {value}")

    @classmethod
    def valid_keys(cls) -> list[str]:
        return sorted(f.name for f in fields(cls) if f.init)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None, cli_texts: Mapping[str, str] | None = None) -> C:
        """Build a validated config from ``-M`` options, each parsed by its field's type.

        Args:
            values: option name -> value (text, or a value already read from YAML).
            cli_texts: the raw command-line text per option (:func:`cli_model_arg_texts`); a value that is
                Inspect's YAML reading of its text is parsed from the text instead.

        Raises:
            ValueError: unknown key (names the valid keys) or a value of the wrong type/range.
        """
        values = restore_cli_text(values or {}, cli_texts or {})
        valid = cls.valid_keys()
        unknown = sorted(k for k in values if k not in valid)
        if unknown:
            raise ValueError(
                f"unknown -M option(s) for {cls.__name__}: {', '.join(unknown)}. Valid keys: {', '.join(valid)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_options(self, precision: dict[str, str] | None = None) -> dict[str, Any]:
        """The options that change the method's result: runtime keys left out, precision keys resolved.

        Args:
            precision: resolved ``{"dtype", "matmul_dtype"}`` of the engine that runs the method (see
                :meth:`Method.precision`); None keeps the options as typed (``"auto"``).
        """
        d = {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS or k in self.PRECISION_KEYS}
        if precision is not None:
            d.update({k: precision[k] for k in self.PRECISION_KEYS if k in precision})
        return d

    def fingerprint(self, precision: dict[str, str] | None = None) -> str:
        """Stable hash of :meth:`result_options` (pass the resolved ``precision`` wherever an engine exists)."""
        return stable_hash(self.result_options(precision), 16)


@dataclass(frozen=True)
class EditInstance:
    """One knowledge-editing instance (the SafeEdit per-instance protocol); validated once, here, and immutable.

    Attributes:
        prompt: the adversarial prompt (attack template + harmful question).
        safe_response: the target safe response the edit should produce.
        unsafe_response: the unsafe response (used to locate the toxic layer); may be empty.
        knowledge_prompt: a general-knowledge prompt whose answer must not change.
        knowledge_answer: its reference answer.
        id: instance id for logs.
    """

    prompt: str
    safe_response: str
    unsafe_response: str = ""
    knowledge_prompt: str = ""
    knowledge_answer: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError(f"edit instance {self.id!r}: empty prompt")
        if not self.safe_response.strip():
            raise ValueError(f"edit instance {self.id!r}: no safe response to edit towards")


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names it and its install command."""

    user_error = True  # the CLI prints the message alone (no traceback, exit 2)


def require_modules(modules: Mapping[str, str], what: str) -> None:
    """Check that optional packages are importable, without importing them (cheap: before any weights load).

    Args:
        modules: ``{import name: steerboard extra that installs it}``.
        what: who needs them, for the message (e.g. ``sae/``).

    Raises:
        MissingExtra: (an ImportError) one line naming the missing packages and the install command.
    """
    import importlib.util

    missing = {m: extra for m, extra in modules.items() if importlib.util.find_spec(m) is None}
    if missing:
        extras = ",".join(sorted(set(missing.values())))
        raise MissingExtra(
            f"{what} needs {', '.join(sorted(missing))}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f"pip install 'steerboard[{extras}]'"
        )


@typing.runtime_checkable
class WeightEditor(typing.Protocol):
    """A method's side of the per-instance editing protocol (SafeEdit ``-T protocol=per_instance``).

    ``apply_edit`` changes the weights for one instance and returns statistics for the log (layer, seconds,
    losses); if it fails it leaves the weights as they were. ``restore`` puts back exactly the weights that
    ``apply_edit`` changed. :meth:`Method.edit` pairs the two around a block; the provider serializes edits.
    """

    def apply_edit(self, engine: Engine, instance: EditInstance) -> dict[str, Any]: ...

    def restore(self, engine: Engine) -> None: ...


@typing.runtime_checkable
class InstanceEditor(typing.Protocol):
    """A model provider's side of the editing protocol (what the SafeEdit task calls on ``model.api``).

    ``edit(instance)`` is an async context manager yielding the edit's statistics: the edit holds while the
    block runs and the weights are restored on exit. ``supports_edit`` is False for providers whose method is
    not a :class:`WeightEditor`.
    """

    supports_edit: bool

    def edit(self, instance: EditInstance) -> contextlib.AbstractAsyncContextManager[dict[str, Any]]: ...


class Method:
    """Base class of every method: the model as is (the ``base/`` control).

    Subclasses override what they need:

    * ``config_class`` -- their :class:`MethodConfig` subclass;
    * :meth:`prepare` -- fit or load the artifact (cache it with :meth:`artifact_path`);
    * :meth:`messages` -- rewrite the conversation (e.g. add a system prompt);
    * :meth:`intervention` -- forward hooks entered around each generation batch;
    * ``apply_edit`` / ``restore`` -- per-instance weight edits (the :class:`WeightEditor` protocol);
    * ``private_weights = True`` when the method changes weights (it then gets its own model copy).
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    private_weights: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.model_name = model_name

    def required_modules(self) -> dict[str, str]:
        """Optional packages this method needs with its options: ``{import name: steerboard extra}``.

        The provider checks them (:func:`require_modules`) before any weights load.
        """
        return {}
    # ---- checks that need the model's config (run before any weights load)
    def check_model_config(self, model_config: dict[str, Any]) -> None:
        """Check options against the model's ``config.json`` (e.g. layer ranges); raise ValueError if invalid.

        Called right after the config is read, before weights load. The base method has nothing to check;
        methods with a layer option call :meth:`check_layer`.
        """

    @staticmethod
    def check_layer(layer: int | None, model_config: dict[str, Any]) -> None:
        """Raise a ValueError naming the valid range when ``layer`` is not a decoder block of the model."""
        n_layers = model_config.get("num_hidden_layers") or model_config.get("n_layer")
        if layer is None or not isinstance(n_layers, int):
            return
        if not 0 <= layer < n_layers:
            raise ValueError(f"-M layer={layer}: the model has {n_layers} decoder layers (0..{n_layers - 1})")

    # ---- fit
    def prepare(self, engine: Engine) -> None:
        """Fit or load this method's artifact for ``engine``'s model. The base method has none.

        Called once per provider, after the model loads and before the first request, on the torch thread.
        ``engine.model`` is the transformers model, ``engine.layer_module_name(i)`` names decoder block ``i``
        for hooks, ``engine.hidden_states`` / ``engine.score`` give teacher-forced activations and
        log-probabilities for fitting. A method with ``private_weights = True`` may change ``engine.model``'s
        weights here (the provider then calls ``engine.weights_changed()``).
        """

    # ---- apply
    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Rewrite a conversation before templating. The base method leaves it as is."""
        return messages

    def request_meta(self, engine: Engine, messages: list[dict[str, str]], input_ids: list[int]) -> dict[str, Any]:
        """Per-request data that :meth:`intervention`'s hooks read with ``state.row_meta(key)``.

        Called once per request, before it is queued, with the rewritten messages and their token ids.
        """
        return {}

    async def async_request_meta(self, engine: Engine, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Per-request data that needs the torch thread (e.g. a text-classifier gate), merged into
        :meth:`request_meta`'s; awaited by the provider before the request is queued."""
        return {}

    def intervention(self) -> Intervention | None:
        """Hooks to enter around each generation batch (``None``: no hooks).

        Returns an :data:`steerboard.engine.Intervention`: a callable taking the batch's
        :class:`steerboard.engine.BatchState` and returning a context manager. The engine enters it before the
        batch's prompt forward pass (``state.phase == "prefill"``) and exits it after the last decode step;
        hooks registered inside it with :func:`steerboard.engine.hooks` fire on the prefill and on every decode
        step (one per generated token, hidden states ``[len(state.rows), 1, hidden_size]``).
        """
        return None

    @property
    def supports_edit(self) -> bool:
        """Whether this method edits weights per instance (implements :class:`WeightEditor`)."""
        return isinstance(self, WeightEditor)

    @contextlib.contextmanager
    def edit(self, engine: Engine, instance: EditInstance) -> Iterator[dict[str, Any]]:
        """Apply a per-instance edit while the block runs; restore the weights exactly on exit.

        Yields a dict of edit statistics (layer, seconds, losses) for the log.

        Raises:
            NotImplementedError: the method is not a :class:`WeightEditor`.
        """
        if not isinstance(self, WeightEditor):
            raise NotImplementedError(f"method {self.name!r} does not edit weights per instance")
        stats = self.apply_edit(engine, instance)
        try:
            yield stats
        finally:
            self.restore(engine)

    # ---- helpers
    def artifact_path(self, engine: Engine, *data_parts: str, suffix: str = "") -> Path:
        """Cache path keyed by a hash of (model, method name, method config, data)."""
        from steerboard.paths import cache_dir

        fp = self.config.fingerprint(self.precision(engine))  # resolved precision: a bf16 fit is its own
        key = stable_hash([engine.source, self.name, fp, *data_parts], 20)
        return cache_dir("artifacts", self.name) / f"{key}{suffix}"

    @staticmethod
    def precision(engine: Engine | None) -> dict[str, str]:
        """The engine's resolved precision: parameter ``dtype`` and ``matmul_dtype`` (what ``auto`` became)."""
        if engine is None:
            return {}
        dtype = getattr(engine, "dtype", None)
        if dtype is None:
            try:
                dtype = next(engine.model.parameters()).dtype
            except (AttributeError, StopIteration):
                dtype = None
        return {
            "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "unknown",
            "matmul_dtype": str(getattr(engine, "matmul_dtype", None) or "unknown"),
        }

    def describe(self) -> dict[str, Any]:
        """What the log records about this method once prepared.

        Returns:
            ``{"method", "config", "resolved", "artifacts", "stats"}``: ``config`` is the validated ``-M``
            options; ``resolved`` every option that changes results after presets and defaults are expanded
            (subclasses add their fitted choices); ``artifacts`` ``{kind: {"path", "sha256"}}`` of every file
            used (SAE, direction, probe, classifier, adapter, edited weights); ``stats`` fit/edit statistics.
        """
        return {
            "method": self.name,
            "config": self.config.to_dict(),
            "resolved": self.config.result_options(),
            "artifacts": {},
            "stats": {},
        }

    def provenance(self, engine: Engine | None) -> dict[str, Any]:
        """:meth:`describe` plus the runtime and the settings key (what ``eval.metadata["steerboard"]`` holds).

        ``settings_key`` hashes what changes results: the resolved options (precision resolved), the model and
        every artifact's sha256; device, batch sizes and timing options are left out. Two spellings of one
        configuration (``sae/`` and ``sae/ -M preset=<default>``) share it; another preset or precision does not.
        """
        d = self.describe()
        prec = self.precision(engine)
        resolved = {**self.config.result_options(prec), **dict(d.get("resolved") or {}), **prec}
        d["resolved"] = resolved
        d["model"] = self.model_name
        d["model_source"] = str(getattr(engine, "source", self.model_name))
        d["runtime"] = runtime_info(engine)
        key_obj = {
            "method": self.name,
            "model": d["model_source"],
            # a file named by absolute path enters by content, so a checkout's location does not change the key
            "resolved": {
                k: (f"sha256:{file_sha256(v)}" if isinstance(v, str) and Path(v).is_absolute() and Path(v).exists()
                    else v)
                for k, v in resolved.items()
            },
            "artifacts": {k: (a or {}).get("sha256") for k, a in (d.get("artifacts") or {}).items()},
        }
        d["settings_key"] = stable_hash(key_obj, 16)
        d["schema"] = PROVENANCE_SCHEMA
        return d

    def sample_record(self, request: Any, result: Any) -> dict[str, Any]:
        """What the intervention did for one generation (recorded in the sample's output metadata).

        The base record: prompt and generated token counts. Steering methods add the gate decision and the
        number of prompt/generated tokens steered (see ``HookSteering.sample_record``).
        """
        return {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens}


PROVENANCE_SCHEMA = 1
"""Version of the ``eval.metadata["steerboard"]`` layout."""


def runtime_info(engine: Engine | None) -> dict[str, Any]:
    """Device, precision and library versions of the process running ``engine``."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    out: dict[str, Any] = {
        "steerboard": ver("steerboard"),
        "torch": ver("torch"),
        "transformers": ver("transformers"),
        "inspect_ai": ver("inspect_ai"),
    }
    if engine is not None:
        try:
            out["device"] = str(engine.device)
        except (AttributeError, StopIteration):
            out["device"] = None
        out.update(Method.precision(engine))
        try:
            from steerboard import precision

            out["cpu_bf16"] = bool(precision.cpu_has_fast_bf16())
            out["cpu_kind"] = precision.cpu_kind()
            caps = {"ONEDNN_MAX_CPU_ISA": precision.isa_cap(), "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY")}
            out["cpu_caps"] = {k: v for k, v in caps.items() if v}
        except Exception:  # noqa: BLE001 - an informational field only
            pass
    return out


class BaseMethod(Method):
    """``base/<model>``: the model as is, through the shared engine (the control)."""

    name = "base"


__all__ = [
    "BaseMethod", "EditInstance", "InstanceEditor", "Method", "MethodConfig", "WeightEditor", "cli_model_arg_texts",
    "field", "require_modules",
]
