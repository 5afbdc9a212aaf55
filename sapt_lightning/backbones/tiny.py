"""Backbones built here for CPU: a BPE tokenizer trained here, a small T5 or LLaMA built
from a config, pretrained, saved to a cache folder and loaded back through from_pretrained.

Two worlds, chosen by `backbone.tiny.corpus`:
- `synthetic` (tiny_t5, tiny_llama): pretrained on generic string operations (seconds to minutes);
- `cl_benchmark` (mini_t5, mini_llama): tokenizer and model learn from the unlabelled text of
  CL_Benchmark's train splits (`corpus.py`), with span corruption or next-token prediction
  (`mini.py`), so that real tasks become learnable.

Everything is deterministic in the config (and, for a mini backbone, in the digests of the files it
reads), and the cache key is a hash of it, so the first run pays for pretraining and later runs load it.
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
from collections.abc import Callable, Iterable
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
from transformers.optimization import Adafactor

from ..data.synthetic import pretraining_examples, tokenizer_corpus
from ..data.task import render_prompt
from ..errors import ConfigError, DataError
from ..utils.progress import progress
from . import corpus as text_corpus
from .embeddings import ppmi_embeddings
from .mini import NUM_SENTINELS, sentinel, text_batch, token_stream

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
# Markers of the pseudo-sample generator (docs/method.md §4.1), kept whole by the tokenizer.
GENERATOR_MARKERS = ["__gen__", "__inp__", "__ans__"]
_CACHE_VERSION = 1  # bump when the build recipe changes
# Bumped when the PPMI initialisation changes, so that only the builds that use it are rebuilt
# (2: tokens absent from the corpus keep distinct random rows).
_PPMI_VERSION = 2
SYNTHETIC, CL_BENCHMARK = "synthetic", "cl_benchmark"
# Keys that say where the corpus lies or where the build runs, not what it is: left out of the cache
# key (the corpus's digests are in it instead).
_LOCATION_KEYS = ("corpus_dir", "pretrain_device")

Batches = Callable[[random.Random], dict]
_BUILD_INFO = "build.json"  # the recipe, wall time and parameter count of a build


def train_tokenizer(
    vocab_size: int, corpus: Iterable[str] | None = None, extra_special: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (any text encodes) with T5's special ids: pad 0, eos 1, unk 2.
    `corpus` defaults to the synthetic world's text; `extra_special` (T5 sentinels) come last."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus() if corpus is None else corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    # Non-special added tokens: never split, and kept by decode(skip_special_tokens=True).
    tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in GENERATOR_MARKERS])
    extra = list(extra_special or [])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, additional_special_tokens=extra
    )


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


# The recipe's named choices, the first of each the default (what the tiny backbones use).
_CHOICES = {
    "pretrain_schedule": ("constant", "linear"),
    "pretrain_optimizer": ("adamw", "adafactor"),
    "embedding_init": ("random", "ppmi"),
}


def _choice(spec: dict, key: str) -> str:
    return str(spec.get(key) or _CHOICES[key][0])


def check_choices(spec: dict) -> None:
    """Refuse an unknown choice before minutes of tokenizer training, not after."""
    for key, allowed in _CHOICES.items():
        if _choice(spec, key) not in allowed:
            raise ConfigError(f"backbone.tiny.{key}={spec[key]}: must be one of {', '.join(allowed)}")


def _schedule(spec: dict, steps: int) -> Callable[[int], float]:
    """The learning-rate factor per step: constant (the tiny world), or linear warm-up over 2% of
    the steps then linear decay to 10% (`pretrain_schedule: linear`, the mini backbones)."""
    if _choice(spec, "pretrain_schedule") == "constant":
        return lambda step: 1.0
    warmup = max(1, steps // 50)
    return lambda step: min((step + 1) / warmup, 1.0 - 0.9 * max(0, step - warmup) / max(1, steps - warmup))


def _optimizer(model: PreTrainedModel, spec: dict) -> torch.optim.Optimizer:
    """AdamW (the default), or Adafactor with updates scaled to each parameter's size: T5
    initialises its embeddings at std 1, which AdamW's fixed-size steps barely move in a CPU budget."""
    lr = float(spec["pretrain_lr"])
    if _choice(spec, "pretrain_optimizer") == "adafactor":
        return Adafactor(model.parameters(), lr=lr, scale_parameter=True, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(model.parameters(), lr=lr)


def _init_embeddings(model: PreTrainedModel, stream: torch.Tensor, spec: dict) -> None:
    """`embedding_init: ppmi` starts from the corpus's count-based vectors (`embeddings.py`);
    `random` (the default) keeps the model's own initialisation."""
    if _choice(spec, "embedding_init") == "random":
        return
    weight = model.get_input_embeddings().weight
    start = time.time()
    vectors = ppmi_embeddings(stream, weight.detach())
    with torch.no_grad():
        weight.copy_(vectors)
    log.info("embeddings initialised from the corpus's PPMI vectors (%.0fs)", time.time() - start)


def pretrain(model: PreTrainedModel, batches: Batches, family: str, spec: dict, seed: int) -> float:
    """Train on `batches(rng)` for `pretrain_steps` steps; returns the last loss (nan with no step)."""
    steps = int(spec["pretrain_steps"])
    if steps <= 0:
        return float("nan")
    rng = random.Random(seed)
    device = pretrain_device(spec)
    model.to(device)
    opt = _optimizer(model, spec)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(spec, steps))
    model.train()
    start, loss = time.time(), torch.tensor(float("nan"))
    every = max(50, steps // 20)
    with progress(f"pretraining {family} on {device}", steps, "steps") as shown:
        for step in range(1, steps + 1):
            loss = model(**{k: v.to(device) for k, v in batches(rng).items()}).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            shown.update()
            if step % 10 == 0 or step == steps:
                shown.show(loss=loss.item())
            if step % every == 0 or step == steps:  # the log keeps the curve the bar showed
                log.info(
                    "pretraining %s on %s: step %d/%d loss %.3f (%.0fs)",
                    family,
                    device,
                    step,
                    steps,
                    loss.item(),
                    time.time() - start,
                )
    model.eval()
    model.to("cpu")
    return float(loss.item())


def pretrain_device(spec: dict) -> str:
    """`pretrain_device: auto` (the mini backbones) pretrains on a GPU when there is one; the tiny
    backbones stay on the CPU, so that their weights are the same on every machine."""
    choice = str(spec.get("pretrain_device") or "cpu")
    if choice not in ("cpu", "auto", "cuda"):
        raise ConfigError(f"backbone.tiny.pretrain_device={choice}: must be cpu, cuda or auto")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("backbone.tiny.pretrain_device=cuda, but torch sees no CUDA device here (use auto or cpu)")
    return choice


def _recipe(family: str, spec: dict, seed: int) -> dict:
    """What a build depends on besides its corpus: the same recipe on the same text is the same backbone."""
    kept = {k: v for k, v in spec.items() if k not in _LOCATION_KEYS}
    recipe = {"family": family, "spec": kept, "seed": seed, "v": _CACHE_VERSION}
    if _choice(spec, "embedding_init") == "ppmi":
        recipe["ppmi_v"] = _PPMI_VERSION
    return recipe


def corpus_of(spec: dict) -> str:
    corpus = spec.get("corpus", SYNTHETIC)
    if corpus not in (SYNTHETIC, CL_BENCHMARK):
        raise ConfigError(f"backbone.tiny.corpus={corpus}: must be {SYNTHETIC} or {CL_BENCHMARK}")
    return corpus


def _corpus_digests(files: list[text_corpus.CorpusFile] | None) -> str | dict[str, str]:
    if files is None:  # (a plain digest: the tiny backbones' keys stay what they were)
        return hashlib.sha256("\n".join(tokenizer_corpus()).encode()).hexdigest()
    return text_corpus.manifest(files)


def cache_key(family: str, spec: dict, seed: int, files: list[text_corpus.CorpusFile] | None = None) -> str:
    """Changes whenever the recipe, the config or the text the backbone learns from changes."""
    blob = json.dumps({**_recipe(family, spec, seed), "corpus": _corpus_digests(files)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _earlier_build(folder: Path, name: str, recipe: dict) -> Path | None:
    """The newest cached build of the same backbone and recipe (its corpus differs, or it would be hit)."""
    builds = [
        p
        for p in folder.glob(f"{name}-*")
        if (p / _BUILD_INFO).is_file() and json.loads((p / _BUILD_INFO).read_text()).get("recipe") == recipe
    ]
    return max(builds, key=lambda p: p.stat().st_mtime, default=None)


def _announce_rebuild(name: str, target: Path, recipe: dict, files: list[text_corpus.CorpusFile] | None) -> None:
    earlier = _earlier_build(target.parent, name, recipe) if files is not None else None
    if earlier is None:
        log.info("building backbone %s (first use; cached at %s)", name, target)
        return
    change = text_corpus.describe_change(text_corpus.read_manifest(earlier) or {}, text_corpus.manifest(files or []))
    log.warning(
        "backbone %s: its pretraining corpus changed since the build at %s (%s), so its cache key changed; "
        "building it again at %s (sapt-build-backbone backbone=%s builds it ahead of a run)",
        name,
        earlier,
        change,
        target,
        name,
    )


def _build(family: str, spec: dict, seed: int, files: list[text_corpus.CorpusFile] | None):
    """Tokenizer and pretrained model, from the synthetic world or from the corpus files."""
    torch.manual_seed(seed)
    if files is None:
        tokenizer = train_tokenizer(int(spec["vocab_size"]))
        model = _build_model(family, spec, len(tokenizer))
        batches: Batches = lambda rng: _pretrain_batch(family, tokenizer, rng, int(spec["pretrain_batch_size"]))
        return tokenizer, model, pretrain(model, batches, family, spec, seed)
    texts = list(text_corpus.corpus_texts(files))
    sentinels = [sentinel(k) for k in range(NUM_SENTINELS)] if family == "t5" else []
    tokenizer = train_tokenizer(int(spec["vocab_size"]), texts, sentinels)
    stream = token_stream(tokenizer, texts)
    length = int(spec["pretrain_length"])
    if len(stream) <= length:
        raise DataError(f"the mini backbone's corpus holds {len(stream)} tokens, fewer than pretrain_length={length}")
    log.info("mini %s corpus: %d train files, %d texts, %d tokens", family, len(files), len(texts), len(stream))
    model = _build_model(family, spec, len(tokenizer))
    _init_embeddings(model, stream, spec)
    size = int(spec["pretrain_batch_size"])
    prefix = float(spec.get("prefix_lm_fraction") or 0.0)
    batches = lambda rng: text_batch(family, stream, tokenizer, rng, size, length, prefix)
    return tokenizer, model, pretrain(model, batches, family, spec, seed)


def ensure_tiny_backbone(name: str, family: str, spec: dict, cache_dir: Path, seed: int = 0) -> Path:
    """Return the folder of the pretrained backbone, building it on first use."""
    check_choices(spec)
    files = text_corpus.corpus_files(spec) if corpus_of(spec) == CL_BENCHMARK else None
    target = cache_dir / "backbones" / f"{name}-{cache_key(family, spec, seed, files)}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    recipe = _recipe(family, spec, seed)
    _announce_rebuild(name, target, recipe, files)
    start = time.time()
    tokenizer, model, last_loss = _build(family, spec, seed, files)
    info = {
        "recipe": recipe,
        "seconds": round(time.time() - start, 1),
        "last_loss": last_loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": pretrain_device(spec),
        "torch_threads": torch.get_num_threads(),
    }
    # Write into a temporary sibling, then rename: a crash never leaves half a backbone.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _BUILD_INFO).write_text(json.dumps(info, indent=1))
        if files is not None:
            text_corpus.write_manifest(tmp, files)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    return target
