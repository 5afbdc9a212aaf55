"""The unlabelled text a mini backbone learns from: the inputs and outputs of CL_Benchmark's
train splits, never a dev or test file (the backbone would have read the text it is scored on).

Every build records which files it read and their digests (`corpus.json`). The digests are part
of the backbone's cache key, so a task folder added later makes a new key; `describe_change`
says what changed since an earlier build, and `unseen_tasks` which tasks of a stream a build
never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError

TRAIN_FILE = "train.json"
MANIFEST = "corpus.json"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    relative: str  # as recorded in the manifest: <benchmark>/<task>/train.json
    digest: str


def _check_train_split(path: Path, where: str) -> None:
    if path.name != TRAIN_FILE:
        raise ConfigError(
            f"{where}: {path} is not a train split; a mini backbone pretrains on train.json files only "
            "(a dev or test file would put the text it is scored on into the backbone)"
        )


def _listed_files(root: Path, files: list[str]) -> list[Path]:
    paths = [Path(f) if Path(f).is_absolute() else root / f for f in files]
    for path in paths:
        _check_train_split(path, "backbone.tiny.corpus_files")
        if not path.is_file():
            raise DataError(f"backbone.tiny.corpus_files: {path} does not exist")
    return paths


def _benchmark_files(root: Path, benchmarks: list[str]) -> list[Path]:
    paths: list[Path] = []
    for bench in benchmarks:
        folder = root / bench
        if not folder.is_dir():
            raise DataError(
                f"backbone.tiny.corpus_benchmarks: no folder {folder} (paths.data_dir={root} must hold CL_Benchmark)"
            )
        paths += sorted(folder.glob(f"*/{TRAIN_FILE}"))
    return paths


def corpus_files(spec: dict) -> list[CorpusFile]:
    """The train splits a mini backbone reads, checked and digested, in a fixed order."""
    root = Path(str(spec.get("corpus_dir") or ".")).expanduser()
    listed = spec.get("corpus_files")
    paths = _listed_files(root, list(listed)) if listed else _benchmark_files(root, list(spec["corpus_benchmarks"]))
    if not paths:
        raise DataError(f"the mini backbone's corpus is empty: no */{TRAIN_FILE} under {root}")
    out = []
    for path in paths:
        try:
            relative = str(path.resolve().relative_to(root.resolve()))
        except ValueError:  # a listed file outside corpus_dir
            relative = str(path.resolve())
        out.append(CorpusFile(path, relative, hashlib.sha256(path.read_bytes()).hexdigest()))
    return out


def corpus_texts(files: list[CorpusFile]) -> Iterator[str]:
    """Each instance's input, then each of its outputs: text without the pairing that labels it."""
    for file in files:
        try:
            instances = json.loads(file.path.read_text(encoding="utf-8"))["Instances"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{file.path}: not a CL_Benchmark split ({type(err).__name__}: {err})") from None
        for inst in instances:
            yield str(inst.get("input", ""))
            outputs = inst.get("output", "")
            yield from (str(o) for o in (outputs if isinstance(outputs, list) else [outputs]))


def manifest(files: list[CorpusFile]) -> dict[str, str]:
    return {f.relative: f.digest for f in files}


def write_manifest(folder: Path, files: list[CorpusFile]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest(files), indent=1, sort_keys=True))


def read_manifest(folder: Path) -> dict[str, str] | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def describe_change(old: dict[str, str], new: dict[str, str]) -> str:
    """What differs between two builds' corpora, in a few words."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    edited = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    parts = [
        f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
        for label, items in (("added", added), ("removed", removed), ("changed", edited))
        if items
    ]
    return "; ".join(parts) or "no file differs"


def unseen_tasks(seen: dict[str, str], folder: str, tasks: list[str]) -> list[str]:
    """The stream's tasks (under benchmark folder `folder`) whose train split a build never read."""
    return [t for t in tasks if f"{folder}/{t}/{TRAIN_FILE}" not in seen]
