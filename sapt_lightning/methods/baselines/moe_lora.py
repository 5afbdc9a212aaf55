"""MoE-LoRA: several LoRA experts and a learned router, all trained through the stream.

A mixture of LoRA experts (as in LoRAMoE, Dou et al., 2024, ACL, and MoELoRA, Luo et al., 2024),
routed per sample: the router reads the mean of the input's (frozen) token embeddings and gives
softmax weights over the experts; every adapted layer adds Σ_e w_e · B_e A_e x. Experts and router
keep training on every task, with no task identity and no replay: what forgetting the mixture
avoids comes from the router sending different inputs to different experts. The mixing is SAPT's
(pet/lora.py), so an expert is one of its blocks; `method.experts` (4) sets their number, each of
rank pet.r, and `method.router_lr` (null: method.lr) the router's learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import nn

from ...backbones import Backbone
from ...data.task import Task
from ...errors import DataError
from ...pet.lora import MixingState, inject_lora, lora_layers
from ...rules import at_least, positive
from ...settings import MethodSettings, setting
from ...utils.io import atomic_save_safetensors, read_safetensors
from ..base import ContinualModule
from ..registry import register_method

if TYPE_CHECKING:
    from ...estimate import Counts

STATE_FILE = "moe_lora.safetensors"


@dataclass(frozen=True)
class MoELoRASettings(MethodSettings):
    experts: int = setting(at_least(1))  # LoRA experts, each of rank pet.r
    router_lr: float | None = setting(positive())  # null: method.lr


@register_method("moe_lora")
class MoELoRAModule(ContinualModule):
    pet_types = ("lora",)
    settings_class = MoELoRASettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        size = int(cfg.method.experts) * cls.block_size(cfg, counts) + int(cfg.method.experts) * (counts.hidden + 1)
        return {"trainable": size, "per_task": size, "total": n_tasks * size, "resident": size}

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        torch.manual_seed(int(cfg.seed))
        self.mixing = MixingState()
        layers = inject_lora(
            self.model,
            self.target_modules,
            int(cfg.pet.r),
            float(cfg.pet.alpha),
            self.mixing,
            "fused",
            detach_finished=False,
            dropout=float(cfg.pet.dropout),
        )
        for layer in layers:
            for _ in range(self.settings.experts):
                layer.add_block()  # (each new block freezes the others: all train, below)
            for p in [*layer.lora_A, *layer.lora_B]:
                p.requires_grad_(True)
        self.router = nn.Linear(self.model.get_input_embeddings().embedding_dim, self.settings.experts)

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, experts) softmax weights from the mean of the input's token embeddings."""
        with torch.no_grad():
            embedded = self.model.get_input_embeddings()(input_ids).float()
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (embedded * mask).sum(1) / mask.sum(1).clamp_min(1)
        return torch.softmax(self.router(pooled), dim=-1)

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        # pool_ids: the prompt alone (a decoder-only training row also holds its answer, which the
        # router must not read: at test time there is none).
        self.mixing.weights = self.route(batch["pool_ids"], batch["pool_mask"])
        return super().backbone_inputs(batch, generation)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        experts = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("router.")]
        router = list(self.router.parameters())
        return self.make_optimizer(
            [
                {"name": "experts", "params": experts, "lr": self.pet_lr()},
                {"name": "router", "params": router, "lr": self.settings.router_lr or self.lr},
            ]
        )

    def trained_state(self) -> dict[str, torch.Tensor]:
        state = {f"router.{k}": v.detach() for k, v in self.router.state_dict().items()}
        for name, layer in lora_layers(self.model):
            for e in range(layer.n_blocks):
                state[f"{name}.lora_A.{e}"] = layer.lora_A[e].detach()
                state[f"{name}.lora_B.{e}"] = layer.lora_B[e].detach()
        return state

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors(self.trained_state(), task_dir / STATE_FILE)

    @torch.no_grad()
    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.task_index = index
        saved = read_safetensors(task_dir / STATE_FILE)
        for name, tensor in self.trained_state().items():
            if name not in saved or saved[name].shape != tensor.shape:
                raise DataError(
                    f"{task_dir / STATE_FILE}: tensor {name} missing or of another shape "
                    "(another backbone, pet.r or method.experts?)"
                )
            tensor.copy_(saved[name])
