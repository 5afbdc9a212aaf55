"""The unit of the continual stream: a named task with train/dev/test examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Metric = Literal["rougeL", "exact_match"]
TemplateStyle = Literal["superni", "long_sequence", "synthetic"]


@dataclass(frozen=True)
class Example:
    """One instance. `outputs` holds every reference; the first is the training target."""

    definition: str
    input: str
    outputs: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.outputs[0] if self.outputs else ""


@dataclass
class Task:
    name: str
    metric: Metric
    template: TemplateStyle
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    notes: list[str] = field(default_factory=list)
    #: Outputs drawn from a fixed label set (methods that model classes, like EPI, need this).
    classification: bool = False


def render_prompt(example: Example, style: TemplateStyle) -> str:
    """The model input string, built as the release builds it (docs/method.md §1.5)."""
    if style == "superni":
        return (
            "Definition: " + example.definition.strip() + "\n\n"
            "Now complete the following example -\n"
            "Input: " + example.input + "\n"
            "Output: "
        )
    # long_sequence and synthetic: optional definition line, the input, the answer prefix.
    head = example.definition.strip() + "\n" if example.definition.strip() else ""
    return head + example.input + "\n" + "Output: "
