"""Shared helpers for steerboard's Inspect tasks: pinned package data, option checks, local data files.

Import-light (standard library, inspect_ai and steerboard's low-level modules only) so that the task registry
stays fast to import.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, get_args

from inspect_ai.dataset import Dataset, MemoryDataset, Sample

from steerboard.inspect_private import active_model
from steerboard.jsonl import json_objects
from steerboard.protocol import require_capability
from steerboard.taskdata import verified


def check_capability(task: str, capability: str, fallback: str | None = None) -> None:
    """At task construction: fail in one line when the active model lacks ``capability``
    (:data:`steerboard.protocol.CAPABILITIES`); nothing to check outside an eval (no active model).

    Args:
        task: the task name (and the option that needs the capability).
        capability: ``loglik``, ``reference`` or ``edit``.
        fallback: the task option that needs no such capability (``-T format=letters``), or None.

    Raises:
        steerboard.protocol.CapabilityError: naming the capability, the providers that have it and the fallback.
    """
    model = active_model()
    if model is not None:
        require_capability(model, capability, task=task, fallback=fallback)


DATA_DIR = Path(__file__).parent / "data"
"""Data shipped inside the package (each dataset folder carries LICENSE + SOURCE.md)."""

def data_file(relpath: str, sha256: str) -> Path:
    """Return the path of a shipped data file after checking its pinned SHA-256.

    Args:
        relpath: path relative to ``tasks/data`` (e.g. ``"xstest/xstest_prompts.csv"``).
        sha256: the expected hex digest (the pin).

    Raises:
        FileNotFoundError: the file is not in the installed package.
        ValueError: the file's checksum differs from the pin (the data changed).
    """
    return verified(DATA_DIR / relpath, sha256)


def open_text(path: Path) -> Any:
    """Open a text file, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_csv(relpath: str, sha256: str) -> list[dict[str, str]]:
    """The rows of a shipped CSV file (``.csv`` or ``.csv.gz`` under ``tasks/data``, checked against its pin),
    one dict per row keyed by the header."""
    with open_text(data_file(relpath, sha256)) as f:
        return list(csv.DictReader(f))


HARMBENCH_FILE = "harmbench/harmbench_behaviors_text_test.csv.gz"
HARMBENCH_SHA256 = "850f049696b3139b72b1640c2d4c9702412a9eb5439e154cb22191b31c458497"


def load_harmbench_standard() -> list[dict[str, str]]:
    """HarmBench's test behaviours of functional category "standard" (159 rows): ``jbb_refusal``'s extra
    harmful prompts and ``crescendo``'s objectives."""
    return [r for r in read_csv(HARMBENCH_FILE, HARMBENCH_SHA256) if r["FunctionalCategory"] == "standard"]


def read_json(path: Path) -> Any:
    """Read a (possibly gzipped) JSON document, naming the file on a parse error."""
    with open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e


def launch_dir() -> Path:
    """The folder the user launched from, against which relative data paths (``-T prompts_file=``) resolve.

    ``inspect eval tasks/side_effects.py`` constructs the task inside the task file's folder (Inspect changes
    the working directory while it loads a task file), so there the launch folder is recovered from the task
    file argument on the command line (``tasks/side_effects.py`` run from ``/repo`` means ``/repo``), else
    from ``$PWD``; everywhere else it is the working directory.
    """
    cwd = Path.cwd()
    here = Path(__file__).resolve().parent
    if cwd.resolve() != here:
        return cwd
    for arg in sys.argv[1:]:
        spec = Path(arg.split("@", 1)[0])
        if spec.suffix != ".py" or spec.is_absolute() or ".." in spec.parts or not (here / spec.name).is_file():
            continue
        base = cwd
        for _ in spec.parent.parts:
            base = base.parent
        if (base / spec).resolve() == (here / spec.name).resolve():
            return base
    pwd = os.environ.get("PWD")
    return Path(pwd) if pwd and Path(pwd).is_dir() else cwd


def user_path(path: str | Path) -> Path:
    """A user-given data path: ``~`` expanded, a relative path taken from :func:`launch_dir` (the working
    folder for every launcher; a path that exists only relative to the current directory is kept)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    launched = launch_dir() / p
    return launched if launched.exists() or not p.exists() else p


def check_text(row: dict[str, Any], where: str) -> None:
    """Raise a ValueError naming ``where`` and the field when a text field holds what no tokenizer can take
    (a lone UTF-16 surrogate such as ``\\ud800``, which JSON escapes allow but UTF-8 cannot encode)."""
    for key, value in row.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as ex:
                bad = value[ex.start]
                raise ValueError(
                    f"{where}: field {key!r} holds a lone surrogate (U+{ord(bad):04X} at character {ex.start}), "
                    "which is not text a tokenizer can take; fix or remove that record"
                ) from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a (possibly gzipped) JSON-lines file; blank lines are skipped.

    Raises:
        ValueError: a line is not a JSON object (message names the file and line number).
    """
    rows: list[dict[str, Any]] = []
    with open_text(path) as f:
        for lineno, row in json_objects(f, path):
            check_text(row, f"{path}, line {lineno}")
            rows.append(row)
    return rows


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a local data file: ``.jsonl`` / ``.jsonl.gz``, ``.json`` / ``.json.gz`` (a list) or ``.parquet``.

    A relative path is taken from the folder the user launched from (:func:`user_path`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension or malformed content, or text no tokenizer can take (names file
            and line, or record).
    """
    p = user_path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return read_jsonl(p)
    if name.endswith((".json", ".json.gz")):
        data = read_json(p)
        if isinstance(data, dict):
            # {"split": [...]} or {"data": [...]} style dumps: accept a single list value
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) == 1:
                data = lists[0]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ValueError(f"{p}: expected a JSON list of objects")
        for i, row in enumerate(data, start=1):
            check_text(row, f"{p}, record {i}")
        return data
    if name.endswith(".parquet"):
        import pandas as pd  # lazy: only for parquet input

        try:
            frame = pd.read_parquet(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types
            raise ValueError(f"{p}: cannot read parquet ({e})") from e
        records = frame.to_dict(orient="records")
        for i, row in enumerate(records, start=1):
            check_text(row, f"{p}, record {i}")
        return records
    raise ValueError(f"{p}: unsupported data file type; use .jsonl, .jsonl.gz, .json, .json.gz or .parquet")


def check_fields(rows: Iterable[dict[str, Any]], required: Iterable[str], source: str, line_offset: int = 1) -> None:
    """Raise a ValueError naming the source and record/line of the first row missing a required field."""
    req = list(required)
    for i, row in enumerate(rows):
        missing = [k for k in req if k not in row or row[k] is None]
        if missing:
            raise ValueError(
                f"{source}, record {i + line_offset}: missing field(s) {missing}; required fields: {req}"
            )


def check_choice(name: str, value: Any, literal: Any) -> None:
    """Validate a task option against a ``Literal[...]`` type (Inspect passes ``-T`` values unchecked).

    Raises:
        ValueError: naming the option, the bad value and the valid values.
    """
    valid = get_args(literal)
    if value not in valid:
        raise ValueError(f"invalid -T {name}={value!r}; valid values: {', '.join(repr(v) for v in valid)}")


def check_int(name: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """Coerce and range-check an integer task option."""
    try:
        ivalue = int(value)
        if isinstance(value, float) and value != ivalue:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"invalid -T {name}={value!r}; expected an integer") from None
    if ivalue < minimum or (maximum is not None and ivalue > maximum):
        hi = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"invalid -T {name}={value!r}; expected an integer >= {minimum}{hi}")
    return ivalue


def check_bool(name: str, value: Any) -> bool:
    """Coerce a boolean task option (accepts true/false/1/0/yes/no strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"invalid -T {name}={value!r}; expected true or false")


def stratified_order(items: Sequence[Any], keys: Sequence[Callable[[Any], Any]], seed: int = 0) -> list[Any]:
    """Order ``items`` so that every prefix is a stratified sample of the whole.

    Strata are nested: ``keys[0]`` splits the items into top-level strata, ``keys[1]`` splits each of those,
    and so on; the items of a leaf stratum are shuffled with ``seed``. Strata are then interleaved in
    proportion to their sizes, always taking next from the stratum furthest behind its share, so for any
    prefix length ``n`` each stratum holds ``n * size / total`` items rounded up or down (and, within it,
    so does each sub-stratum). Taking the first ``n`` items is therefore a stratified, seeded sample --
    which is what ``--limit n`` takes. Hand-written because Inspect's ``--limit`` takes a prefix and
    scikit-learn's stratified splitters give one split, not an order whose every prefix is stratified.

    Args:
        items: the items (e.g. Samples), in file order.
        keys: one stratum key function per level (values must be hashable and sortable as strings).
        seed: seed of the within-stratum shuffles.

    Returns:
        The same items, reordered; the result is a permutation of ``items`` and depends only on ``seed``.
    """
    items = list(items)
    if not keys:
        rng = random.Random(seed)
        rng.shuffle(items)
        return items
    groups: dict[Any, list[Any]] = {}
    for it in items:
        groups.setdefault(keys[0](it), []).append(it)
    ordered = [
        stratified_order(groups[k], keys[1:], seed) for k in sorted(groups, key=lambda k: str(k))
    ]
    total = len(items)
    taken = [0] * len(ordered)
    out: list[Any] = []
    for n in range(1, total + 1):
        # the stratum whose count lags furthest behind its proportional share of the first n items
        best = max(
            (i for i in range(len(ordered)) if taken[i] < len(ordered[i])),
            key=lambda i: n * len(ordered[i]) / total - taken[i],
        )
        out.append(ordered[best][taken[best]])
        taken[best] += 1
    return out


def make_dataset(
    records: Iterable[dict[str, Any]],
    record_to_sample: Callable[[dict[str, Any]], Sample | list[Sample]],
    name: str,
    location: str,
    shuffle: bool = False,
    seed: int = 0,
    strata: Sequence[str] | None = None,
) -> Dataset:
    """Build a MemoryDataset from raw records: stratified, shuffled or in file order.

    Inspect's ``--limit N`` takes the first N samples, so the order decides what a limited run measures:

    * ``strata`` (metadata keys, outermost first) and not ``shuffle``: a stratified, seeded order (see
      :func:`stratified_order`), so ``--limit N`` draws a sample with every stratum in proportion;
    * ``shuffle``: a plain seeded shuffle (``-T shuffle=true -T seed=N --limit K`` always selects the same K);
    * neither: file order.
    """
    samples: list[Sample] = []
    for rec in records:
        out = record_to_sample(rec)
        samples.extend(out if isinstance(out, list) else [out])
    if strata and not shuffle:
        samples = stratified_order(
            samples, [lambda s, k=k: (s.metadata or {}).get(k) for k in strata], seed=seed
        )
    dataset = MemoryDataset(samples, name=name, location=location)
    if shuffle:
        dataset.shuffle(seed=seed)
    return dataset


def system_text(text: str) -> Any:
    """A solver that prepends a fixed system message (no template formatting, so braces are safe)."""
    from inspect_ai.model import ChatMessageSystem
    from inspect_ai.solver import Generate, Solver, TaskState, solver

    @solver(name="system_text")
    def _system_text() -> Solver:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            state.messages.insert(0, ChatMessageSystem(content=text))
            return state

        return solve

    return _system_text()


def reject_unknown_options(task_name: str, task_fn: Callable[..., Any], extra: dict[str, Any]) -> None:
    """Raise on ``-T`` options the task does not define (Inspect itself only logs a warning).

    Tasks take ``**options`` so that Inspect hands misspelt options to them; ``model`` (which Inspect may
    pass to any task) is ignored.

    Raises:
        ValueError: naming the unknown options and the valid ones.
    """
    import inspect

    unknown = sorted(k for k in extra if k != "model")
    if unknown:
        valid = [
            p.name
            for p in inspect.signature(task_fn).parameters.values()
            if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]
        raise ValueError(f"unknown -T option(s) {unknown} for task {task_name}; valid options: {', '.join(valid)}")


def check_grader_role(option: str, judge: str, role: str = "grader") -> None:
    """Fail at task start when a ``model`` judge has no grader model role to call.

    Inspect initialises the eval's model roles before it constructs the tasks, so inside ``inspect eval``
    a missing ``--model-role grader=...`` is caught here, before any generation. Outside an eval (a task
    built directly, or ``steerboard run``'s own up-front check) there is no active model and nothing to check.

    Raises:
        ValueError: ``judge`` is ``model`` and the running eval defines no ``role`` model.
    """
    if judge != "model":
        return
    from inspect_ai.model import model_roles

    if active_model() is None:
        return
    if role not in model_roles():
        raise ValueError(
            f"-T {option}=model needs a grader model: add --model-role {role}=<model> (e.g. an API model or "
            f"hf/allenai/wildguard), or use -T {option}=embed (offline)"
        )


def check_refusal_options(
    judge: str, judge_literal: Any, shuffle: Any, seed: Any, stratify: Any
) -> tuple[bool, int, bool]:
    """Check the judge and sample-order options the refusal tasks share.

    Returns:
        ``(shuffle, seed, stratify)`` as checked values.

    Raises:
        ValueError: an unknown judge, a ``model`` judge without a grader role, or a bad order option.
    """
    check_choice("judge", judge, judge_literal)
    check_grader_role("judge", judge)
    return check_bool("shuffle", shuffle), check_int("seed", seed), check_bool("stratify", stratify)


def refusal_task(
    dataset: Dataset,
    judge: str,
    groups: tuple[str, str],
    breakdown_key: str,
    breakdown_prefix: str,
    version: int,
    metadata: dict[str, Any],
) -> Any:
    """A generate-then-judge refusal task: refusal rates per label ``groups`` and per ``breakdown_key``.

    Args:
        dataset: the samples (metadata ``label`` holds one of ``groups``).
        judge: refusal judge name.
        groups: the label values reported as ``refusal_rate_<g>``, in order.
        breakdown_key: sample metadata key whose values get a refusal rate each.
        breakdown_prefix: metric name prefix of that breakdown.
        version: task version.
        metadata: task metadata.
    """
    from inspect_ai import Task
    from inspect_ai.solver import generate

    from steerboard.scorers import refusal_metrics, refusal_scorer
    from steerboard.tasks._metrics import breakdown

    return Task(
        dataset=dataset,
        solver=generate(),
        scorer=refusal_scorer(judge=judge, groups_key="label", groups=groups),
        # the scorer's metrics, told the groups (so the headline resolves before the first unsafe sample), and
        # the task's breakdown (Task(metrics=...) replaces the scorer's own list)
        metrics=[refusal_metrics(groups=groups), breakdown("refusal", breakdown_key, breakdown_prefix)],
        version=version,
        metadata=metadata,
        **_refusal_headline(groups),
    )


def _refusal_headline(groups: tuple[str, str]) -> dict[str, Any]:
    """``Task(headline_metric=...)``: the refusal rate on the ``unsafe`` group, when the task has one.

    Inspect's live progress line shows the headline metric (without one, the first metric: the refusal rate
    over safe and unsafe prompts pooled); the log records it as ``results.headline``.
    """
    import inspect as _inspect

    from inspect_ai import Task
    from inspect_ai.log import HeadlineMetric

    if "unsafe" not in groups or "headline_metric" not in _inspect.signature(Task).parameters:
        return {}
    return {"headline_metric": HeadlineMetric(scorer="refusal_scorer", metric="refusal_rate_unsafe")}


def load_hub_rows(
    path: str,
    name: str | None,
    split: str,
    revision: str,
    token: str | None,
    required: Iterable[str],
    source: str,
    failure: str,
    hint: str,
) -> list[dict[str, Any]]:
    """Rows of a (possibly gated) hub data set, with the required fields checked.

    Raises:
        RuntimeError: ``"{failure} from the hub (<error>){hint}"`` when the hub does not deliver it.
        ValueError: a row lacks a required field (named with ``source``).
    """
    from datasets import load_dataset  # lazy: heavy

    try:
        ds = load_dataset(path, *([] if name is None else [name]), split=split, revision=revision, token=token)
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        raise RuntimeError(f"{failure} from the hub ({e}){hint}") from e
    rows = [dict(r) for r in ds]
    check_fields(rows, required, source)
    return rows
