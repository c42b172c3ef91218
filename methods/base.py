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
import functools
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
    from steerboard.resources import ModelShape

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


ROLE = "steerboard_role"
"""Key of a config field's role in its dataclass ``metadata``: one of :data:`ROLES` (see :func:`runtime_field`,
:func:`detail_field`, :func:`sweep_field`). A field without one is a plain option: it changes results, enters
cache and settings keys, and is shown in the board's short label."""
RUNTIME = "runtime"
"""Role: does not change what the method computes (device, batching, caching, timing): left out of cache keys,
settings keys and board labels."""
PRECISION = "precision"
"""Role: a precision option (``dtype``, ``matmul_dtype``): enters keys by its resolved value (what ``auto``
became, see :meth:`Method.precision`), never by its spelling; the board shows precision in its own column."""
DETAIL = "detail"
"""Role: changes results but reads poorly in a short label (a file path, a long text, a derived choice): recorded
and hashed, left out of the board's short label (the run page shows every setting)."""
SWEEP = "sweep"
"""Role: a strength-like option: runs that differ only in it form a strength sweep on the board, and it leads a
configuration's point label."""
ROLES = (RUNTIME, PRECISION, DETAIL, SWEEP)
ENGINE = "steerboard_engine"
"""Metadata flag: the option is a setting of the engine itself, so two configurations that differ in it cannot
share one loaded engine (the shared-engine cache key, and the keyword arguments of ``Engine.load``)."""
QUIET_DEFAULT = "steerboard_quiet_default"
"""Metadata flag: a short label shows the option only when it differs from its default (an opt-in mode)."""


def _role_field(role: str | None, default: Any, default_factory: Any, metadata: Mapping[str, Any] | None, *,
                engine: bool = False, quiet_default: bool = False, **kwargs: Any) -> Any:
    md = dict(metadata or {})
    if role:
        md[ROLE] = role
    if engine:
        md[ENGINE] = True
    if quiet_default:
        md[QUIET_DEFAULT] = True
    return field(default=default, default_factory=default_factory, metadata=md, **kwargs)


def runtime_field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
                  engine: bool = False, metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """A config field that does not change what the method computes (:data:`RUNTIME`): device, batch sizes,
    timing, a cache of intermediate results. ``engine=True``: it is also a setting of the engine (:data:`ENGINE`).

    Example::

        cached_prefix: bool = runtime_field(True)
    """
    return _role_field(RUNTIME, default, default_factory, metadata, engine=engine, **kwargs)


def detail_field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
                 metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """A config field that changes results but is left out of the board's short label (:data:`DETAIL`): a data
    file, a long prompt, a length cap."""
    return _role_field(DETAIL, default, default_factory, metadata, **kwargs)


def sweep_field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
                metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """A strength-like config field (:data:`SWEEP`): runs that differ only in it are one strength sweep on the
    board, and it leads the configuration's point label."""
    return _role_field(SWEEP, default, default_factory, metadata, **kwargs)


def field_role(f: dataclasses.Field[Any]) -> str | None:
    """The declared role of a config field (:data:`ROLES`), or None for a plain option."""
    return f.metadata.get(ROLE)


class _FieldNames:
    """A class attribute computed per config class: the names of its fields that pass ``test``, in field order
    (a subclass's own declarations join its parents')."""

    def __init__(self, test: Callable[[dataclasses.Field[Any]], bool]) -> None:
        self.test = test

    def __get__(self, obj: Any, owner: type) -> tuple[str, ...]:
        if not dataclasses.is_dataclass(owner):
            return ()
        return tuple(f.name for f in fields(owner) if self.test(f))


@dataclass
class EngineConfig:
    """The options every method accepts that set up the engine and its batching, and the one declaration of
    their roles: what runs a method, not what the method is (the runtime keys).

    Each field says in its metadata (:data:`ROLE`, :data:`ENGINE`, :data:`QUIET_DEFAULT`) whether it changes
    results, whether it is a setting of the engine, and how a board label treats it. Every list of such keys
    is read from here: :attr:`RUNTIME_KEYS` (left out of cache and settings keys), :attr:`PRECISION_KEYS`
    (keyed by resolved value), :attr:`ENGINE_KEYS` (the shared-engine cache key and ``Engine.load``'s
    settings in ``steerboard.methods.provider``), and the board's label stripping
    (:meth:`Method.declarations`). A method config may declare more runtime fields of its own
    (:func:`runtime_field`); they join :attr:`RUNTIME_KEYS` of that config class.

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
            tokens may flip between runs (see ``steerboard.engine.Engine``). It changes results: it enters
            cache and settings keys, and a board label names it when it is off.
        max_batch_size: most sequences per forward pass.
        batch_wait_ms: how long the batcher waits for more concurrent requests before starting a batch.
        trust_remote_code: allow model code from the hub (off by default).
    """

    device: str | None = runtime_field(None, engine=True)
    dtype: typing.Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={ROLE: PRECISION, ENGINE: True}
    )
    matmul_dtype: typing.Literal["auto", "float32", "bfloat16"] = field(
        default="auto", metadata={ROLE: PRECISION, ENGINE: True}
    )
    head_screen: bool = runtime_field(True, engine=True)
    deterministic: bool = field(default=True, metadata={ENGINE: True, QUIET_DEFAULT: True})
    max_batch_size: int = runtime_field(64)
    batch_wait_ms: float = runtime_field(30.0)
    trust_remote_code: bool = runtime_field(False, engine=True)

    # keys that do not change what the method computes (left out of cache hashes and leaderboard row keys)
    RUNTIME_KEYS = _FieldNames(lambda f: field_role(f) == RUNTIME)
    # precision keys: hashed by their resolved value, never by their spelling
    PRECISION_KEYS = _FieldNames(lambda f: field_role(f) == PRECISION)
    # settings of the engine: configurations that differ in one need engines of their own
    ENGINE_KEYS = _FieldNames(lambda f: bool(f.metadata.get(ENGINE)))

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

    def engine_settings(self) -> dict[str, Any]:
        """``{name: value}`` of the engine settings (:attr:`ENGINE_KEYS`), in field order."""
        return {name: getattr(self, name) for name in self.ENGINE_KEYS}

    def engine_options(self) -> dict[str, Any]:
        """``{name: value}`` of every :class:`EngineConfig` option of this config (what a ``base/`` reference
        needs to run exactly as this configuration's engine does)."""
        return {f.name: getattr(self, f.name) for f in fields(EngineConfig) if f.init}


@dataclass
class MethodConfig(EngineConfig):
    """Options every method accepts through ``-M key=value``; subclasses add their own fields.

    The options shared by every method are those of :class:`EngineConfig` (device, precision, determinism,
    batching). Validation lives in ``__post_init__`` (so a config is valid whenever it exists) and
    :meth:`from_dict` rejects unknown keys, naming the valid ones, before any model work.

    ``-M`` values are parsed by each field's declared type, from the text the user typed: a ``str`` field
    keeps it verbatim (``-M system_prompt=yes`` is ``"yes"``; ``-M system_prompt="Be safe, and kind."`` keeps
    its comma), an ``int`` is decimal (``012`` is 12), a list splits on commas (``features=012,7`` is
    ``[12, 7]``), a ``bool`` is ``true/false/yes/no/1/0``. ``inspect eval`` reads ``-M`` as YAML first; the
    provider recovers the typed text from the command line (:func:`cli_model_arg_texts`). Values from a suite
    file or ``--model-config`` are YAML as written there: quote text that YAML would read otherwise
    (``system_prompt: "yes"``); a ``str`` field rejects a boolean or number rather than guess its spelling.

    A field may declare its role (:func:`runtime_field`, :func:`detail_field`, :func:`sweep_field`); cache keys,
    settings keys and the leaderboard read those declarations (:meth:`Method.declarations`).
    """

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


@dataclass(frozen=True)
class MethodDeclarations:
    """What a method declares about itself for cache keys and the leaderboard (:meth:`Method.declarations`).

    The provider records it in the log (``eval.metadata["steerboard"]["declarations"]``), so a board labels a
    plug-in's rows even where the plug-in is not installed.

    Attributes:
        control: the method is the unsteered control (``base/``): other rows are compared with its runs.
        runtime: options that do not change results (:data:`RUNTIME`).
        precision: precision options (:data:`PRECISION`).
        detail: options left out of short labels (:data:`DETAIL`).
        sweep: strength-like options (:data:`SWEEP`), in declaration order.
        quiet_defaults: ``{option: default}`` of options a short label names only when they differ from it.
    """

    control: bool = False
    runtime: tuple[str, ...] = ()
    precision: tuple[str, ...] = ()
    detail: tuple[str, ...] = ()
    sweep: tuple[str, ...] = ()
    quiet_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def unlabelled(self) -> frozenset[str]:
        """Options a short label leaves out: runtime, precision and detail ones."""
        return frozenset((*self.runtime, *self.precision, *self.detail))

    @property
    def not_sweep_settings(self) -> frozenset[str]:
        """Options that never split a strength sweep: every :class:`EngineConfig` option and every runtime one
        (what runs the method, not what it is)."""
        return frozenset((*(f.name for f in fields(EngineConfig)), *self.runtime))

    def quiet(self, key: str, value: Any) -> bool:
        """Whether a short label leaves ``key=value`` out because it is the option's quiet default."""
        if key not in self.quiet_defaults:
            return False
        default = self.quiet_defaults[key]
        return type(value) is type(default) and value == default

    def to_record(self) -> dict[str, Any]:
        """The JSON form written to the log."""
        return {
            "control": self.control, "runtime": list(self.runtime), "precision": list(self.precision),
            "detail": list(self.detail), "sweep": list(self.sweep), "quiet_defaults": dict(self.quiet_defaults),
        }

    @classmethod
    def from_record(cls, value: Any) -> MethodDeclarations | None:
        """Read :meth:`to_record`'s form back; None when ``value`` is not such a record (absent or malformed)."""
        if not isinstance(value, dict) or not isinstance(value.get("control", False), bool):
            return None
        lists = {}
        for k in ("runtime", "precision", "detail", "sweep"):
            v = value.get(k, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                return None
            lists[k] = tuple(v)
        quiet = value.get("quiet_defaults", {})
        if not isinstance(quiet, dict):
            return None
        return cls(control=value.get("control", False), quiet_defaults=dict(quiet), **lists)


@functools.lru_cache(maxsize=256)
def _class_declarations(cls: type[Method]) -> MethodDeclarations:
    return cls._read_declarations()


METHOD_GROUP = "steerboard.methods"
"""The entry-point group methods register in (``steerboard.methods.registry.GROUP``; read here without importing
the registry, which imports Inspect's model API)."""


@functools.lru_cache(maxsize=256)
def _registered_method(name: str, path: tuple[str, ...]) -> type[Method] | None:
    import importlib
    from importlib.metadata import entry_points

    target = next((ep.value for ep in entry_points(group=METHOD_GROUP) if ep.name == name), None)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as ex:
        logging.getLogger(__name__).warning("method %s (%s) is registered but does not import: %s", name, target, ex)
        return None
    return cls if isinstance(cls, type) and issubclass(cls, Method) else None


def registered_method(name: str | None) -> type[Method] | None:
    """The installed method class registered as ``name`` (entry-point group :data:`METHOD_GROUP`), or None when
    no installed package registers it or its module does not import. Looked up once per name and ``sys.path``."""
    if not name:
        return None
    return _registered_method(name, tuple(sys.path))


def method_declarations(name: str | None, record: Mapping[str, Any] | None = None) -> MethodDeclarations:
    """What the method that made a run declares: the declarations its log recorded (``record``, a provenance
    record), else those of the installed method registered as ``name``, else those every method shares (the
    :class:`EngineConfig` options; not a control)."""
    if record is not None:
        recorded = MethodDeclarations.from_record(record.get("declarations"))
        if recorded is not None:
            return recorded
    cls = registered_method(name)
    return (cls or Method).declarations()


class Method:
    """Base class of every method: the model as is (the ``base/`` control).

    Subclasses override what they need:

    * ``config_class`` -- their :class:`MethodConfig` subclass;
    * :meth:`prepare` -- fit or load the artifact (cache it with :meth:`artifact_path`);
    * :meth:`messages` -- rewrite the conversation (e.g. add a system prompt);
    * :meth:`intervention` -- forward hooks entered around each generation batch;
    * ``apply_edit`` / ``restore`` -- per-instance weight edits (the :class:`WeightEditor` protocol);
    * ``private_weights = True`` when the method changes weights (it then gets its own model copy);
    * :meth:`memory_parts` -- what it adds to a worker's memory (the Ray executor's request);
    * ``resolved_roles`` -- the roles of settings its :meth:`describe` adds to the resolved ones (the config's
      own fields declare theirs: :func:`runtime_field`, :func:`detail_field`, :func:`sweep_field`).
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    private_weights: ClassVar[bool] = False
    is_control: ClassVar[bool] = False
    """The unsteered control (``base/``): the leaderboard compares every other row with its runs."""
    resolved_roles: ClassVar[Mapping[str, str]] = {}
    """``{setting: role}`` (:data:`ROLES`) of resolved settings that :meth:`describe` adds beyond the config's
    fields (a derived choice, a preset's expansion), e.g. ``{"layer_rule": DETAIL}``."""

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.model_name = model_name

    @classmethod
    def declarations(cls) -> MethodDeclarations:
        """What this method declares about its options (read from its config's field metadata,
        ``RUNTIME_KEYS``, :attr:`resolved_roles` and :attr:`is_control`; once per class)."""
        return _class_declarations(cls)

    @classmethod
    def _read_declarations(cls) -> MethodDeclarations:
        cfg = cls.config_class
        by_role: dict[str, list[str]] = {r: [] for r in ROLES}
        for f in fields(cfg):
            role = field_role(f)
            if role in by_role:
                by_role[role].append(f.name)
        # a config class may still list extra runtime keys by hand (RUNTIME_KEYS = (..., "name"))
        by_role[RUNTIME] += [k for k in cfg.RUNTIME_KEYS if k not in by_role[RUNTIME] and k not in by_role[PRECISION]]
        for key, role in cls.resolved_roles.items():
            if role not in by_role:
                raise ValueError(f"{cls.__name__}.resolved_roles[{key!r}]: unknown role {role!r}; valid: {', '.join(ROLES)}")
            if key not in by_role[role]:
                by_role[role].append(key)
        quiet = {f.name: f.default for f in fields(cfg) if f.metadata.get(QUIET_DEFAULT)}
        return MethodDeclarations(
            control=bool(cls.is_control), quiet_defaults=quiet, **{r: tuple(names) for r, names in by_role.items()}
        )

    @classmethod
    def memory_parts(cls, config: MethodConfig, model: ModelShape) -> dict[str, int]:
        """Bytes this method adds to a worker's memory, by part name, beyond what every configuration needs (the
        process, the engine's weights, KV cache and scoring buffers): read by
        :func:`steerboard.resources.estimate_memory` for the Ray executor's memory request. No weights load:
        ``model`` (a :class:`steerboard.resources.ModelShape`) gives the model's sizes, the device, the dtype and
        the bytes of the weights the engine loads.

        The default: a second copy of the loaded weights for a method with ``private_weights`` (its own model
        beside the shared one); nothing otherwise. Override to add what the method holds (an SAE, training
        state), calling ``super().memory_parts`` to keep the copy.
        """
        return {"second_weights_copy": model.loaded_weight_bytes} if cls.private_weights else {}

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
        d["declarations"] = self.declarations().to_record()
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
    is_control = True


__all__ = [
    "BaseMethod", "EditInstance", "EngineConfig", "InstanceEditor", "Method", "MethodConfig", "MethodDeclarations",
    "WeightEditor", "cli_model_arg_texts", "detail_field", "field", "method_declarations", "registered_method",
    "require_modules", "runtime_field", "sweep_field",
]
