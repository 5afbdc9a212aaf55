"""SAPT as a LightningModule: SALS (per-task PET blocks mixed by the shared attention)
plus ARM (attentive reflection on pseudo samples of earlier tasks).

Reads switches only (`method.arm.enabled`, `method.replay.mix_pseudo`, `fidelity.*`),
never the name of an ablation.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from omegaconf import DictConfig
from peft import get_peft_model_state_dict, inject_adapter_in_model

from ...backbones import Backbone
from ...data.datamodule import ContinualDataModule, ReplayStream
from ...data.io import PSEUDO_FILE, read_pseudo_task, write_task_json
from ...data.task import Example, Task
from ...errors import ConfigError, DataError
from ...pet.lora import MIXING_MODES, MixingState, inject_lora, lora_block_state, lora_layers
from ...pet.prompt import PromptBank, with_prompt
from ...rules import at_least, fraction, non_negative, positive
from ...settings import MethodSettings, Settings, setting
from ...utils.distributed import map_sharded
from ...utils.io import atomic_save_safetensors, atomic_write_json, read_json, read_safetensors
from ...utils.phases import phase
from ...utils.progress import progress
from ...utils.rng import replay_seed
from .. import generator as gen
from ..base import ContinualModule, replay_volume
from ..registry import register_method
from .attention import POOLINGS, QUERY_NETS, SharedAttention, pool_embeddings
from .reflection import attention_target, pad_target, reflection_kl
from .selector import LEARNING_MODES, SelectorSettings, fit_selector, hard_top1, selection_targets
from .selector import MODES as SELECTION_MODES

if TYPE_CHECKING:
    from ...estimate import Counts

log = logging.getLogger(__name__)

BLOCK_FILE = "sapt_block.safetensors"
TARGET_FILE = "arm_target.json"
GENERATOR_FILE = "generator.safetensors"
SELECTOR_FILE = "selector.safetensors"


def uses_pseudo_samples(method: DictConfig) -> bool:
    """ARM, the +Replay ablation and a separate selector (-Alignment, -SA) all learn from
    pseudo samples of earlier tasks; plain SALS does not."""
    return bool(method.arm.enabled or method.replay.mix_pseudo or method.sapt.selection != "shared")


def trains_generator(method: DictConfig) -> bool:
    """Whether each task trains a generator: pseudo samples are needed and not read from disk."""
    return uses_pseudo_samples(method) and not method.arm.pseudo_data_dir


@dataclass(frozen=True)
class SALSSettings(Settings):
    """Shared attentive learning & selection (docs/method.md §2)."""

    query_hidden: int = setting(at_least(1))
    query_net: Literal[QUERY_NETS] = setting()
    pooling: Literal[POOLINGS] = setting()
    mixing: Literal[MIXING_MODES] = setting()
    temperature: float | None = setting(positive())
    learning: Literal[LEARNING_MODES] = setting()
    selection: Literal[SELECTION_MODES] = setting()
    attn_lr: float | None = setting(positive())
    key_lr: float | None = setting(positive())


@dataclass(frozen=True)
class ARMSettings(Settings):
    """Attentive reflection (docs/method.md §3)."""

    enabled: bool = setting()
    kl_weight: float = setting(non_negative())
    every_n_steps: int = setting(at_least(1))
    start_step: int | None = setting(at_least(0))
    replay_batch_size: int = setting(at_least(1))
    pseudo_data_dir: str | None = setting()
    pseudo_fraction: float = setting(fraction(True))
    generate_outputs: bool = setting()


@dataclass(frozen=True)
class GeneratorConfig(Settings):
    """The per-task pseudo-sample generator (docs/method.md §4)."""

    r: int = setting(at_least(1))
    alpha: float = setting(positive())
    lr: float = setting(positive())
    steps: int = setting(at_least(0))
    batch_size: int = setting(at_least(1))
    micro_batch_size: int | None = setting(at_least(1))
    dropout: float = setting(fraction(False))
    max_target_length: int = setting(at_least(1))
    top_k: int = setting(at_least(1))
    repetition_penalty: float = setting(positive())
    max_new_tokens: int = setting(at_least(1))


@dataclass(frozen=True)
class SelectorConfig(Settings):
    """The separate selector of the -Alignment and -SA ablations."""

    steps: int = setting(at_least(0))
    lr: float = setting(positive())
    batch_size: int = setting(at_least(1))


@dataclass(frozen=True)
class ReplayConfig(Settings):
    mix_pseudo: bool = setting()


@dataclass(frozen=True)
class SAPTSettings(MethodSettings):
    sapt: SALSSettings = setting()
    arm: ARMSettings = setting()
    generator: GeneratorConfig = setting()
    selector: SelectorConfig = setting()
    replay: ReplayConfig = setting()


@register_method("sapt")
class SAPTModule(ContinualModule):
    pet_types = ("lora", "prompt")
    settings_class = SAPTSettings

    @classmethod
    def plan_sizes(cls, cfg: DictConfig, counts: Counts, n_tasks: int) -> dict[str, int]:
        """A block and a key per task, one shared query network, and a generator while it trains."""
        m, d = cfg.method, counts.hidden
        block = cls.block_size(cfg, counts)
        query = 2 * d * int(m.sapt.query_hidden) + 2 * d
        generator = int(m.generator.r) * counts.target_width if trains_generator(m) else 0  # its own LoRA
        learns_attention = m.sapt.learning == "attention"  # -SA trains the block alone
        return {
            "trainable": block + (d + query if learns_attention else 0),
            "per_task": block + d + generator,
            "total": n_tasks * (block + d + generator) + query,
            "resident": n_tasks * (block + d) + query + generator,
        }

    @classmethod
    def between_tasks_batch(cls, cfg: DictConfig) -> dict[str, int] | None:
        """The generator's step: its micro-batch of marker -> instruction + input rows."""
        m = cfg.method
        if not trains_generator(m):
            return None
        rows = gen.slice_rows(int(m.generator.batch_size), int(m.generator.micro_batch_size or 0) or None)
        return {
            "batch_size": rows,
            "max_source_length": gen.SOURCE_LENGTH,
            "max_target_length": int(m.generator.max_target_length),
        }

    def __init__(self, backbone: Backbone, cfg: DictConfig) -> None:
        super().__init__(backbone, cfg)
        m, f = self.settings, cfg.fidelity
        self.pet_type = str(cfg.pet.type)
        self.mask_padding = bool(f.mask_padding_in_pooling)
        self.pooling = str(m.sapt.pooling)
        self.target_mode = str(f.arm_target)
        # Official: the release casts the targets to bf16 before the KL (the KL itself stays fp32 here).
        self.target_dtype = torch.bfloat16 if f.arm_target_dtype == "bfloat16" else torch.float32
        # Official, decoder-only: the release records a dev batch's mean attention on every forward of
        # its prediction, i.e. once per decoding step plus once for the loss (docs/method.md §3.1).
        self.weigh_by_decoding = f.llama_arm_target_weighting == "decoding_steps" and self.family == "llama"
        self.kl_weight = float(m.arm.kl_weight)
        # Official: the release's T5 trainer does not divide the KL by gradient accumulation, so it
        # weighs λ·GAS; its LLaMA runs under DeepSpeed, which divides every backward (docs/method.md §9).
        released_t5 = not f.kl_scaled_by_accumulation and self.family == "t5"
        self.kl_accumulation_factor = int(cfg.trainer.accumulate_grad_batches) if released_t5 else 1
        start = m.arm.start_step
        self.replay_from_step = int(f.replay_from_step if start is None else start)
        self.arm_enabled = bool(m.arm.enabled)
        self.mix_pseudo = bool(m.replay.mix_pseudo)
        # Official, decoder-only: the release's replay KL pools over the replay rows' input_ids, i.e.
        # prompt + label + EOS, where everything else pools the prompt alone (docs/method.md §9).
        self.replay_pools_answer = f.llama_replay_pooling == "prompt_answer_eos" and self.family == "llama"
        # Ablations -Alignment / -SA: how blocks are weighted while learning, and who selects at test time.
        self.learning = str(m.sapt.learning)
        self.selection = str(m.sapt.selection)
        self.needs_pseudo = uses_pseudo_samples(m)
        self.seed = int(cfg.seed)
        self._init_rng = torch.Generator().manual_seed(self.seed)
        self._selector_rng = torch.Generator().manual_seed(self.seed + 1)
        self.gen_settings = gen.GeneratorSettings(
            r=int(m.generator.r),
            alpha=float(m.generator.alpha),
            lr=float(m.generator.lr),
            steps=int(m.generator.steps),
            batch_size=int(m.generator.batch_size),
            top_k=int(m.generator.top_k),
            repetition_penalty=float(m.generator.repetition_penalty),
            max_new_tokens=int(m.generator.max_new_tokens),
            generate_outputs=bool(m.arm.generate_outputs) or self.mix_pseudo,
            micro_batch_size=int(m.generator.micro_batch_size) if m.generator.micro_batch_size else None,
            dropout=float(m.generator.dropout),
            max_target_length=int(m.generator.max_target_length),
        )
        self.generate_pseudo = trains_generator(m)
        if self.generate_pseudo:
            # The generator's peft adapter goes in first; SAPT's layers then wrap peft's.
            inject_adapter_in_model(
                gen.generator_config(self.target_modules, self.gen_settings), self.model, adapter_name=gen.ADAPTER
            )
            gen.set_generator_active(self.model, False)
        self.mixing = MixingState()
        if self.pet_type == "lora":
            inject_lora(
                self.model,
                self.target_modules,
                int(cfg.pet.r),
                float(cfg.pet.alpha),
                self.mixing,
                str(m.sapt.mixing),
                detach_finished=not f.grad_through_finished_blocks,
                dropout=float(cfg.pet.dropout),
                dropout_per_block=f.lora_dropout_masks == "per_block",
            )
            self.prompts = None
        elif self.pet_type == "prompt":
            self.prompts = PromptBank(int(cfg.pet.length), self.model.get_input_embeddings(), self._init_rng)
        else:
            raise ConfigError(f"pet.type must be lora or prompt, got '{self.pet_type}'")
        self.attention = SharedAttention(
            backbone.hidden_size, int(m.sapt.query_hidden), str(m.sapt.query_net), m.sapt.temperature
        )
        if f.llama_query_init == "backbone_normal" and self.family == "llama":
            # The release's LLaMA model holds the query network, so its post_init redraws it;
            # T5's weight initialisation leaves a plain nn.Linear alone (docs/method.md §2.1).
            std = float(getattr(self.model.config, "initializer_range", 0.02))
            own_draws = torch.Generator().manual_seed(self.seed + 2)  # (the keys keep theirs)
            self.attention.query.redraw_linear(std, own_draws)
        self.selector: SharedAttention | None = None
        if self.selection != "shared":
            self.selector = SharedAttention(
                backbone.hidden_size, int(m.sapt.query_hidden), str(m.sapt.query_net), m.sapt.temperature
            )
            s = m.selector
            self.selector_settings = SelectorSettings(int(s.steps), float(s.lr), int(s.batch_size))
        self.targets: list[torch.Tensor] = []  # ARM target of each finished task (length i+1)
        self.pseudo: list[list[Example]] = []  # pseudo samples of each finished task
        self._replay_iters: list[ReplayStream] = []

    # ----- blocks ------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return self.attention.n_blocks

    def add_task_block(self) -> None:
        self.attention.add_key(self._init_rng)
        if self.selector is not None:
            self.selector.add_key(self._selector_rng)  # its own generator: the learner's keys stay as in SAPT
        if self.prompts is not None:
            self.prompts.add_block()
        for _, layer in lora_layers(self.model):
            layer.add_block()

    def set_trainable(self) -> None:
        """Only the newest block, its key and the query network train."""
        self.requires_grad_(False)
        if self.learning == "attention":  # (-SA learns blocks alone: the attention gets no gradient)
            self.attention.query.requires_grad_(True)
            self.attention.keys[-1].requires_grad_(True)
        if self.prompts is not None:
            self.prompts.prompts[-1].requires_grad_(True)
        for _, layer in lora_layers(self.model):
            layer.lora_A[-1].requires_grad_(True)
            layer.lora_B[-1].requires_grad_(True)

    # ----- routing -----------------------------------------------------------------------
    def pooled(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.model.get_input_embeddings()(batch["pool_ids"])
        mask = batch["pool_mask"] if self.mask_padding else None
        return pool_embeddings(emb, mask, self.pooling)

    def route(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample block weights α (B, N) of this batch; the same for learning and selection."""
        return self.attention(self.pooled(batch))

    def learning_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.learning == "own_block":  # -SA: the task's block alone, like a single-task LoRA
            weights = torch.zeros(batch["input_ids"].shape[0], self.n_blocks, device=self.device)
            weights[:, -1] = 1.0
            return weights
        return self.route(batch)

    def selection_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weights used at test time (no task id): SAPT's own attention unless an ablation swaps it."""
        if self.selector is None:
            return self.route(batch)
        weights = self.selector(self.pooled(batch))
        return hard_top1(weights) if self.selection == "classifier" else weights

    def backbone_inputs(self, batch: dict[str, torch.Tensor], generation: bool = False) -> dict[str, torch.Tensor]:
        weights = self.selection_weights(batch) if generation else self.learning_weights(batch)
        inputs = super().backbone_inputs(batch, generation)
        if self.prompts is None:
            self.mixing.weights = weights
            return inputs
        self.mixing.weights = None
        return with_prompt(self.model, inputs, self.prompts(weights))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Separate learning rates may apply to the query network (method.sapt.attn_lr, as the
        release's attn_lr) and to the current task's key (method.sapt.key_lr); null = lr."""
        sapt = self.settings.sapt
        query = [p for p in self.attention.query.parameters() if p.requires_grad]
        keys = [p for p in self.attention.keys if p.requires_grad]
        routed = {id(p) for p in query + keys}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in routed]
        groups = [
            {"name": self.cfg.pet.type, "params": rest, "lr": self.pet_lr()},
            {"name": "query", "params": query, "lr": float(sapt.attn_lr or self.lr)},
            {"name": "key", "params": keys, "lr": float(sapt.key_lr or self.lr)},
        ]  # the release trains keys at lr
        return self.make_optimizer(groups)

    # ----- stream hooks ------------------------------------------------------------------
    def start_task(self, index: int, task: Task) -> list[Example]:
        super().start_task(index, task)
        self.add_task_block()
        self.set_trainable()
        self._replay_iters = []
        if self.mix_pseudo:  # +Replay: only pairs the generator completed (a fallback plain input has no output)
            return [ex for pseudo in self.pseudo for ex in pseudo if ex.target.strip()]
        return []

    def attach_replay(self, data: ContinualDataModule) -> None:
        """Cycling loaders over every earlier task's pseudo inputs, reshuffled each pass from a seed
        of its own (the release's seeded random sampler), so a resumed task replays the same batches."""
        if not (self.arm_enabled and self.kl_weight > 0):
            return
        self._replay_iters = []
        for i, pseudo in enumerate(self.pseudo):
            loader = data.loader(
                data.tasks[i],
                pseudo,
                with_labels=self.replay_pools_answer,
                batch_size=int(self.settings.arm.replay_batch_size),
                shuffle_seed=replay_seed(self.seed, self.task_index, i),
            )
            self._replay_iters.append(ReplayStream(loader))

    def replay_streams(self) -> list[ReplayStream]:
        return self._replay_iters

    def training_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        task_loss = self.task_loss(batch)
        losses = {"loss": task_loss, "task_loss": task_loss.detach()}
        arm = self.settings.arm
        every = max(int(arm.every_n_steps), 1)
        if self._replay_iters and self.global_step >= self.replay_from_step and self.global_step % every == 0:
            with phase("arm_replay"):
                kl = sum(self.reflection_loss(i, next(it)) for i, it in enumerate(self._replay_iters))
            losses["kl"] = kl.detach()
            losses["loss"] = task_loss + self.kl_weight * self.kl_accumulation_factor * kl
        return losses

    def reflection_loss(self, task_index: int, replay_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        replay_batch = {k: v.to(self.device) for k, v in replay_batch.items()}
        logits = self.attention(self.pooled(self.replay_pool_rows(replay_batch)), normalize=False)
        target = pad_target(self.targets[task_index].to(self.device), self.n_blocks)
        return reflection_kl(logits, target.to(self.target_dtype))

    def replay_pool_rows(self, replay_batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the reflection KL pools: the prompts (pool_ids), or, as the release's LLaMA code, the
        whole rows of prompt + answer + EOS, left-padded with BOS like its prompts."""
        if not self.replay_pools_answer:
            return replay_batch
        bos = self.tokenizer.bos_token_id
        pad = bos if bos is not None else self.tokenizer.pad_token_id
        ids = replay_batch["input_ids"].masked_fill(replay_batch["attention_mask"] == 0, pad)
        return {**replay_batch, "pool_ids": ids, "pool_mask": replay_batch["attention_mask"]}

    def end_task(self, index: int, task: Task, data: ContinualDataModule, task_dir: Path) -> None:
        self.mixing.weights = None
        self.targets.append(self.measure_target(task, data))
        if not self.needs_pseudo:
            self.pseudo.append([])
            return
        if self.generate_pseudo:
            n = replay_volume(float(self.settings.arm.pseudo_fraction), len(task.train))
            gen.train_generator(self, task, self.gen_settings, self.seed + index, self.task_checkpoints)
            pseudo = gen.sample_pseudo(self, task, n, self.gen_settings, self.seed + index)
            if self.cfg.fidelity.pseudo_instruction == "one":
                pseudo = gen.with_one_instruction(pseudo, self.seed + index)
            gen.set_generator_active(self.model, False)
            atomic_save_safetensors(
                get_peft_model_state_dict(self.model, adapter_name=gen.ADAPTER), task_dir / GENERATOR_FILE
            )
        else:
            pseudo = read_pseudo_task(Path(self.settings.arm.pseudo_data_dir), task)
        write_task_json(task_dir / PSEUDO_FILE, pseudo)
        self.pseudo.append(pseudo)
        if self.selector is not None:
            self.fit_task_selector(index, task, data)

    def fit_task_selector(self, index: int, task: Task, data: ContinualDataModule) -> None:
        """Refit the separate selector on pseudo inputs of every earlier task plus real inputs of this one."""
        n_current = max(len(p) for p in self.pseudo)
        current = random.Random(self.seed * 31 + index).sample(task.train, min(n_current, len(task.train)))
        groups = [*self.pseudo[:index], current]
        features, owners = [], []
        with torch.no_grad():
            for owner, examples in enumerate(groups):
                for batch in data.loader(data.tasks[owner], examples):
                    features.append(self.pooled({k: v.to(self.device) for k, v in batch.items()}).float())
                    owners += [owner] * batch["input_ids"].shape[0]
        owners_t = torch.tensor(owners, device=self.device)
        targets = selection_targets(owners_t, [t.to(self.device) for t in self.targets], self.n_blocks, self.selection)
        loss = fit_selector(self.selector, torch.cat(features), targets, self.selector_settings, self.seed + index)
        log.info("selector (%s) after %s: %d inputs, last KL %.4f", self.selection, task.name, len(owners), loss)

    @torch.no_grad()
    def routed_batches(
        self, task: Task, examples: list[Example], data: ContinualDataModule, selection: bool = False
    ) -> list[torch.Tensor]:
        """Block weights (B, N) of these inputs, batch by batch, in eval mode: the learner's
        attention, or with `selection` the weights used at test time (they differ only in ablations)."""
        self.eval()
        weigh = self.selection_weights if selection else self.route
        return [weigh({k: v.to(self.device) for k, v in b.items()}).float().cpu() for b in data.loader(task, examples)]

    def routed_rows(
        self, task: Task, examples: list[Example], data: ContinualDataModule, selection: bool = False
    ) -> torch.Tensor:
        """Per-example block weights (n, N), every data-parallel rank routing its share of the
        batches (the same batches one process forms, so rows match it even under unmasked pooling)."""
        rows = map_sharded(
            examples,
            lambda part: [r for b in self.routed_batches(task, part, data, selection) for r in b],
            chunk=data.eval_batch_size,
        )
        return torch.stack(rows)

    def measure_target(self, task: Task, data: ContinualDataModule) -> torch.Tensor:
        with progress(f"measuring the attention of {task.name} (ARM target)", len(task.dev), "examples") as step:
            rows = self.routed_rows(task, task.dev, data)
            step.update(len(rows))
        batches = list(rows.split(data.eval_batch_size))  # the batches one process forms (batch_means needs them)
        weights = self.prediction_forwards(task, data) if self.weigh_by_decoding else None
        return attention_target(batches, self.target_mode, weights)

    def prediction_forwards(self, task: Task, data: ContinualDataModule) -> list[float]:
        """Per dev batch, the forwards the release's prediction makes: one per greedy decoding step
        (until every row has ended or max_new_tokens) and one for its loss."""
        with progress(
            f"counting the decoding steps of {task.name} (ARM target weights)", len(task.dev), "examples"
        ) as step:

            def count(part: list[Example]) -> list[int]:
                counts = []
                for batch in data.loader(task, part):
                    counts.append(self.decoding_steps(batch))
                    step.update(len(batch["input_ids"]))
                return counts

            try:
                steps = map_sharded(task.dev, count, chunk=data.eval_batch_size)
            finally:
                self.mixing.weights = None  # (generation routed each batch; the generator must not mix blocks)
        return [float(n + 1) for n in steps]

    def mean_attention(self, task: Task, examples: list[Example], data: ContinualDataModule) -> list[float]:
        """Mean block weights used at test time for these inputs (one row of the paper's Figure 3)."""
        return attention_target([self.routed_rows(task, examples, data, selection=True)], "per_example").tolist()

    # ----- artifacts ---------------------------------------------------------------------
    def block_state(self, index: int) -> dict[str, torch.Tensor]:
        """Task `index`'s own tensors plus the (shared) query network as it is now."""
        state = {"key": self.attention.keys[index].detach()}
        state.update({f"query.{k}": v for k, v in self.attention.query.state_dict().items()})
        if self.prompts is not None:
            state["prompt"] = self.prompts.prompts[index].detach()
        state.update(lora_block_state(self.model, index))
        return state

    def save_task(self, index: int, task: Task, task_dir: Path) -> None:
        atomic_save_safetensors(self.block_state(index), task_dir / BLOCK_FILE)
        if self.selector is not None:  # the selector as refitted after this task
            atomic_save_safetensors(
                {k: v.detach() for k, v in self.selector.state_dict().items()}, task_dir / SELECTOR_FILE
            )
        atomic_write_json(
            task_dir / TARGET_FILE,
            {"task": task.name, "target": self.targets[index].tolist(), "block_order": "task order, oldest first"},
        )

    def load_task(self, index: int, task: Task, task_dir: Path) -> None:
        self.task_index = index
        if self.n_blocks <= index:
            self.add_task_block()
        state = read_safetensors(task_dir / BLOCK_FILE)
        self.load_block_state(index, state, task_dir / BLOCK_FILE)
        target = torch.tensor(read_json(task_dir / TARGET_FILE, dict).get("target", []))
        if target.shape[0] != index + 1:
            raise DataError(
                f"{task_dir / TARGET_FILE}: ARM target has {target.shape[0]} entries, task {index} needs {index + 1}"
            )
        self.targets[index:] = [target]
        if self.selector is not None:
            self.load_selector(task_dir / SELECTOR_FILE)
        pseudo_path = task_dir / PSEUDO_FILE
        self.pseudo[index:] = [
            read_pseudo_task(pseudo_path.parent.parent, task, exact=pseudo_path) if self.needs_pseudo else []
        ]
        self.set_trainable()

    def load_block_state(self, index: int, state: dict[str, torch.Tensor], source: Path) -> None:
        expected = self.block_state(index)
        missing = sorted(set(expected) - set(state))
        if missing:
            raise DataError(
                f"{source}: missing tensors {missing[:3]}{'…' if len(missing) > 3 else ''} "
                "(saved with another backbone, PET or target modules?)"
            )
        with torch.no_grad():
            for name, tensor in expected.items():
                if state[name].shape != tensor.shape:
                    raise DataError(
                        f"{source}: tensor {name} has shape {tuple(state[name].shape)}, "
                        f"this model needs {tuple(tensor.shape)} (another backbone?)"
                    )
                tensor.copy_(state[name].to(tensor.dtype))
        # the dict values are views of the live parameters, so copy_ wrote into the model

    def load_selector(self, path: Path) -> None:
        state, expected = read_safetensors(path), self.selector.state_dict()
        wrong = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
        if wrong:
            raise DataError(
                f"{path}: selector tensors missing or of another shape: {wrong[:3]} "
                "(saved by another backbone or number of tasks?)"
            )
        self.selector.load_state_dict({k: state[k] for k in expected})
