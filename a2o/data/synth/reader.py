"""Reading an A2O-Synth directory: the manifest joined to its root, scene facts and statistics.

Why a module of its own: everything downstream (manifest loading, the annotation detector, the
benchmarks) only reads a generated dataset; it should not need the renderer to do so. Roots are
local paths or fsspec URIs.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from a2o.data.schema import MANIFEST_SCHEMA, SPLITS
from a2o.errors import DataError

__all__ = [
    "SCENES_SCHEMA",
    "read_synth_manifest",
    "load_scenes",
    "load_dataset_info",
    "shortcut_statistic",
    "class_counts",
]

# One row per clip, written next to the manifest (MANIFEST_SCHEMA stays shared and unchanged).
SCENES_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("background", pa.string(), nullable=False),
        pa.field("others", pa.list_(pa.string()), nullable=False),
        pa.field("shortcut_applied", pa.bool_(), nullable=False),
        pa.field("shortcut_background", pa.string(), nullable=False),
    ]
)


def fs_and_path(root: str):
    """(fsspec filesystem, path) for a local path or URI."""
    import fsspec

    return fsspec.core.url_to_fs(root)


def is_local(fs) -> bool:
    """Whether ``fs`` is the local disk (where PyAV can write directly)."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _read_parquet(root: str, name: str) -> pa.Table:
    fs, path = fs_and_path(root)
    file_path = f"{path.rstrip('/')}/{name}"
    if not fs.exists(file_path):
        raise DataError(
            f"no A2O-Synth dataset at {root} ({name} missing): generate it with "
            f"`a2o data synth --preset household --out {root}`"
        )
    # Copy into an Arrow-owned buffer: pyarrow's reader threads may release a buffer that wraps Python
    # bytes during interpreter shutdown, which aborts the process at random ("terminate called without
    # an active exception", pyarrow 26). These tables are small.
    with fs.open(file_path, "rb") as handle:
        data = handle.read()
    buffer = pa.allocate_buffer(len(data))
    np.frombuffer(buffer, dtype=np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
    return pq.read_table(pa.BufferReader(buffer))


def _base_uri(root: str) -> str:
    fs, path = fs_and_path(root)
    return os.path.abspath(path) if is_local(fs) else root.rstrip("/")


def read_synth_manifest(root: str) -> pa.Table:
    """The manifest with ``uri`` and ``masks_uri`` joined to ``root`` (absolute path or fsspec URI)."""
    table = _read_parquet(root, "manifest.parquet")
    if not table.schema.equals(MANIFEST_SCHEMA):
        raise DataError(f"{root}/manifest.parquet does not follow MANIFEST_SCHEMA; regenerate it")
    base = _base_uri(root)
    for column in ("uri", "masks_uri"):
        joined = pa.array([f"{base}/{rel}" for rel in table.column(column).to_pylist()], pa.string())
        table = table.set_column(table.schema.get_field_index(column), MANIFEST_SCHEMA.field(column), joined)
    return table


def load_scenes(root: str) -> pa.Table:
    """Per-clip scene facts (``SCENES_SCHEMA``): region, other objects, shortcut region and whether applied."""
    return _read_parquet(root, "scenes.parquet")


def load_dataset_info(root: str) -> dict:
    """``dataset.json``: the world spec, action names, detector channels and lexicon, shortcut map."""
    fs, path = fs_and_path(root)
    with fs.open(f"{path.rstrip('/')}/dataset.json", "r", encoding="utf-8") as handle:
        return json.load(handle)


def shortcut_statistic(root: str) -> dict[str, float]:
    """Share of each split's clips that show their action's shortcut region.

    Train should read about ``p + (1 - p) / R`` (p the shortcut probability, R regions); val and
    test about chance, 1 / R.
    """
    scenes = load_scenes(root).to_pylist()
    result: dict[str, float] = {}
    for split in SPLITS:
        rows = [r for r in scenes if r["split"] == split]
        if rows:
            result[split] = float(np.mean([r["background"] == r["shortcut_background"] for r in rows]))
    return result


def class_counts(root: str) -> dict[str, dict[str, int]]:
    """Clips per label in each split, labels in label-id order."""
    manifest = _read_parquet(root, "manifest.parquet").to_pylist()
    order = {r["label"]: r["label_id"] for r in manifest}
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        labels = [r["label"] for r in manifest if r["split"] == split]
        if labels:
            counts[split] = {label: labels.count(label) for label in sorted(set(labels), key=order.get)}
    return counts
