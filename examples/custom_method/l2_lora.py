"""A method that lives outside the package: LoRA anchored to where the last task left it.

One LoRA trains through the stream, as SeqLoRA, and its loss adds
    anchor_weight · Σ ‖θ − θ_previous‖²
over the LoRA parameters, θ_previous being their values when the task began: the simplest
regulariser against forgetting. Everything the framework needs to know is declared here
(name, PET types, its typed settings); its settings are in method/l2_lora.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sapt_lightning.data.task import Example, Task
from sapt_lightning.methods import register_method
from sapt_lightning.methods.baselines.seq_lora import PeftLoRAModule
from sapt_lightning.rules import non_negative
from sapt_lightning.settings import MethodSettings, setting


@dataclass(frozen=True)
class L2LoRASettings(MethodSettings):
    """The keys every method has, plus its own: type and range here, default in the yaml."""

    anchor_weight: float = setting(non_negative())


@register_method("l2_lora")
class L2AnchoredLoRA(PeftLoRAModule):
    pet_types = ("lora",)
    settings_class = L2LoRASettings

    def start_task(self, index: int, task: Task) -> list[Example]:
        extra = super().start_task(index, task)
        # The first task has nothing to keep; later ones start from the weights the last task left.
        self.anchors = [p.detach().clone() for p in self.parameters() if p.requires_grad] if index > 0 else []
        return extra

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super().training_losses(batch)
        if not self.anchors:
            return losses
        trainable = [p for p in self.parameters() if p.requires_grad]
        drift = sum(((p - a) ** 2).sum() for p, a in zip(trainable, self.anchors, strict=True))
        losses["loss"] = losses["loss"] + self.settings.anchor_weight * drift
        losses["drift"] = drift.detach()
        return losses
