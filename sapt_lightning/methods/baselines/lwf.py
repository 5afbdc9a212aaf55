"""LwF: SeqLoRA that distils, on the new task's inputs, what the model answered before the task.

Learning without Forgetting (Li & Hoiem, 2016, ECCV; TPAMI 2018). When a task begins, the LoRA
as the last task left it becomes the teacher. On each training batch of the new task, the student
adds to its token loss

    distill_weight · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)),

averaged over the batch's target tokens (teacher forcing on the new task's answers: the old
model's prediction at each answer position is the "old task's output" the paper records). No data
of earlier tasks is kept. Defaults are the paper's: T = 2, weight 1 (its loss has no T² factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch.func import functional_call
from torch.nn import functional as F

from ...backbones import Backbone
from ...data.task import Example, Task
from ...rules import non_negative, positive
from ...settings import MethodSettings, setting
from ..base import global_token_mean, predicted_labels
from ..registry import register_method
from .seq_lora import SeqLoRAModule

if TYPE_CHECKING:
    from ...estimate import Counts


@dataclass(frozen=True)
class LwFSettings(MethodSettings):
    distill_weight: float = setting(non_negative())  # weight of the distillation term
    temperature: float = setting(positive())  # softens both distributions (the paper's T)


@register_method("lwf")
class LwFModule(SeqLoRAModule):
    settings_class = LwFSettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        block = cls.block_size(cfg, counts)  # the LoRA and its teacher copy
        return {"trainable": block, "per_task": block, "total": n_tasks * block, "resident": 2 * block}

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.teacher: dict[str, torch.Tensor] = {}  # the LoRA as the last task left it

    def start_task(self, index: int, task: Task) -> list[Example]:
        extra = super().start_task(index, task)
        # The first task has no earlier model to keep; later ones distil the weights it starts from.
        self.teacher = {name: p.detach().clone() for name, p in self.trained().items()} if index > 0 else {}
        return extra

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.teacher:
            return super().training_losses(batch)
        inputs = self.backbone_inputs(batch)
        outputs = self.step_model(**inputs)
        encoder_decoder = self.model.config.is_encoder_decoder
        task_loss = (
            global_token_mean(outputs.logits, inputs["labels"], encoder_decoder)
            if self.is_distributed()
            else outputs.loss  # the backbone's own mean, as SeqLoRA's
        )
        distill = self.distillation(inputs, outputs.logits, encoder_decoder)
        return {
            "loss": task_loss + self.settings.distill_weight * distill,
            "task_loss": task_loss.detach(),
            "distill": distill.detach(),
        }

    def distillation(
        self, inputs: dict[str, torch.Tensor], logits: torch.Tensor, encoder_decoder: bool
    ) -> torch.Tensor:
        """KL(teacher ‖ student) at temperature T per target token, averaged over the target tokens."""
        with torch.no_grad(), self.in_eval_mode():  # the teacher answers as at test time: no dropout
            weights = self.beside_parameters(self.teacher)
            teacher = functional_call(self.model, weights, args=(), kwargs=inputs, strict=False).logits
        labels = predicted_labels(inputs["labels"], encoder_decoder)
        if not encoder_decoder:  # position t predicts token t+1: the last position has no label
            logits, teacher = logits[:, :-1], teacher[:, :-1]
        kept = labels != -100
        t = self.settings.temperature
        student_log = F.log_softmax(logits[kept].float() / t, dim=-1)
        teacher_log = F.log_softmax(teacher[kept].float() / t, dim=-1)
        kl = F.kl_div(student_log, teacher_log, log_target=True, reduction="sum")
        return kl / kept.sum().clamp_min(1)
