"""Tiny backbones for CPU: a BPE tokenizer trained here, a small T5 or LLaMA built
from a config, pretrained on generic string operations, saved to a cache folder.

Everything is deterministic in the config, and the cache key is a hash of it, so
the first run pays for pretraining (a few minutes) and later runs load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from ..data.synthetic import pretraining_examples, tokenizer_corpus
from ..data.task import render_prompt

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Markers of the pseudo-sample generator (docs/method.md §4.1), kept whole by the tokenizer.
GENERATOR_MARKERS = ["__gen__", "__inp__", "__ans__"]
_CACHE_VERSION = 1  # bump when the build recipe changes


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes) with T5's special ids: pad 0, eos 1, unk 2."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    # Non-special added tokens: never split, and kept by decode(skip_special_tokens=True).
    tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in GENERATOR_MARKERS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def tiny_config(family: str, spec: dict[str, Any], vocab_size: int | None = None) -> T5Config | LlamaConfig:
    """The transformers config of a tiny backbone (also used by `sapt_lightning.plan`)."""
    vocab_size = vocab_size or int(spec["vocab_size"])
    if family == "t5":
        return T5Config(
            vocab_size=vocab_size,
            d_model=spec["d_model"],
            d_ff=spec["d_ff"],
            num_layers=spec["num_layers"],
            num_decoder_layers=spec["num_decoder_layers"],
            num_heads=spec["num_heads"],
            d_kv=spec["d_kv"],
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_attention_heads"],
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        tie_word_embeddings=True,
    )


def _build_model(family: str, spec: dict[str, Any], vocab_size: int) -> PreTrainedModel:
    config = tiny_config(family, spec, vocab_size)
    return T5ForConditionalGeneration(config) if family == "t5" else LlamaForCausalLM(config)


def _pretrain_batch(family: str, tokenizer: PreTrainedTokenizerFast, rng: random.Random, size: int) -> dict:
    examples = pretraining_examples(rng, size)
    prompts = [render_prompt(ex, "synthetic") for ex in examples]
    targets = [ex.target for ex in examples]
    if family == "t5":
        enc = tokenizer(prompts, padding=True, return_tensors="pt")
        lab = tokenizer(targets, padding=True, return_tensors="pt").input_ids
        lab[lab == tokenizer.pad_token_id] = -100
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": lab}
    rows, labels = [], []
    for p, t in zip(prompts, targets):
        p_ids = tokenizer(p, add_special_tokens=False).input_ids
        t_ids = tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        rows.append(p_ids + t_ids)
        labels.append([-100] * len(p_ids) + t_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    lab = torch.tensor([[-100] * (width - len(r)) + r for r in labels])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def pretrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, family: str, spec: dict, seed: int) -> None:
    steps = int(spec["pretrain_steps"])
    if steps <= 0:
        return
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=float(spec["pretrain_lr"]))
    model.train()
    start = time.time()
    for step in range(1, steps + 1):
        batch = _pretrain_batch(family, tokenizer, rng, int(spec["pretrain_batch_size"]))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 500 == 0 or step == steps:
            log.info(
                "pretraining tiny %s: step %d/%d loss %.3f (%.0fs)",
                family,
                step,
                steps,
                loss.item(),
                time.time() - start,
            )
    model.eval()


def cache_key(family: str, spec: dict, seed: int) -> str:
    """Changes whenever the recipe, the config or the text the tokenizer learns from changes."""
    corpus = hashlib.sha256("\n".join(tokenizer_corpus()).encode()).hexdigest()
    blob = json.dumps(
        {"family": family, "spec": spec, "seed": seed, "v": _CACHE_VERSION, "corpus": corpus}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_tiny_backbone(name: str, family: str, spec: dict, cache_dir: Path, seed: int = 0) -> Path:
    """Return the folder of the pretrained tiny backbone, building it on first use."""
    target = cache_dir / "backbones" / f"{name}-{cache_key(family, spec, seed)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building tiny backbone %s (first use; cached at %s)", name, target)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(int(spec["vocab_size"]))
    model = _build_model(family, spec, len(tokenizer))
    pretrain(model, tokenizer, family, spec, seed)
    # Write into a temporary sibling, then rename: a crash never leaves half a backbone.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    return target
