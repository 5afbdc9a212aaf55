"""I-LoRA: a plastic LoRA that trains, a stable LoRA that follows it slowly and answers.

Interpolation-based LoRA (Ren et al., 2024, "Analyzing and Reducing Catastrophic Forgetting in
Parameter Efficient Tuning", arXiv:2402.18865): experience replay with two copies of one LoRA.
The plastic copy trains on each batch of the task plus a batch of the memory (Replay's: a
`replay_fraction` of each finished task's training set), and on the memory batch its last hidden
states are pulled (mean squared error, `consistency_weight`) to those of the stable copy. After
every optimizer step the stable copy moves toward the plastic one,

    θ_stable ← ema_alpha · θ_stable + (1 − ema_alpha) · θ_plastic,

and the stable copy is the model that is scored. Defaults are those of EasyCL's I-LoRA (EMA 0.999,
consistency weight 1); with few steps per task the stable copy moves little (0.999 over 300 steps:
a quarter of the way), and `method.ema_alpha` is the key to lower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch.func import functional_call
from torch.nn import functional as F

from ...backbones import Backbone
from ...data.task import Task
from ...errors import DataError
from ...rules import non_negative, unit_interval
from ...settings import setting
from ..registry import register_method
from .replay import MemoryBatchModule, ReplaySettings

if TYPE_CHECKING:
    from ...estimate import Counts

STABLE_FILE = "ilora_stable.safetensors"
STABLE_KEY = "ilora_stable"  # in a checkpoint inside a task


@dataclass(frozen=True)
class ILoRASettings(ReplaySettings):
    ema_alpha: float = setting(unit_interval())  # how much of the stable LoRA each step keeps
    consistency_weight: float = setting(non_negative())  # MSE between plastic and stable hidden states


@register_method("ilora")
class ILoRAModule(MemoryBatchModule):
    settings_class = ILoRASettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        block = cls.block_size(cfg, counts)  # the plastic and the stable LoRA
        return {"trainable": block, "per_task": 2 * block, "total": 2 * n_tasks * block, "resident": 2 * block}

    @classmethod
    def graphs_per_step(cls, cfg: DictConfig) -> int:
        return 2  # the task's batch and the memory's, back-propagated together

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        self.stable = {name: p.detach().clone() for name, p in self.trained().items()}

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super().training_losses(batch)
        if self.memory_stream is None:
            return losses
        memory = self.backbone_inputs({k: v.to(self.device) for k, v in next(self.memory_stream).items()})
        outputs = self.step_model(**memory, output_hidden_states=True)
        with torch.no_grad(), self.in_eval_mode():
            kwargs = {**memory, "output_hidden_states": True}
            stable = functional_call(self.model, self.beside_parameters(self.stable), args=(), kwargs=kwargs)
        consistency = F.mse_loss(*(last_hidden(o, memory) for o in (outputs, stable)))
        losses["loss"] = losses["loss"] + outputs.loss + self.settings.consistency_weight * consistency
        losses.update(memory_loss=outputs.loss.detach(), consistency=consistency.detach())
        return losses

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Each optimizer step, then the stable LoRA's move toward the plastic one."""
        super().optimizer_step(*args, **kwargs)
        self.follow_plastic()

    @torch.no_grad()
    def follow_plastic(self) -> None:
        alpha = self.settings.ema_alpha
        stable = self.beside_parameters(self.stable)
        for name, p in self.trained().items():
            stable[name].mul_(alpha).add_(p.detach(), alpha=1 - alpha)

    # The stable LoRA is not a parameter: a checkpoint inside a task carries it beside them.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[STABLE_KEY] = {name: t.detach().cpu().clone() for name, t in self.stable.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if set(checkpoint.get(STABLE_KEY, {})) != set(self.stable):
            raise DataError(
                f"the checkpoint of task {self.task_index + 1} has no stable LoRA of this model: "
                "delete it to restart the task's training"
            )
        self.stable = dict(checkpoint[STABLE_KEY])

    @contextmanager
    def stable_weights(self) -> Iterator[None]:
        """The stable LoRA in place of the plastic one (scoring, decoding), then back."""
        params, stable = self.trained(), self.beside_parameters(self.stable)
        plastic = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(stable[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(plastic[name])

    def generate_ids(self, inputs: dict[str, torch.Tensor], **sampling: Any) -> torch.Tensor:
        with self.stable_weights():
            return super().generate_ids(inputs, **sampling)

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().save_task(index, task, task_dir)
        self.save_copy(self.stable, task_dir / STABLE_FILE)

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        super().load_task(index, task, task_dir)
        self.stable = self.read_copy(task_dir / STABLE_FILE)


def last_hidden(outputs: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The last layer's hidden states where there is a token: the decoder's at the target positions
    of an encoder-decoder, the whole sequence of a decoder-only model."""
    if getattr(outputs, "decoder_hidden_states", None) is not None:
        return outputs.decoder_hidden_states[-1][inputs["labels"] != -100].float()
    return outputs.hidden_states[-1][inputs["attention_mask"].bool()].float()
