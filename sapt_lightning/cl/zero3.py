"""ZeRO-3 for one task's fit, and whole parameters again for the steps between tasks.

ZeRO-3 partitions every parameter across the ranks and gathers a module's own parameters
only while that module is called. Two things follow:

- Per-task blocks (LoRA blocks, keys, soft prompts) live in `nn.ParameterList`s, which are
  never called. DeepSpeed gathers a parameter read by attribute during the engine's forward
  (its "external parameter" discovery, which the baselines rely on), but SAPT's fused mixing
  reads its lists' parameter dicts directly, which it does not see: `register_block_lists`
  tells DeepSpeed that the module owning a list uses its parameters in its forward (the
  contract those modules keep: `MultiTaskLoRALinear`, `SharedAttention`, `PromptBank` read
  their lists only inside `forward`).
- The steps between tasks (generator training, statistics, scoring, saving) run outside any
  engine and read whole tensors: `gather_whole` copies each parameter whole while the engine
  lives, and `unpartition`, once it is gone, puts the copies in and strips everything the
  engine attached to parameters and modules (its hooks' closures, kept as module attributes,
  refer to that engine, and the next one would reuse them), so the next task's engine
  partitions the module afresh, as the first one did. Between tasks every rank
  then holds the whole model, as under ZeRO-2: ZeRO-3 shards it during the fit only.
"""

from __future__ import annotations

import torch
from torch import nn

Snapshot = dict[int, frozenset[str]]  # id of a module or parameter -> its attribute names


def snapshot(module: nn.Module) -> Snapshot:
    """The attribute names of every submodule and parameter before an engine touches them."""
    return {id(obj): frozenset(vars(obj)) for obj in _modules_and_parameters(module)}


def register_block_lists(module: nn.Module) -> None:
    """Register every ParameterList's parameters as external parameters of the list's owner,
    so that ZeRO-3 gathers them when the owner is called."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for owner in module.modules():
        for child in owner.children():
            if isinstance(child, nn.ParameterList):
                for param in child.parameters():
                    register_external_parameter(owner, param)


@torch.no_grad()
def gather_whole(engine, module: nn.Module) -> dict[int, torch.Tensor]:
    """A whole CPU copy of every partitioned parameter of `module`, taken while the engine lives
    (destroying it may free the buffers that hold offloaded partitions).

    The engine first settles: in-flight prefetches finish and every parameter is partitioned,
    so all ranks enter the gathers in the same state. A collective: every rank calls it, and
    the parameters are gathered one at a time in the same order."""
    import deepspeed

    engine.empty_partition_cache()
    whole = {}
    for param in module.parameters():
        if hasattr(param, "ds_id"):
            with deepspeed.zero.GatheredParameters([param]):
                whole[id(param)] = param.data.to("cpu", copy=True)  # where Lightning leaves a module after fit
    return whole


def unpartition(module: nn.Module, whole: dict[int, torch.Tensor], before: Snapshot) -> None:
    """After the engine is destroyed: the whole tensors back in, and no ZeRO-3 state left - neither
    the attributes it added to the modules and parameters that existed before it, nor its own
    parameter dicts, nor its replacement of torch.nn.functional.linear."""
    for param in module.parameters():
        if id(param) in whole:
            param.data = whole[id(param)]
    for obj in _modules_and_parameters(module):
        if id(obj) in before:
            for name in set(vars(obj)) - before[id(obj)]:
                delattr(obj, name)
    for sub in module.modules():  # the engine swaps in its own parameter dict, which gathers on access
        sub._parameters = dict(sub._parameters)
    _restore_linear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _restore_linear() -> None:
    """ZeRO-3's engine replaces F.linear for the whole process with a version for partitioned
    weights ("memory_efficient_linear"), and leaves it there; the next engine puts it back."""
    from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as patcher

    original = getattr(patcher, "linear_bk", None)
    if original is not None:
        torch.nn.functional.linear = original


def _modules_and_parameters(module: nn.Module) -> list[object]:
    return [*module.modules(), *module.parameters()]
