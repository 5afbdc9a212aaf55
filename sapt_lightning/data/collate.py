"""Tokenisation and padding for encoder-decoder (T5) and decoder-only (LLaMA) backbones.

Every batch carries `pool_ids`/`pool_mask`: the prompt tokens (no label) that SAPT's
router max-pools over, with the mask marking real (non-padding) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .task import Example, TemplateStyle, render_prompt

# fidelity.llama_label_eos: where a decoder-only label is longer than max_target_length, `always`
# cuts the label and keeps its EOS (the model learns to stop); `truncated` cuts label + EOS, as the
# release does (docs/method.md §1.5), so a long label ends without one.
LABEL_EOS = ("always", "truncated")


@dataclass
class Collator:
    tokenizer: Any
    family: str
    style: TemplateStyle
    max_source_length: int
    max_target_length: int
    with_labels: bool = True
    label_eos: str = "always"  # LABEL_EOS

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        prompts = [render_prompt(ex, self.style) for ex in examples]
        targets = [ex.target for ex in examples]
        if self.family == "t5":
            return self._seq2seq(prompts, targets)
        return self._causal(prompts, targets)

    def lengths(self, examples: list[Example]) -> list[int]:
        """Each example's real tokens as this collator cuts them (prompt, plus the label when it has
        labels): what batches grouped by length sort on."""
        return [self.tokens(self([ex]))[0] for ex in examples]

    def tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(real tokens, token slots) of a batch: the input's, plus a T5 batch's labels (a decoder-only
        row holds its label inside input_ids). Their difference is the padding."""
        real, slots = int(batch["attention_mask"].sum()), batch["input_ids"].numel()
        if self.family == "t5" and "labels" in batch:
            real += int((batch["labels"] != -100).sum())
            slots += batch["labels"].numel()
        return real, slots

    def _seq2seq(self, prompts: list[str], targets: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            prompts, max_length=self.max_source_length, truncation=True, padding=True, return_tensors="pt"
        )
        batch = {
            "input_ids": enc.input_ids,
            "attention_mask": enc.attention_mask,
            "pool_ids": enc.input_ids,
            "pool_mask": enc.attention_mask,
        }
        if self.with_labels:
            lab = self.tokenizer(
                targets, max_length=self.max_target_length, truncation=True, padding=True, return_tensors="pt"
            ).input_ids
            lab[lab == self.tokenizer.pad_token_id] = -100
            batch["labels"] = lab
        return batch

    def _causal(self, prompts: list[str], targets: list[str]) -> dict[str, torch.Tensor]:
        """Left padding; train rows are prompt + label + eos with the prompt masked out of the loss."""
        tok = self.tokenizer
        prompt_ids = [tok(p, add_special_tokens=False).input_ids[: self.max_source_length] for p in prompts]
        if self.with_labels:
            label_ids = [self._label(tok(t, add_special_tokens=False).input_ids) for t in targets]
        else:
            label_ids = [[] for _ in prompts]
        rows = [p + label for p, label in zip(prompt_ids, label_ids)]
        width = max(map(len, rows))
        pad = tok.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for i, (p, label) in enumerate(zip(prompt_ids, label_ids)):
            start = width - len(p) - len(label)
            input_ids[i, start:] = torch.tensor(p + label)
            attention_mask[i, start:] = 1
            if label:
                labels[i, start + len(p) :] = torch.tensor(label)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, **self._prompts_alone(prompt_ids)}
        if self.with_labels:
            batch["labels"] = labels
        return batch

    def _label(self, ids: list[int]) -> list[int]:
        """A decoder-only label with its EOS, at most max_target_length tokens (see LABEL_EOS)."""
        eos = self.tokenizer.eos_token_id
        if self.label_eos == "truncated":
            return (ids + [eos])[: self.max_target_length]
        return ids[: self.max_target_length - 1] + [eos]

    def _prompts_alone(self, prompt_ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """pool_ids/pool_mask of a decoder-only batch: the prompts without their answers, left-padded
        with BOS as the release pads them (`input_ids_wo_label`, docs/method.md §9), so the router of a
        training row sees what it sees at test time even where padding joins the max (fidelity=official)."""
        tok = self.tokenizer
        pad = tok.bos_token_id if tok.bos_token_id is not None else tok.pad_token_id
        width = max([1, *map(len, prompt_ids)])
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            if p:
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
        return {"pool_ids": ids, "pool_mask": mask}
