"""Test helpers: a tiny random-weight llama with a real tokenizer and chat template, built offline.

Used by the unit tests of the engine and of every method (no downloads). Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "I cannot help with that request. I'm sorry, but I can't assist with making weapons.",
    "Sure, here is how to bake bread: mix flour, water, salt and yeast, then knead and bake.",
    "The capital of France is Paris. The answer is (A). 12 + 30 = 42.",
    "How do I kill a Python process? Use the kill command with the process id.",
    "As an AI language model, I must decline. That would be harmful and illegal.",
    "Question: What is 2+2? Answer: 4. Choices: A B C D. The correct option is B.",
]


def make_tiny_model(out_dir: str | Path, *, seed: int = 0, layers: int = 4, hidden: int = 64) -> Path:
    """Build and save a tiny random LlamaForCausalLM with a byte-level BPE tokenizer.

    Args:
        out_dir: where to save (config, safetensors, tokenizer).
        seed: torch seed for the random weights.
        layers: decoder layers.
        hidden: hidden size.

    Returns:
        The directory, loadable by ``Engine.load``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tk.train_from_iterator(_CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    # larger-than-default init spreads the logits so greedy picks are not near-ties
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out)
    return out


def greedy_token_ids(
    engine: Any, prompts: list[str], intervention: Any = None, n: int = 8, metas: list[dict[str, Any]] | None = None
) -> list[list[int]]:
    """Greedy ``n``-token replies (token ids) to single-turn ``prompts``, optionally under ``intervention``
    and with per-request ``metas``."""
    from steerboard.engine import GenerationRequest

    reqs = [
        GenerationRequest(input_ids=engine.chat_ids([{"role": "user", "content": p}]), max_new_tokens=n,
                          meta=(metas[i] if metas else {}))
        for i, p in enumerate(prompts)
    ]
    return [r.token_ids for r in engine.generate(reqs, intervention=intervention)]
