"""Fit and dev data for steering methods, disjoint from every evaluation set.

The fit-data contract (``docs/contract.md``): methods may fit on HarmBench *val*, StrongREJECT, GSM8K train, MMLU dev,
SafeEdit's three editing instances, the text corpus and team-written text, de-duplicated (normalised
text) against every evaluation prompt. This module ships:

* harmful prompts: HarmBench val ``standard`` behaviours + StrongREJECT, split deterministically into
  ``fit`` (directions, probes, SAE training text) and ``dev`` (choosing features/strengths/coefficients);
* benign prompts, refusal responses and compliance responses written by the steerboard team
  (``data/team_texts.json``), also split ``fit``/``dev`` for the prompts;
* gate prompts for conditional steering (:func:`gate_harmful_prompts` / :func:`gate_benign_prompts`): the
  pools above plus team-written short harmful questions and harmless prompts that sound harmful, minus
  ``gate_exclude`` (team prompts too close to an evaluation prompt);
* a small licensed subset of the text corpus for SAE training (``data/corpus_subset.jsonl.gz``);
* ``data/eval_index.txt.gz``: truncated SHA-1 hashes of the normalised text of every evaluation prompt
  (XSTest, JailbreakBench goals, HarmBench test, SafeMTData, SafeEdit test samples, MMLU test,
  TruthfulQA, GSM8K test), built by ``python -m steerboard.methods.fitdata build-eval-index DATA_DIR``.
  Every loader here drops prompts whose hash is in that index, and a test checks it.

Data sources and licences: ``data/SOURCE.md``.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from steerboard.texts import normalize, text_hash  # the package's text keys, used here under these names

DATA_DIR = Path(__file__).parent / "data"
Split = Literal["fit", "dev", "all"]
DEV_PERCENT = 40  # share of each prompt pool that goes to the dev split

def _split_of(text: str) -> Literal["fit", "dev"]:
    """Deterministic split by hash (stable when pools grow)."""
    h = int(hashlib.sha256(("split:" + normalize(text)).encode()).hexdigest()[:8], 16)
    return "dev" if h % 100 < DEV_PERCENT else "fit"


@functools.lru_cache(maxsize=1)
def eval_index() -> frozenset[str]:
    """Hashes of every evaluation prompt (see module docstring)."""
    path = DATA_DIR / "eval_index.txt.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; build it with `python -m steerboard.methods.fitdata build-eval-index DATA_DIR`"
        )
    with gzip.open(path, "rt") as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


def is_eval_text(text: str) -> bool:
    """Whether ``text`` (normalised) equals an evaluation prompt."""
    return text_hash(text) in eval_index()


def _clean(texts: Iterable[str], split: Split) -> list[str]:
    """Drop empties, duplicates (normalised) and evaluation prompts; keep ``split``."""
    seen: set[str] = set()
    out: list[str] = []
    idx = eval_index()
    for t in texts:
        t = t.strip()
        key = normalize(t)
        if not key or key in seen or text_hash(t) in idx:
            continue
        seen.add(key)
        if split == "all" or _split_of(t) == split:
            out.append(t)
    return out


def _check_split(split: str) -> None:
    if split not in ("fit", "dev", "all"):
        raise ValueError(f"split must be 'fit', 'dev' or 'all', got {split!r}")


@functools.lru_cache(maxsize=1)
def _team() -> dict[str, Any]:
    return json.loads((DATA_DIR / "team_texts.json").read_text())


def harmful_prompts(split: Split = "all") -> list[str]:
    """Harmful requests: HarmBench val ``standard`` behaviours and StrongREJECT prompts.

    Args:
        split: ``fit``, ``dev`` or ``all``.
    """
    _check_split(split)
    texts: list[str] = []
    with open(DATA_DIR / "harmbench_behaviors_text_val.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["FunctionalCategory"] == "standard":
                texts.append(row["Behavior"])
    with open(DATA_DIR / "strongreject_dataset.csv", newline="") as f:
        texts.extend(row["forbidden_prompt"] for row in csv.DictReader(f))
    return _clean(texts, split)


def benign_prompts(split: Split = "all") -> list[str]:
    """Benign requests written by the team (many use words that sound dangerous)."""
    _check_split(split)
    return _clean(_team()["benign_prompts"], split)


def _gate_clean(texts: list[str], split: Split) -> list[str]:
    """:func:`_clean` minus the team prompts listed in ``gate_exclude`` (too close to an evaluation prompt)."""
    drop = {normalize(t) for t in _team().get("gate_exclude", [])}
    return [t for t in _clean(texts, split) if normalize(t) not in drop]


def gate_harmful_prompts(split: Split = "all") -> list[str]:
    """Harmful prompts for fitting/choosing the conditional-steering gate.

    :func:`harmful_prompts` (long imperative requests) plus team-written short, direct harmful questions
    of many harm categories, so a gate also learns the question form.
    """
    _check_split(split)
    return _gate_clean(harmful_prompts(split) + list(_team()["gate_harmful_prompts"]), split)


def gate_benign_prompts(split: Split = "all") -> list[str]:
    """Benign prompts for fitting/choosing the conditional-steering gate.

    :func:`benign_prompts` plus team-written prompts that *sound* harmful but are fine (homonyms, figurative
    language, safe targets, game/fiction/sport contexts, definitions, history, facts about public figures
    and fictional characters, nonsense questions about groups) and ordinary requests.
    """
    _check_split(split)
    return _gate_clean(benign_prompts(split) + list(_team()["gate_benign_prompts"]), split)


def refusal_responses() -> list[str]:
    """Team-written refusal replies (used teacher-forced)."""
    return list(_team()["refusal_responses"])


def compliance_responses() -> list[str]:
    """Team-written compliance openings (generic, no harmful content; used teacher-forced)."""
    return list(_team()["compliance_responses"])


def corpus_texts() -> list[str]:
    """The shipped text-corpus subset (public-domain speeches and CC-BY-4.0 movie reviews)."""
    with gzip.open(DATA_DIR / "corpus_subset.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def paired_responses(prompts: list[str], responses: list[str]) -> list[str]:
    """Assign responses to prompts round-robin, offset by a prompt hash (deterministic variety)."""
    out = []
    for i, p in enumerate(prompts):
        off = int(hashlib.sha256(p.encode()).hexdigest()[:6], 16)
        out.append(responses[(i + off) % len(responses)])
    return out


# ---------------------------------------------------------------------- building the evaluation index
# (relative glob under the shared data folder, fields that hold prompts/questions)
EVAL_SOURCES: list[tuple[str, tuple[str, ...]]] = [
    ("xstest/xstest_prompts.csv", ("prompt",)),
    ("jailbreakbench_artifacts/jbb_harmful_behaviors_derived_from_artifacts.csv", ("Goal",)),
    ("jailbreakbench_artifacts/from_wizard101/*.json", ("text",)),
    ("harmbench/harmbench_behaviors_text_test.csv*", ("Behavior",)),
    ("multiturn/safemtdata/Attack_600.json*", ("plain_query", "multi_turn_queries")),
    ("safeedit/SafeEdit_test_*.json*", ("adversarial prompt", "question", "test input of only harmful question",
                                        "test input of other attack prompt input",
                                        "test input of other question input",
                                        "test input of other questions and attack prompts", "prompt")),
    ("mmlu/test/*.csv*", ("question",)),
    ("truthfulqa/TruthfulQA.csv*", ("Question",)),
    ("truthfulqa/mc_task.json*", ("question",)),
    ("gsm8k/test.jsonl*", ("question",)),
    ("gsm8k/test_socratic.jsonl*", ("question",)),
]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")  # type: ignore[return-value]
    return open(path, encoding="utf-8-sig", newline="")  # type: ignore[return-value]


def _strings_under(obj: Any, keys: tuple[str, ...], inside: bool = False) -> Iterator[str]:
    """Every string under a JSON value whose key is in ``keys`` (recursively)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings_under(v, keys, inside or k in keys)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings_under(v, keys, inside)
    elif isinstance(obj, str) and inside:
        yield obj


def eval_texts(data_dir: Path) -> Iterator[str]:
    """Every evaluation prompt under a data folder laid out as the project's shared data."""
    for pattern, keys in EVAL_SOURCES:
        matches = sorted(data_dir.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"no evaluation file matches {pattern!r} under {data_dir}")
        for path in matches:
            name = path.name.removesuffix(".gz")
            with _open_text(path) as f:
                if name.endswith(".csv"):
                    for row in csv.DictReader(f):
                        for k in keys:
                            if row.get(k):
                                yield row[k]
                elif name.endswith(".jsonl"):
                    for line in f:
                        if line.strip():
                            yield from _strings_under(json.loads(line), keys)
                else:
                    yield from _strings_under(json.load(f), keys)


def build_eval_index(data_dir: Path, out: Path | None = None) -> int:
    """Write the hashes of every evaluation prompt under ``data_dir``; returns how many."""
    hashes = sorted({text_hash(t) for t in eval_texts(data_dir) if normalize(t)})
    out = out or DATA_DIR / "eval_index.txt.gz"
    with gzip.open(out, "wt") as f:
        f.write("# sha1(normalised text)[:10] of every evaluation prompt; see steerboard.methods.fitdata\n")
        f.write("\n".join(hashes) + "\n")
    eval_index.cache_clear()
    return len(hashes)


def main(argv: list[str] | None = None) -> int:
    """``python -m steerboard.methods.fitdata build-eval-index DATA_DIR`` or ``stats``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build-eval-index"] and len(argv) == 2:
        n = build_eval_index(Path(argv[1]))
        print(f"indexed {n} evaluation prompts")
        return 0
    if argv[:1] == ["stats"]:
        for name, fn in (("harmful", harmful_prompts), ("benign", benign_prompts),
                         ("gate_harmful", gate_harmful_prompts), ("gate_benign", gate_benign_prompts)):
            print(name, {s: len(fn(s)) for s in ("fit", "dev", "all")})  # type: ignore[arg-type]
        return 0
    print("usage: python -m steerboard.methods.fitdata build-eval-index DATA_DIR | stats", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
