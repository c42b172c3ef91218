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

``inspect eval ... --model mymethod/smollm2-135m -M key=value`` then works, and ``steerboard run``
suites can name it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union, get_args, get_origin

if TYPE_CHECKING:
    from steerboard.engine import Engine, Intervention

C = TypeVar("C", bound="MethodConfig")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a ``-M`` value (often a string from the command line) to a field's declared type."""
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
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"-M {key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"-M {key}={value!r}: expected an integer")
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"-M {key}={value!r}: expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"-M {key}={value!r}: expected an integer") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"-M {key}={value!r}: expected a number") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"-M {key}={value!r}: expected a string")
        return str(value)
    return value


@dataclass
class MethodConfig:
    """Options every method accepts through ``-M key=value``; subclasses add their own fields.

    Validation lives in ``__post_init__`` (so a config is valid whenever it exists) and
    :meth:`from_dict` rejects unknown keys, naming the valid ones, before any model work.

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

    # keys that do not change what the method computes (left out of cache hashes)
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = (
        "device", "dtype", "matmul_dtype", "head_screen", "deterministic", "max_batch_size", "batch_wait_ms",
        "trust_remote_code",
    )

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"-M max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"-M batch_wait_ms must be >= 0, got {self.batch_wait_ms}")

    @classmethod
    def valid_keys(cls) -> list[str]:
        return sorted(f.name for f in fields(cls) if f.init)

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any] | None) -> C:
        """Build a validated config from ``-M`` options.

        Raises:
            ValueError: unknown key (names the valid keys) or a value of the wrong type/range.
        """
        values = dict(values or {})
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

    def fingerprint(self) -> str:
        """Stable hash of the options that change the method's result (runtime keys excluded)."""
        d = {k: v for k, v in self.to_dict().items() if k not in self.RUNTIME_KEYS}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class EditInstance:
    """One knowledge-editing instance (the SafeEdit per-instance protocol).

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


class Method:
    """Base class of every method: the model as is (the ``base/`` control).

    Subclasses override what they need:

    * ``config_class`` -- their :class:`MethodConfig` subclass;
    * :meth:`prepare` -- fit or load the artifact (cache it with :meth:`artifact_path`);
    * :meth:`messages` -- rewrite the conversation (e.g. add a system prompt);
    * :meth:`intervention` -- forward hooks entered around each generation batch;
    * :meth:`edit` -- per-instance weight edits (set ``supports_edit = True``);
    * ``private_weights = True`` when the method changes weights (it then gets its own model copy).
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    private_weights: ClassVar[bool] = False
    supports_edit: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, model_name: str) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.model_name = model_name

    # ---- fit
    def prepare(self, engine: Engine) -> None:
        """Fit or load this method's artifact for ``engine``'s model. The base method has none."""

    # ---- apply
    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Rewrite a conversation before templating. The base method leaves it as is."""
        return messages

    def request_meta(self, engine: Engine, messages: list[dict[str, str]], input_ids: list[int]) -> dict[str, Any]:
        """Per-request data that :meth:`intervention` can read from ``BatchState.row_meta``."""
        return {}

    async def async_request_meta(self, engine: Engine, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Per-request data that needs the torch thread (e.g. a text-classifier gate), merged into
        :meth:`request_meta`'s; awaited by the provider before the request is queued."""
        return {}

    def intervention(self) -> Intervention | None:
        """Hooks to enter around each batch (``None``: no hooks)."""
        return None

    @contextlib.contextmanager
    def edit(self, engine: Engine, instance: EditInstance) -> Iterator[dict[str, Any]]:
        """Apply a per-instance edit while the block runs; restore the weights exactly on exit.

        Yields a dict of edit statistics (layer, seconds, losses) for the log.
        """
        raise NotImplementedError(f"method {self.name!r} does not edit weights per instance")
        yield {}  # pragma: no cover

    # ---- helpers
    def artifact_path(self, engine: Engine, *data_parts: str, suffix: str = "") -> Path:
        """Cache path keyed by a hash of (model, method name, method config, data)."""
        from steerboard.paths import cache_dir

        key = hashlib.sha256(
            json.dumps([engine.source, self.name, self.config.fingerprint(), *data_parts], default=str).encode()
        ).hexdigest()[:20]
        return cache_dir("artifacts", self.name) / f"{key}{suffix}"

    def describe(self) -> dict[str, Any]:
        """What the log records about this method (its config and fitted choices)."""
        return {"method": self.name, "config": self.config.to_dict()}


class BaseMethod(Method):
    """``base/<model>``: the model as is, through the shared engine (the control)."""

    name = "base"


__all__ = ["BaseMethod", "EditInstance", "Method", "MethodConfig", "field"]
