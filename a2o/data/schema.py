"""The manifest schema shared by every dataset reader (and A2O-Synth).

One Arrow table per dataset, one row per clip:

- ``video_id`` (string): unique clip id, safe for use in file names (readers sanitise it).
- ``uri`` (string): fsspec URI of the video file.
- ``label`` (string), ``label_id`` (int32): the action class.
- ``split`` (string): ``train``, ``val`` or ``test``. Search never reads ``test``.
- ``start_sec``, ``end_sec`` (float64, nullable): the clip's span inside the video (Kinetics).
- ``start_frame``, ``end_frame`` (int32, nullable): span in frames (MultiSports tubes).
- ``boxes`` (string, nullable): JSON ``{"width": W, "height": H, "tubes": {class: [[frame, x1, y1,
  x2, y2], ...]}}`` in source-video pixels; read by the annotation detector.
- ``masks_uri`` (string, nullable): URI of a per-video ``.npz`` of ground-truth masks, one array
  (T, H, W) uint8 per class name, on the frame grid of the video file (A2O-Synth).
"""

from __future__ import annotations

import re

import pyarrow as pa

SPLITS = ("train", "val", "test")

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("label_id", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("start_sec", pa.float64()),
        pa.field("end_sec", pa.float64()),
        pa.field("start_frame", pa.int32()),
        pa.field("end_frame", pa.int32()),
        pa.field("boxes", pa.string()),
        pa.field("masks_uri", pa.string()),
    ]
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_video_id(raw: str) -> str:
    """A file-name-safe version of a video id (unsafe runs become '_', no leading dots)."""
    cleaned = _UNSAFE.sub("_", str(raw)).lstrip(".")
    if not cleaned:
        raise ValueError(f"video id {raw!r} has no safe characters")
    return cleaned[:200]


def make_manifest(rows: list[dict]) -> pa.Table:
    """Build a manifest table from row dicts; missing optional columns become nulls."""
    columns = {f.name: [row.get(f.name) for row in rows] for f in MANIFEST_SCHEMA}
    return pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
