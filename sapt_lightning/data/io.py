"""Reading and writing task files in the CL_Benchmark JSON layout.

A split file is one JSON object: `Definition` (a list holding the instruction),
`Positive Examples`, `Negative Examples`, `Instances` ([{"input", "output"}], output
a string or a list of references). Pseudo samples are written the same way so a
user can read them, or point `method.arm.pseudo_data_dir` at another set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..utils.io import atomic_write_json
from .task import Example, Task

#: Where a method that generates pseudo samples keeps a task's set, inside the task's folder.
PSEUDO_FILE = "pseudo/train.json"


def read_split(path: Path, task_name: str) -> list[Example]:
    """Parse one split file; every problem names the file."""
    if not path.is_file():
        raise DataError(f"missing data file {path} (task '{task_name}')")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("Instances"), list):
        raise DataError(f"{path}: expected a JSON object with an 'Instances' list")
    definition = _definition(data.get("Definition") or [""], path, "'Definition'")
    return [_example(inst, k, definition, path) for k, inst in enumerate(data["Instances"])]


def _definition(value: Any, path: Path, where: str) -> str:
    """An instruction: text, or a list whose first item is text (the CL_Benchmark layout)."""
    first = value[0] if isinstance(value, list) and value else value
    if not isinstance(first, str):
        raise DataError(f"{path}: {where} must be text or a list of text, not {type(first).__name__}")
    return first


def _example(inst: Any, k: int, definition: str, path: Path) -> Example:
    """One instance; `output` is one string or a list of acceptable references (SuperNI). Text
    only: a null or a number would become "None" or "5" and train on words no file holds."""
    if not isinstance(inst, dict) or "input" not in inst or "output" not in inst:
        raise DataError(f"{path}: instance {k} lacks 'input' or 'output'")
    if not isinstance(inst["input"], str):
        raise DataError(f"{path}: instance {k}'s 'input' must be text, not {_json_type(inst['input'])}")
    outputs = inst["output"] if isinstance(inst["output"], list) else [inst["output"]]
    wrong = [o for o in outputs if not isinstance(o, str)]
    if not outputs or wrong:
        raise DataError(
            f"{path}: instance {k}'s 'output' must be text or a non-empty list of text, not "
            f"{_json_type(wrong[0]) if outputs else 'an empty list'}"
            + (f" (write it as {json.dumps(str(wrong[0]))})" if wrong and _json_type(wrong[0]) == "a number" else "")
        )
    return Example(definition=definition, input=inst["input"], outputs=tuple(outputs))


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "true/false", int: "a number", float: "a number", dict: "an object"}
    return names.get(type(value), "a list" if isinstance(value, list) else type(value).__name__)


def task_json(examples: list[Example]) -> dict[str, Any]:
    definition = examples[0].definition if examples else ""
    return {
        "Definition": [definition] if definition else [],
        "Positive Examples": [],
        "Negative Examples": [],
        "Instances": [
            {
                "id": str(k),
                "input": ex.input,
                "output": list(ex.outputs) if len(ex.outputs) > 1 else ex.target,
                **({"definition": ex.definition} if ex.definition != definition else {}),
            }
            for k, ex in enumerate(examples)
        ],
    }


def write_task_json(path: Path, examples: list[Example]) -> None:
    atomic_write_json(path, task_json(examples))


def per_task_path(folder: Path, index: int, task_name: str) -> Path:
    """`<folder>/<index + 1>-<task>.json`: one split file per task of a stream, in stream order."""
    return folder / f"{index + 1}-{task_name}.json"


def read_per_task(folder: Path) -> list[list[Example]]:
    """Every per_task_path file of `folder`, in stream order; none when the folder does not exist."""
    files = sorted(folder.glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0])) if folder.is_dir() else []
    return [read_split(path, path.stem.split("-", 1)[1]) for path in files]


def read_pseudo_task(root: Path, task: Task, exact: Path | None = None) -> list[Example]:
    """Pseudo samples of `task` from a directory in CL_Benchmark layout.

    Accepts `<root>/<task>/train.json` and `<root>/<Benchmark>/<task>/train.json`
    (the release's generated_data/ layout).
    """
    candidates = (
        [exact] if exact else [root / task.name / "train.json"] + sorted(root.glob(f"*/{task.name}/train.json"))
    )
    path = next((p for p in candidates if p is not None and p.is_file()), None)
    if path is None:
        raise DataError(
            f"no pseudo samples for task '{task.name}': expected {candidates[0]} "
            "(method.arm.pseudo_data_dir must hold every earlier task)"
        )
    examples = read_split(path, task.name)
    if not examples:
        raise DataError(f"{path}: no pseudo samples for task '{task.name}' (empty 'Instances')")
    # Per-instance definitions (written when generated instructions differ) win over the file's.
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)["Instances"]
    return [
        Example(
            _definition(inst.get("definition", ex.definition), path, f"instance {k}'s 'definition'"),
            ex.input,
            ex.outputs,
        )
        for k, (inst, ex) in enumerate(zip(raw, examples))
    ]
