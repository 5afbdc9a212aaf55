"""results.json: the one record a finished run leaves, and the only thing reports read.

run.py writes it, the reports (reporting.compare, reporting.tables) read it, often on
another machine than the one that trained. So the file names, the writer and the reader
live here together, and this module imports no torch: reading results must work
wherever they were copied to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: A finished run's results, in its run directory.
RESULTS_FILE = "results.json"
#: The composed config a run records before it trains (resume checks, evaluate).
CONFIG_FILE = "config.json"
#: Keys every results.json has and a report cannot do without, with their JSON types.
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "method": str,
    "benchmark": str,
    "seed": int,
    "summary": dict,
    "config": dict,
}


class ResultsError(ValueError):
    """A results.json that cannot be used; the message is the one-line reason."""


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    """Write results.json atomically, so a report never reads a half-written file.

    The writer is imported here, not at the top: it lives with the tensor writers (torch),
    and reading results must not need torch.
    """
    from ..utils.io import atomic_write_json

    path = Path(run_dir) / RESULTS_FILE
    atomic_write_json(path, results)
    return path


def read_results(path: Path) -> dict[str, Any]:
    """A results.json as a dict, checked for the keys in REQUIRED; ResultsError says why not."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"not valid JSON ({err.msg}, line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"unreadable ({err})") from None
    if not isinstance(data, dict):
        raise ResultsError("not a JSON object")
    for key, kind in REQUIRED.items():
        value = get(data, key)
        # bool is an int to Python, never a seed
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ResultsError(f"'{key}' is not {_type_name(kind)}: {_short_repr(value)}")
    return data


def get(data: dict[str, Any], dotted: str) -> Any:
    """data['a']['b'] for 'a.b'; a missing key is a ResultsError naming the full dotted key."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ResultsError(f"missing key '{dotted}'")
        node = node[part]
    return node


def find_results(directory: Path) -> list[Path]:
    """All results.json below a directory, sorted so reports are reproducible.

    A results.json path itself is accepted too, so one run can be reported directly.
    """
    if directory.is_file():
        return [directory] if directory.name == RESULTS_FILE else []
    return sorted(p for p in directory.rglob(RESULTS_FILE) if p.is_file())


def paper_names(data: dict[str, Any]) -> dict[str, str]:
    """The run's method's row in the paper per PET type (its yaml's `paper_name`); {} when it has none.

    The method's own config names its row, so a new method can declare one (or none) without
    touching the report. A run recorded before methods declared it takes its method's row from
    the package's yaml of that method.
    """
    method = get(data, "config").get("method", {})
    names = method["paper_name"] if "paper_name" in method else _packaged_paper_name(str(method.get("name")))
    names = names or {}
    if not isinstance(names, dict):
        raise ResultsError(f"'config.method.paper_name' is not an object: {_short_repr(names)}")
    return {str(pet): str(name) for pet, name in names.items()}


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", dict: "an object", list: "a list", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _packaged_paper_name(method: str) -> dict[str, str]:
    """`paper_name` of the package's own yaml for `method` ({} for a method outside the package)."""
    path = Path(__file__).resolve().parent.parent / "conf" / "method" / f"{method}.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()).get("paper_name") or {}
