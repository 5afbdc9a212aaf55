"""ZeRO-3 for one task's fit, and whole parameters again for the steps between tasks.

ZeRO-3 partitions every parameter across the ranks and gathers a module's own parameters
only while that module is called. Two things follow for SAPT:

- Per-task blocks (LoRA blocks, keys, soft prompts) live in `nn.ParameterList`s, which are
  never called: `register_block_lists` tells DeepSpeed that the module owning a list uses
  its parameters in its forward (the contract those modules keep: `MultiTaskLoRALinear`,
  `SharedAttention`, `PromptBank` read their lists only inside `forward`).
- The steps between tasks (generator training, statistics, scoring, saving) run outside any
  engine and read whole tensors: `unpartition` gathers each parameter once after the engine
  is gone and strips everything the engine attached to parameters and modules, so the next
  task's engine partitions the module afresh, as the first one did. Between tasks every rank
  then holds the whole model, as under ZeRO-2: ZeRO-3 shards it during the fit only.
"""

from __future__ import annotations

import torch
from torch import nn

# Module attributes that the engine attaches and that must not outlive it: its hooks' closures
# (pre_bwd_fn, post_bwd_fn) refer to that engine, and the next one reuses them when present.
Snapshot = dict[int, frozenset[str]]


def snapshot(module: nn.Module) -> Snapshot:
    """The attribute names of every submodule and parameter before an engine touches them."""
    return {id(obj): frozenset(vars(obj)) for obj in _modules_and_parameters(module)}


def register_block_lists(module: nn.Module) -> int:
    """Register every ParameterList's parameters as external parameters of the list's owner,
    so that ZeRO-3 gathers them when the owner is called. Returns how many it registered."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    count = 0
    for owner in module.modules():
        for child in owner.children():
            if isinstance(child, nn.ParameterList):
                for param in child.parameters():
                    register_external_parameter(owner, param)
                    count += 1
    return count


@torch.no_grad()
def unpartition(module: nn.Module, before: Snapshot) -> None:
    """Whole tensors in every partitioned parameter of `module`, and no ZeRO-3 state left on it.

    A collective: every rank calls it, and the parameters are gathered in the same order."""
    import deepspeed

    for param in module.parameters():
        if not hasattr(param, "ds_id"):
            continue
        with deepspeed.zero.GatheredParameters([param]):
            whole = param.data.to("cpu", copy=True)  # on the CPU, where Lightning leaves a module after fit
        param.data = whole
    for obj in _modules_and_parameters(module):
        for name in set(vars(obj)) - before.get(id(obj), frozenset()):
            delattr(obj, name)
    for sub in module.modules():  # the engine swaps in its own parameter dict, which gathers on access
        sub._parameters = dict(sub._parameters)


def is_partitioned(module: nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


def _modules_and_parameters(module: nn.Module) -> list[object]:
    return [*module.modules(), *module.parameters()]
