"""Import a stream trained by the authors' release (circle-hit/SAPT) as native per-task artifacts.

The release writes one folder per finished task i (0-based), named `<i+1>-<task>`
(docs/method.md §2.6, §3.1):

    <i+1>-<task>/saved_weights/
        lora_weights_A.pt         state dict of every tensor whose name contains lora_A
        lora_weights_B.pt         the same for lora_B
        trans_input.pt            query network: nn.Sequential(Linear(d,h), Linear(h,d), SiLU, LayerNorm(d))
                                  -> 0.weight (h,d), 1.weight (d,h), 3.weight (d,), 3.bias (d,)
        prompts_keys_till_now.pt  (i+1, d) keys, NEWEST FIRST: row 0 = k_i, ..., row i = k_0
        attention_weights.pkl     ARM target of task i: numpy (i+1,), newest first

What is accepted from the LoRA files (the subset this importer defines):
- only the *current* block of each adapted projection, named
  `<attention module>.lora_{q,v}.lora_{A,B}`, A (r, in) and B (out, r); for T5 the
  attention modules are `encoder.block.j.layer.0.SelfAttention`,
  `decoder.block.j.layer.0.SelfAttention` and `decoder.block.j.layer.1.EncDecAttention`
  (LLaMA, by the same rule: `model.layers.j.self_attn`);
- copies of earlier blocks (`...previous_lora_weights_{q,v}.<k>...`) are ignored:
  every block is read from its own task's folder, as the release's loader does.

Native artifacts are what SAPTModule.save_task writes, in task order (oldest first):
`tasks/<i+1>-<task>/sapt_block.safetensors` (key, query.*, <layer>.lora_A/B) and
`arm_target.json`. The key order and the ARM targets are reversed on the way in.

To reproduce the release's behaviour with the imported blocks, load them into a model
configured as the release ran: `method.sapt.query_net=release` (the default; trans_input
is down -> up -> SiLU -> LayerNorm) and `fidelity=official` (padding joins the pooling).
Pseudo samples are not part of saved_weights (the release keeps them in generated_data/).

Safety: `.pt` files load with torch.load(weights_only=True); the attention pickle goes
through an unpickler that can rebuild numpy arrays and nothing else. Nothing here
writes a pickle.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from ..methods.sapt.module import BLOCK_FILE, TARGET_FILE
from ..pet.lora import MultiTaskLoRALinear, _base_weight, lora_layers
from ..utils.io import atomic_save_safetensors, atomic_write_json

log = logging.getLogger(__name__)

SAVED_WEIGHTS = "saved_weights"
LORA_A_FILE, LORA_B_FILE = "lora_weights_A.pt", "lora_weights_B.pt"
QUERY_FILE = "trans_input.pt"
KEYS_FILE = "prompts_keys_till_now.pt"
ATTENTION_FILE = "attention_weights.pkl"
MANIFEST_FILE = "release_import.json"

# trans_input's Sequential indices (2 is the parameter-free SiLU) -> SharedAttention.query names.
QUERY_NAMES = {
    "0.weight": "query.down.weight",
    "1.weight": "query.up.weight",
    "3.weight": "query.norm.weight",
    "3.bias": "query.norm.bias",
}
# Native projection name (T5, LLaMA) -> the release's LoRA module suffix.
_PROJECTIONS = {"q": "q", "v": "v", "q_proj": "q", "v_proj": "v"}
# Keys of earlier tasks are frozen copies: the release stores them again in every later file.
_KEY_TOLERANCE = 1e-6

Layers = Mapping[str, tuple[int, int]]  # native layer name -> (out_features, in_features)


# ----- names -------------------------------------------------------------------------------
def release_lora_name(layer: str, part: str) -> str:
    """'encoder.block.0.layer.0.SelfAttention.q', 'A' -> '...SelfAttention.lora_q.lora_A'."""
    parent, _, leaf = layer.rpartition(".")
    if leaf not in _PROJECTIONS:
        raise DataError(f"the release adapts q and v projections only; layer '{layer}' has no release counterpart")
    return f"{parent}.lora_{_PROJECTIONS[leaf]}.lora_{part}"


def adapted_layers(model: nn.Module, target_modules: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The layers SAPT adapts in `model` (a plain backbone or one with SAPT layers), with
    their weight shape (out, in): what the importer must find in the release's files."""
    injected = {name: (layer.out_features, layer.in_features) for name, layer in lora_layers(model)}
    if injected:
        return injected
    targets = set(target_modules)
    found = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and not isinstance(module, MultiTaskLoRALinear):
            weight = _base_weight(module)
            found[name] = (int(weight.shape[0]), int(weight.shape[1]))
    return found


# ----- safe loading ------------------------------------------------------------------------
def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, read with weights_only=True (no code runs)."""
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


def load_tensor(path: Path) -> torch.Tensor:
    obj = _torch_load(path)
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{path}: expected one tensor, found {type(obj).__name__}")
    return obj


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found (not a finished task's saved_weights folder?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{path}: cannot read it as plain tensors (weights_only=True refused or failed: {first})"
        ) from None


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """What pickled numpy arrays and scalars need, under both module paths (numpy 1 wrote
    numpy.core, numpy 2 writes numpy._core), and nothing else."""
    import codecs

    import numpy as np

    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5 arrays
    allowed[("_codecs", "encode")] = codecs.encode  # protocols 0-2 store array bytes as latin-1 text
    return allowed


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays; refuses every other global, so a pickle cannot run code."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if NumpyOnlyUnpickler._allowed is None:
            NumpyOnlyUnpickler._allowed = _numpy_reconstructors()
        try:
            return NumpyOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}' (only numpy arrays are accepted)") from None


def load_attention_weights(path: Path) -> torch.Tensor:
    """The release's ARM target (attention_weights.pkl), as a 1-D float tensor, order unchanged."""
    import numpy as np

    if not path.is_file():
        raise DataError(f"{path}: file not found (the release writes it after predicting on the task's dev split)")
    try:
        with open(path, "rb") as fh:
            obj = NumpyOnlyUnpickler(fh).load()
    except Exception as err:
        raise DataError(f"{path}: not a plain numpy array pickle, refused to load it ({err})") from None
    if not isinstance(obj, (np.ndarray, np.generic)) or obj.dtype.kind not in "fiu":
        raise DataError(f"{path}: expected a numeric numpy array, found {type(obj).__name__}")
    return torch.from_numpy(np.atleast_1d(np.asarray(obj, dtype=np.float32)).copy()).reshape(-1)


# ----- one release task --------------------------------------------------------------------
@dataclass
class ReleaseTask:
    """One finished task of the release, tensors already under native names."""

    name: str
    folder: Path  # its saved_weights folder
    lora: dict[str, torch.Tensor]  # '<native layer>.lora_A' / '.lora_B'
    query: dict[str, torch.Tensor]  # 'query.down.weight', ...
    keys: torch.Tensor  # (i+1, d) as stored: newest first
    target: torch.Tensor | None  # (i+1,) as stored: newest first; None: no pickle (allowed for the last task)

    @property
    def r(self) -> int:
        return int(next(iter(self.lora.values())).shape[0]) if self.lora else 0


def saved_weights_dir(path: Path) -> Path:
    """Accept either `<i+1>-<task>` or its `saved_weights` folder."""
    path = Path(path)
    folder = path if path.name == SAVED_WEIGHTS else path / SAVED_WEIGHTS
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (give the release's <k>-<task> folders, in task order)")
    return folder


def task_name_of(folder: Path, index: int) -> str:
    """'<i+1>-<task>' -> '<task>'; the number must match the folder's place in the stream."""
    number, sep, name = folder.parent.name.partition("-")
    if not (sep and number.isdigit() and name):
        raise DataError(
            f"{folder.parent}: cannot tell the task name (the release names folders <k>-<task>); "
            "pass task_names explicitly"
        )
    if int(number) != index + 1:
        raise DataError(
            f"{folder.parent}: folder of task {number}, given as task {index + 1} of the stream "
            "(list the folders in task order, one per finished task)"
        )
    return name


def read_release_task(
    folder: Path, index: int, name: str, layers: Layers, target_optional: bool = False
) -> ReleaseTask:
    lora = _read_lora(folder, layers)
    query = _read_query(folder / QUERY_FILE)
    d = query["query.norm.weight"].shape[0]
    keys = load_tensor(folder / KEYS_FILE)
    keys = keys.unsqueeze(0) if keys.dim() == 1 else keys
    if keys.dim() != 2 or keys.shape[1] != d:
        raise DataError(
            f"{folder / KEYS_FILE}: keys of shape {tuple(keys.shape)}, the query network "
            f"({folder / QUERY_FILE}) has d={d}"
        )
    if keys.shape[0] != index + 1:
        raise DataError(
            f"{folder / KEYS_FILE}: {keys.shape[0]} keys, but this is task {index + 1} of the stream, "
            f"which has {index + 1} (a different number of tasks: folders missing or out of order?)"
        )
    if target_optional and not (folder / ATTENTION_FILE).exists():
        return ReleaseTask(name, folder, lora, query, keys, None)
    target = load_attention_weights(folder / ATTENTION_FILE)
    if target.shape[0] != index + 1:
        raise DataError(
            f"{folder / ATTENTION_FILE}: ARM target has {target.shape[0]} entries, "
            f"task {index + 1} of the stream needs {index + 1}"
        )
    return ReleaseTask(name, folder, lora, query, keys, target)


def _read_lora(folder: Path, layers: Layers) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    rank: int | None = None
    for part, filename in (("A", LORA_A_FILE), ("B", LORA_B_FILE)):
        path = folder / filename
        tensors = load_tensors(path)
        names = {layer: release_lora_name(layer, part) for layer in layers}
        missing = [n for n in names.values() if n not in tensors]
        if missing:
            raise DataError(
                f"{path}: missing {len(missing)} of {len(names)} current-block tensors, e.g. "
                f"{', '.join(missing[:3])} (another backbone, or not a SAPT release checkpoint?)"
            )
        for layer, release_name in names.items():
            tensor = tensors[release_name]
            out_f, in_f = layers[layer]
            rank = rank if rank is not None else int(tensor.shape[0] if part == "A" else tensor.shape[-1])
            expected = (rank, in_f) if part == "A" else (out_f, rank)
            if tuple(tensor.shape) != expected:
                raise DataError(
                    f"{path}: tensor {release_name} has shape {tuple(tensor.shape)}, the model needs "
                    f"{expected} (r={rank}; a different hidden size d or another backbone?)"
                )
            out[f"{layer}.lora_{part}"] = tensor.contiguous()
    return out


def _read_query(path: Path) -> dict[str, torch.Tensor]:
    tensors = load_tensors(path)
    missing = sorted(set(QUERY_NAMES) - set(tensors))
    if missing:
        raise DataError(
            f"{path}: missing {missing} (expected the release's trans_input: "
            "Linear(d,h), Linear(h,d), SiLU, LayerNorm(d))"
        )
    h, d = tensors["0.weight"].shape
    shapes = {"0.weight": (h, d), "1.weight": (d, h), "3.weight": (d,), "3.bias": (d,)}
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise DataError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, expected {shape} (d={d}, h={h})")
    return {QUERY_NAMES[k]: tensors[k].contiguous() for k in QUERY_NAMES}


# ----- the whole stream --------------------------------------------------------------------
def import_release_run(
    task_dirs: Sequence[Path],
    out_run_dir: Path,
    layers: Layers,
    task_names: Sequence[str] | None = None,
    hidden_size: int | None = None,
    last_target_optional: bool = False,
) -> list[Path]:
    """Convert the release's per-task folders (in task order) into native artifacts under
    `out_run_dir/tasks/`; return the native task folders. With `last_target_optional`, the last
    task may lack its attention pickle (the release never reads it): no ARM target is written for it.

    `layers`: the layers the importing model adapts (`adapted_layers(model, targets)`);
    every one must have its current block in every task. `hidden_size`: the importing
    model's d, checked against the keys and the query network.
    """
    if not task_dirs:
        raise DataError("no release task folders given")
    if not layers:
        raise DataError("no adapted layers given: the importing model has none of the target modules")
    folders = [saved_weights_dir(Path(p)) for p in task_dirs]
    if task_names is not None and len(task_names) != len(folders):
        raise DataError(f"{len(task_names)} task names for {len(folders)} release folders")
    names = list(task_names) if task_names is not None else [task_name_of(f, i) for i, f in enumerate(folders)]
    last = len(folders) - 1
    tasks = [
        read_release_task(f, i, n, layers, target_optional=last_target_optional and i == last)
        for i, (f, n) in enumerate(zip(folders, names))
    ]
    _check_consistent(tasks, hidden_size)
    keys = tasks[-1].keys.flip(0)  # newest first -> task order
    out = []
    for i, task in enumerate(tasks):
        native = Path(out_run_dir) / "tasks" / f"{i + 1}-{task.name}"  # as cl.loop.task_dir names it
        state = {"key": keys[i].contiguous(), **task.query, **task.lora}
        atomic_save_safetensors(state, native / BLOCK_FILE)
        if task.target is not None:
            atomic_write_json(
                native / TARGET_FILE,
                {
                    "task": task.name,
                    "target": task.target.flip(0).tolist(),
                    "block_order": "task order, oldest first",
                    "imported_from": str(task.folder),
                },
            )
        out.append(native)
    atomic_write_json(
        Path(out_run_dir) / MANIFEST_FILE,
        {
            "source": "circle-hit/SAPT release (saved_weights folders)",
            "folders": [str(t.folder) for t in tasks],
            "tasks": names,
            "r": tasks[0].r,
            "d": int(keys.shape[1]),
            "query_hidden": int(tasks[0].query["query.down.weight"].shape[0]),
            "layers": len(layers),
            "note": "keys and ARM targets reversed from newest-first to task order",
        },
    )
    log.debug("imported %d release tasks into %s", len(tasks), out_run_dir)
    return out


def _check_consistent(tasks: list[ReleaseTask], hidden_size: int | None) -> None:
    """Every folder must come from the same stream: one d, one r, the same frozen keys."""
    first, last = tasks[0], tasks[-1]
    d = int(last.keys.shape[1])
    if hidden_size is not None and d != hidden_size:
        raise DataError(f"{last.folder / KEYS_FILE}: keys of size d={d}, the model has hidden size {hidden_size}")
    for task in tasks:
        if int(task.keys.shape[1]) != d:
            raise DataError(
                f"{task.folder / KEYS_FILE}: d={task.keys.shape[1]}, but {last.folder / KEYS_FILE} has d={d}"
            )
        if task.r != first.r:
            raise DataError(
                f"{task.folder / LORA_A_FILE}: LoRA rank {task.r}, but {first.folder / LORA_A_FILE} has {first.r}"
            )
        # Rows of task i's file are [k_i ... k_0]: the last file's tail must repeat them.
        tail = last.keys[-task.keys.shape[0] :]
        if not torch.allclose(task.keys.float(), tail.float(), atol=_KEY_TOLERANCE, rtol=0):
            raise DataError(
                f"{task.folder / KEYS_FILE}: its keys differ from the copies in {last.folder / KEYS_FILE} "
                "(folders from different runs?)"
            )
