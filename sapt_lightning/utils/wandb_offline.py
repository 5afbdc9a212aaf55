"""Read an offline W&B run (`wandb/offline-run-*/run-*.wandb`) back in Python.

wandb >= 0.18 writes the run log from its Go core and ships no Python reader.
The file is a 7-byte header (":W&B", magic 0xBEE1, version 0) followed by a
LevelDB-style log: 32 KiB blocks of chunks, each chunk a 7-byte header
(checksum u32, length u16, type u8: full/first/middle/last) and payload; a
record's payload is wandb's own `Record` protobuf, which we decode with the
message classes wandb installs. Used by the tests and handy for checking what
a run will upload before `wandb sync`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes, path: Path) -> Iterator[bytes]:
    if not data.startswith(_HEADER):
        raise DataError(f"{path}: not a W&B run log (header {data[:7]!r})")
    pos, pending = len(_HEADER), b""
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # the writer pads a block's tail that cannot hold a header
            pos += left_in_block
            continue
        _checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left_in_block
            continue
        start = pos + _CHUNK_HEADER
        chunk = data[start : start + length]
        if len(chunk) < length:
            break  # a run still being written, or cut short: keep what is complete
        pos = start + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:
            raise DataError(f"{path}: unknown chunk type {kind} at byte {pos - length - _CHUNK_HEADER}")


def read_records(path: str | Path) -> Iterator:
    """Every `wandb_internal_pb2.Record` in a `.wandb` file, in write order."""
    from wandb.proto import wandb_internal_pb2

    path = Path(path)
    for payload in _payloads(path.read_bytes(), path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


@dataclass
class ArtifactEntry:
    """One logged artifact: its type and the paths of its files (as they will be uploaded)."""

    type: str
    files: list[str]


def _artifact_files(manifest) -> list[str]:
    """File paths of an artifact manifest; large manifests are written to a (possibly gzipped) JSON file."""
    if manifest.contents:
        return sorted(entry.path for entry in manifest.contents)
    path = Path(manifest.manifest_file_path) if manifest.manifest_file_path else None
    if path is None or not path.is_file():
        return []
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        import gzip

        raw = gzip.decompress(raw)
    lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    return sorted(str(entry.get("path")) for entry in lines)


@dataclass
class OfflineRun:
    """What an offline run holds: history rows, summary, config, and its media files."""

    run_dir: Path
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    artifacts: dict[str, ArtifactEntry] = field(default_factory=dict)  # by name

    def metric(self, key: str) -> list:
        """Every logged value of `key`, in step order."""
        return [row[key] for row in self.history if key in row]

    def media(self, kind: str) -> list[Path]:
        """Files under files/media/<kind> (`images`, `table`)."""
        return sorted((self.run_dir / "files" / "media" / kind).rglob("*.*"))


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Parse `<save_dir>/wandb/offline-run-*` (or its `latest-run` link)."""
    run_dir = Path(run_dir)
    logs = sorted(run_dir.glob("run-*.wandb"))
    if not logs:
        raise DataError(f"{run_dir}: no run-*.wandb file; is this an offline W&B run directory?")
    run = OfflineRun(run_dir=run_dir)
    for record in read_records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            run.history.append({_item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_item_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "config":
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "artifact":
            art = record.artifact
            run.artifacts[art.name] = ArtifactEntry(art.type, _artifact_files(art.manifest))
        elif kind == "run":
            run.group, run.job_type, run.tags = record.run.run_group, record.run.job_type, list(record.run.tags)
            run.config.update({_item_key(i): json.loads(i.value_json) for i in record.run.config.update})
    return run


def main(argv: list[str] | None = None) -> None:
    """`python -m sapt_lightning.utils.wandb_offline <offline-run dir>`: what the run will upload."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m sapt_lightning.utils.wandb_offline <run_dir>/wandb/offline-run-...")
    try:
        run = read_offline_run(args[0])
    except (DataError, OSError) as err:
        raise SystemExit(f"error: {err}") from None
    print(f"group {run.group}  job_type {run.job_type}  tags {', '.join(run.tags)}  history rows {len(run.history)}")
    for key in sorted(
        {k for row in run.history for k in row if "/" in k and not k.startswith(("_", "plots/", "tables/"))}
    ):
        values = [v for v in run.metric(key) if isinstance(v, (int, float))]
        if values:
            print(f"  {key:<40} n={len(values):<5} last={values[-1]:.4g}")
    print(f"  media: {len(run.media('images'))} images, {len(run.media('table'))} tables")
    for name, artifact in run.artifacts.items():
        print(f"  artifact {name} ({artifact.type}): {len(artifact.files)} files")


if __name__ == "__main__":
    main()
