"""``sft/<model>``: supervised fine-tuning baseline (trl ``SFTTrainer`` + LoRA) on the chosen replies of the
DPO preference pairs.

Wang et al. (2024, *Detoxifying Large Language Models via Knowledge Editing*, Table 4) compare SFT, DPO and
DINM side by side; this is the SFT row. It trains on the same pairs as ``dpo/``
(``methods/data/dpo/pairs.jsonl.gz``, the ``train`` split): the prompt and its *chosen* reply (a refusal
for a harmful prompt, a helpful answer for a benign one), the loss on the reply tokens only. Options,
pair validation, ``max_pairs`` sampling (stratified, seeded), held-out statistics, the shipped adapter
(``methods/artifacts/sft-smollm2-135m/``, sha256 checked) and the cache behave as in ``dpo/``
(:mod:`steerboard.methods.dpo`); held-out preference accuracy is measured with the DPO implicit reward at
beta 0.1, as a diagnostic of how SFT moves chosen against rejected replies.

Example::

    inspect eval tasks/xstest.py --model sft/smollm2-135m
    nice -n 10 python -m steerboard.methods.dpo train --kind sft --ship   # train the shipped adapter again
"""

from __future__ import annotations

from dataclasses import dataclass

from steerboard.methods.dpo import AdapterConfig, AdapterMethod


@dataclass
class SFTConfig(AdapterConfig):
    """Options of ``sft/``: those of :class:`~steerboard.methods.dpo.AdapterConfig`."""


class SFTMethod(AdapterMethod):
    """Serves the model with an SFT-trained LoRA adapter merged into its private weights."""

    name = "sft"
    kind = "sft"
    config_class = SFTConfig
    sequences_per_pair = 1  # the chosen reply only
