"""Parameter counts and a GPU-memory estimate of a composed config, without loading weights.

The backbone is instantiated on PyTorch's meta device from its config (a tiny spec, a local
`config.json`, or the built-in shapes of the paper's hub models), so parameter counts are exact
and need no download. Memory is an estimate (weights, trainable state with its optimizer,
activations as measured on a frozen backbone), meant to tell "fits" from "does not fit", not to
replace a short test run. `sapt-plan` prints it; a GPU run checks it before loading anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from .errors import ConfigError
from .methods.registry import method_class

GIB = 2**30
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Shapes of the paper's hub backbones (and the original t5-3b / t5-11b), so plan needs no download.
KNOWN_ARCHS: dict[str, dict] = {
    "google-t5/t5-large": dict(
        family="t5", d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64, vocab_size=32128
    ),
    "google-t5/t5-3b": dict(
        family="t5", d_model=1024, d_ff=16384, num_layers=24, num_heads=32, d_kv=128, vocab_size=32128
    ),
    "google-t5/t5-11b": dict(
        family="t5", d_model=1024, d_ff=65536, num_layers=24, num_heads=128, d_kv=128, vocab_size=32128
    ),
    "google/t5-v1_1-xl": dict(
        family="t5",
        d_model=2048,
        d_ff=5120,
        num_layers=24,
        num_heads=32,
        d_kv=64,
        vocab_size=32128,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
    "google/t5-v1_1-xxl": dict(
        family="t5",
        d_model=4096,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        d_kv=64,
        vocab_size=32128,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    ),
    "meta-llama/Llama-2-7b-hf": dict(
        family="llama",
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "meta-llama/Llama-2-13b-hf": dict(
        family="llama",
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
    ),
}
KNOWN_ARCHS["t5-large"], KNOWN_ARCHS["t5-3b"], KNOWN_ARCHS["t5-11b"] = (
    KNOWN_ARCHS["google-t5/t5-large"],
    KNOWN_ARCHS["google-t5/t5-3b"],
    KNOWN_ARCHS["google-t5/t5-11b"],
)


def backbone_config(cfg: DictConfig):
    """A transformers config for the backbone, without loading weights."""
    from transformers import AutoConfig, LlamaConfig, T5Config

    from .backbones.load import check_local_path, hub_load_options
    from .backbones.tiny import tiny_config

    b = cfg.backbone
    if b.get("tiny") and not b.name_or_path:
        return tiny_config(b.family, OmegaConf.to_container(b.tiny, resolve=True))
    path = str(b.name_or_path)
    check_local_path(path)
    if Path(path, "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as err:  # transformers' words for a bad file
            raise ConfigError(
                f"backbone.name_or_path={path}: {Path(path, 'config.json')} is not a usable transformers "
                f"config ({str(err).splitlines()[0]})"
            ) from None
    if path in KNOWN_ARCHS:
        arch = dict(KNOWN_ARCHS[path])
        family = arch.pop("family")
        return T5Config(**arch) if family == "t5" else LlamaConfig(**arch)
    hub_log = logging.getLogger("huggingface_hub")
    level, hub_log.level = hub_log.level, logging.ERROR  # no retry chatter when offline: one line below says it
    try:
        return AutoConfig.from_pretrained(path, **hub_load_options(path))
    except OSError:
        raise ConfigError(
            f"plan: no config for backbone.name_or_path='{path}': not a local directory with config.json "
            f"and not one of the known hub models ({', '.join(sorted(KNOWN_ARCHS))})"
        ) from None
    finally:
        hub_log.setLevel(level)


def optimizer_name(cfg: DictConfig) -> str:
    return str(cfg.trainer.optimizer)


def meta_model(config) -> nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config)


@dataclass
class Counts:
    frozen: int
    hidden: int
    layers: int  # the encoder's (T5) or the only stack's (LLaMA)
    decoder_layers: int  # T5's decoder; 0 for a decoder-only model
    heads: int
    inner: int  # attention width: heads x head size (T5's need not equal hidden)
    ffn: int  # feed-forward width
    ffn_bytes: float  # bytes a training step keeps per feed-forward unit and token (activation_bytes)
    vocab: int
    target_width: int  # (in + out) summed over every target linear: a rank-1 LoRA's parameters
    targets: int  # target linears in the model


def count(cfg: DictConfig) -> Counts:
    config = backbone_config(cfg)
    model = meta_model(config)
    targets = [
        m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in set(cfg.backbone.target_modules)
    ]
    if not targets:
        raise ConfigError(
            f"backbone '{cfg.backbone.name}' has no linear layer named {list(cfg.backbone.target_modules)}"
        )
    d = int(model.get_input_embeddings().weight.shape[1])
    layers = getattr(config, "num_layers", None) or config.num_hidden_layers
    decoder_layers = int(getattr(config, "num_decoder_layers", None) or layers) if config.is_encoder_decoder else 0
    heads = int(getattr(config, "num_heads", None) or config.num_attention_heads)
    if config.is_encoder_decoder:
        inner, ffn = heads * int(config.d_kv), int(config.d_ff)
        # T5 v1.1's gated GELU keeps its intermediates; ReLU keeps its output and dropout mask
        ffn_bytes = 14.5 if config.is_gated_act else 3.5
    else:
        inner = heads * int(getattr(config, "head_dim", None) or d // heads)
        ffn, ffn_bytes = int(config.intermediate_size), 6.0  # SiLU's input, both inputs of the gate's product
    return Counts(
        frozen=sum(p.numel() for p in model.parameters()),
        hidden=d,
        layers=int(layers),
        decoder_layers=decoder_layers,
        heads=heads,
        inner=inner,
        ffn=ffn,
        ffn_bytes=ffn_bytes,
        vocab=int(config.vocab_size),
        target_width=sum(m.in_features + m.out_features for m in targets),
        targets=len(targets),
    )


def method_sizes(cfg: DictConfig, c: Counts, n_tasks: int) -> dict[str, int]:
    """Trainable parameters while learning the last task, and what the run stores per task / in all:
    the method's own count (`ContinualModule.plan_sizes`)."""
    return method_class(cfg.method).plan_sizes(cfg, c, n_tasks)


def prompt_tokens(cfg: DictConfig, n_tasks: int) -> int:
    """Soft-prompt positions prepended to every input by the method (they lengthen the sequence)."""
    return method_class(cfg.method).prompt_tokens(cfg, n_tasks)


def graphs_per_step(cfg: DictConfig) -> int:
    """Micro-batches whose activations a training step holds at once (LFPT5's distillation: 2)."""
    return method_class(cfg.method).graphs_per_step(cfg)


def activation_bytes(cfg: DictConfig, c: Counts, checkpointing: bool, extra_tokens: int = 0, graphs: int = 1) -> float:
    """Per-device activations of a training step on `graphs` micro-batches back-propagated together:
    the most the step holds for its backward.

    Bytes per token and layer in 16-bit, h the hidden width, i the attention width, f the
    feed-forward width: a T5 encoder layer 21h + 8i + k·f, a decoder layer 32h + 12i + k·f plus
    the encoder's keys and values (4·i per source token), a LLaMA layer 10h + 8i + 6f; k is 3.5 for
    ReLU, 14.5 for T5 v1.1's gated GELU. Outside the layers: the embeddings' output and the final
    norms (10h per token in T5, 4h in LLaMA), T5's position biases (one per stack, shared by its
    rows and layers) and float32 logits, whose gradient is as large again.

    With gradient checkpointing each layer keeps only its input (2h per token); the backward
    recomputes one layer at a time, so the peak is what is kept plus the largest layer (or the
    logits' gradient, if larger), once however many graphs the step has. Measured on frozen 16-bit
    backbones with LoRA under bf16 autocast and SDPA attention, which keeps no s x s scores
    (tests/test_scale.py measures it again).
    Korthikanti et al.'s 34 + 5·a·s/h per h, for full training with attention scores kept, is
    1.5-3.4x what these runs keep."""
    b, h, i, f = int(cfg.data.batch_size), c.hidden, c.inner, c.ffn * c.ffn_bytes
    src, tgt = int(cfg.data.max_source_length) + extra_tokens, int(cfg.data.max_target_length)
    scale = (2 if "16" in str(cfg.strategy.precision) else 4) / 2
    if cfg.backbone.family == "t5":
        stacks = [
            (c.layers, src, src * b * (21 * h + 8 * i + f)),
            (c.decoder_layers, tgt, tgt * b * (32 * h + 12 * i + f) + 4 * src * b * i),
        ]
        outside = 10 * h * (src + tgt) * b + 2 * c.heads * (src * src + tgt * tgt + tgt * src)
        predicted = tgt
    else:
        s = src + tgt
        stacks, outside, predicted = [(c.layers, s, s * b * (10 * h + 8 * i + f))], 4 * h * s * b, s
    logits = b * predicted * c.vocab * 4
    if not checkpointing:
        return graphs * ((sum(n * layer for n, _, layer in stacks) + outside) * scale + logits) + logits
    inputs = sum(n * 2 * h * length * b for n, length, _ in stacks)
    return graphs * ((inputs + outside) * scale + logits) + max(max(layer for *_, layer in stacks) * scale, logits)


def generator_activation_bytes(cfg: DictConfig, c: Counts, checkpointing: bool) -> float:
    """Activations of one forward/backward of a step the method trains between tasks (SAPT's
    generator); 0 where it trains none."""
    shape = method_class(cfg.method).between_tasks_batch(cfg)
    if shape is None:
        return 0.0
    return activation_bytes(OmegaConf.merge(cfg, {"data": shape}), c, checkpointing)


def estimate(cfg: DictConfig, c: Counts, sizes: dict[str, int], n_tasks: int = 15) -> dict[str, float]:
    s = cfg.strategy
    devices = int(s.devices) * int(s.num_nodes)
    zero = {"deepspeed_stage_2": 2, "deepspeed_stage_3": 3, "deepspeed_stage_3_offload": 3}.get(str(s.strategy), 0)
    offload = "offload" in str(s.strategy)
    weight_bytes = _BYTES.get(str(cfg.backbone.dtype), 4)
    weights = c.frozen * weight_bytes / (devices if zero == 3 else 1)
    if zero == 3 and offload:
        weights = 0.0  # parameters live in CPU memory and stream in layer by layer
    resident = sizes["resident"] * 4  # fp32 PET parameters of every task in memory
    # fp32 gradient + AdamW's two moments; Adafactor (constant lr, no momentum) keeps factored
    # second moments of a matrix, a row and a column: next to nothing
    states = sizes["trainable"] * (4 + (8 if optimizer_name(cfg) == "adamw" else 0))
    if zero >= 2:
        states /= devices
    if offload:
        states = 0.0
    checkpointing = bool(cfg.trainer.gradient_checkpointing)
    acts = activation_bytes(cfg, c, checkpointing, prompt_tokens(cfg, n_tasks), graphs_per_step(cfg))
    total = weights + resident + states + acts
    # The steps between tasks (generator training, ARM statistics, scoring) run outside the engine,
    # on the whole model on each device: under ZeRO-3 that, not the sharded fit, is the peak.
    generator = generator_activation_bytes(cfg, c, checkpointing)
    between = c.frozen * weight_bytes + resident + max(acts, generator)
    overhead = 1.15  # CUDA context, allocator fragmentation, temporaries
    return {
        "weights": weights,
        "pet": resident,
        "optimizer": states,
        "activations": acts,
        "total": total * overhead,
        "between_tasks": between * overhead,
        "generator_activations": generator,
        "peak": max(total, between) * overhead,
    }


def stream_length(cfg: DictConfig) -> int:
    tasks = cfg.benchmark.get("tasks") or (cfg.get("order") or {}).get("tasks") or []
    n = len(tasks) if tasks else 15
    return min(n, int(cfg.benchmark.num_tasks)) if cfg.benchmark.get("num_tasks") else n
