"""Dataset readers -> one manifest table (:data:`~a2o.data.schema.MANIFEST_SCHEMA`), then splits.

Each reader takes ``(root, *, annotations, video_dir)`` URIs and returns every labelled clip with the
split the dataset itself defines. :func:`load_manifest` then carves val where the dataset has none,
samples few-shot train subsets and caps sizes (:mod:`a2o.data.splits`). All file access goes through
fsspec, so the same code reads a local folder, ``s3://``, ``gs://`` or ``memory://``.

Label ids are the dataset's own where it defines them (the SSv2 labels json, the MultiSports
``labels`` list) and otherwise the index of the sorted train label names. A row whose label is not
in the label map is an error naming the file, row and label: a silent drop would shift accuracy.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
import os
import pickle
from collections.abc import Callable

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from a2o.config import DataConfig
from a2o.data.schema import MANIFEST_SCHEMA, SPLITS, make_manifest, safe_video_id
from a2o.errors import ConfigError, DataError, ManifestError

__all__ = ["load_manifest", "read_ssv2", "read_multisports", "read_k400", "read_csv_manifest",
           "write_manifest", "read_manifest", "get_reader", "READERS"]

log = logging.getLogger(__name__)

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validate": "val", "validation": "val", "test": "test", "testing": "test"}
_VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")


def _join(root: str, *parts: str) -> str:
    parts = [p.strip("/") for p in parts if p]
    return "/".join([root.rstrip("/") or "/", *parts]) if parts else root


def _fs(uri: str):
    return fsspec.core.url_to_fs(uri)


def _exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.exists(path)


def _first_existing(root: str, candidates: tuple[str, ...]) -> str:
    """The first ``root/candidate`` that exists ('' = root itself)."""
    for candidate in candidates:
        uri = _join(root, candidate)
        if _exists(uri):
            return uri
    return root


def _read_bytes(uri: str, what: str) -> bytes:
    fs, path = _fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise ManifestError(f"{what} not found: {uri}. Check data.root / data.annotations.") from exc


def _read_json(uri: str, what: str):
    try:
        return json.loads(_read_bytes(uri, what))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{what} {uri} is not valid JSON: {exc}") from exc


def _read_csv(uri: str, required: tuple[str, ...]) -> list[dict[str, str]]:
    text = _read_bytes(uri, "annotation csv").decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(
            f"{uri}: missing column(s) {missing}; the header must include {list(required)}"
        )
    return list(reader)


def _video_index(video_dir: str) -> dict[str, str]:
    """{file stem: uri} of every video below ``video_dir`` (one listing instead of a stat per clip)."""
    fs, path = _fs(video_dir)
    if not fs.exists(path):
        return {}
    remote = "://" in video_dir
    index: dict[str, str] = {}
    for found in sorted(fs.find(path)):
        name = found.rsplit("/", 1)[-1]
        stem, dot, ext = name.rpartition(".")
        if dot and f".{ext.lower()}" in _VIDEO_EXTS:
            index.setdefault(stem, fs.unstrip_protocol(found) if remote else found)
    return index


def _split_of(raw: str, source: str, row: int) -> str:
    split = _SPLIT_ALIASES.get(str(raw).strip().lower())
    if split is None:
        raise ManifestError(f"{source} row {row}: split {raw!r} is not one of train/val/test")
    return split


def _unknown_label(source: str, row: int, label: str, label_source: str) -> ManifestError:
    return ManifestError(
        f"{source} row {row}: label {label!r} is not in the label map ({label_source}). "
        "Fix the row or add the label to the label map."
    )


def _sorted_label_map(rows: list[dict]) -> dict[str, int]:
    """Ids = index of sorted label names, from the train rows (all rows when there are none)."""
    train = [r["label"] for r in rows if r["split"] == "train"]
    names = sorted(set(train or [r["label"] for r in rows]))
    return {name: i for i, name in enumerate(names)}


def _apply_label_map(rows: list[dict], label_map: dict[str, int], label_source: str) -> None:
    for r in rows:
        if r["label"] not in label_map:
            raise _unknown_label(r.pop("_source"), r.pop("_row"), r["label"], label_source)
        r["label_id"] = label_map[r["label"]]
        r.pop("_source", None)
        r.pop("_row", None)


def _missing_report(rows: list[dict], found: set[str], video_dir: str) -> None:
    """Warn once, at manifest time, about clips whose file is absent (the frame store skips them)."""
    missing = [r["video_id"] for r in rows if r["uri"] not in found]
    if missing:
        log.warning(
            "%d of %d clips have no video file under %s (e.g. %s); the frame store will skip them",
            len(missing), len(rows), video_dir, missing[:3],
        )


def read_ssv2(root: str, *, annotations: str = "", video_dir: str = "") -> pa.Table:
    """Something-Something v2: ``labels.json`` + ``train.json`` / ``validation.json``, ``<id>.webm``.

    Entries carry the template (``"Putting [something] on [something]"``); the labels json keys are
    the template without brackets. The official validation set becomes ``test`` (SSv2's test labels
    are withheld), and val is carved from train by :func:`load_manifest`.
    """
    label_dir = _join(root, annotations) if annotations else _first_existing(root, ("labels",))
    labels_uri = _join(label_dir, "labels.json")
    raw_map = _read_json(labels_uri, "SSv2 labels json")
    try:
        label_map = {str(name): int(idx) for name, idx in raw_map.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ManifestError(f"{labels_uri}: expected {{label name: id string}}: {exc}") from exc
    vdir = _join(root, video_dir) if video_dir else _first_existing(
        root, ("20bn-something-something-v2", "videos")
    )
    rows = []
    for file_name, split in (("train.json", "train"), ("validation.json", "test")):
        uri = _join(label_dir, file_name)
        if split == "test" and not _exists(uri):
            log.warning("SSv2: %s not found; the manifest has no test split", uri)
            continue
        entries = _read_json(uri, "SSv2 annotation json")
        for row, entry in enumerate(entries):
            try:
                clip_id, template = str(entry["id"]), str(entry["template"])
            except (KeyError, TypeError) as exc:
                raise ManifestError(f"{uri} row {row}: expected keys 'id' and 'template'") from exc
            label = template.replace("[", "").replace("]", "")
            if label not in label_map:
                raise _unknown_label(uri, row, label, labels_uri)
            video_id = safe_video_id(clip_id)
            rows.append({"video_id": video_id, "uri": _join(vdir, f"{clip_id}.webm"), "label": label,
                         "label_id": label_map[label], "split": split})
    return make_manifest(rows)


def read_multisports(root: str, *, annotations: str = "", video_dir: str = "") -> pa.Table:
    """MultiSports ``multisports_GT.pkl``: one row per ground-truth tube.

    ``train_videos[0]`` -> train, ``test_videos[0]`` (the public val set) -> test. Tube frames are
    1-based in the annotation (ACT convention); the manifest stores 0-based, inclusive
    ``start_frame``/``end_frame`` and 0-based frames in ``boxes``, matching decoded frame indices.
    The pickle is the dataset's official format: only read annotation files you trust.
    """
    if annotations:
        pkl_uri = _join(root, annotations)
    else:  # the official release keeps the pickle next to the videos, in trainval/
        candidates = [_join(root, "multisports_GT.pkl"), _join(root, "trainval", "multisports_GT.pkl")]
        pkl_uri = next((uri for uri in candidates if _exists(uri)), candidates[0])
    try:
        gt = pickle.loads(_read_bytes(pkl_uri, "MultiSports annotation pickle"), encoding="latin1")
        labels = [str(name) for name in gt["labels"]]
        gttubes, resolution = gt["gttubes"], gt["resolution"]
        split_videos = (("train", gt["train_videos"][0]), ("test", gt["test_videos"][0]))
    except (KeyError, IndexError, TypeError, pickle.UnpicklingError) as exc:
        raise ManifestError(
            f"{pkl_uri}: expected keys labels, gttubes, nframes, train_videos, test_videos, "
            f"resolution ({type(exc).__name__}: {exc})"
        ) from exc
    vdir = _join(root, video_dir) if video_dir else _first_existing(root, ("trainval",))
    index = _video_index(vdir)
    rows = []
    for split, videos in split_videos:
        for video in videos:
            stem = str(video).rsplit("/", 1)[-1]
            uri = index.get(stem, _join(vdir, f"{video}.mp4"))
            try:
                height, width = (int(v) for v in resolution[video])
            except (KeyError, TypeError, ValueError) as exc:
                raise ManifestError(f"{pkl_uri}: resolution[{video!r}] is missing or not (h, w)") from exc
            for label_index in sorted(gttubes.get(video, {})):
                where = f"{pkl_uri} gttubes[{video!r}][{label_index}]"
                if not 0 <= int(label_index) < len(labels):
                    raise _unknown_label(where, 0, str(label_index), f"labels list of {len(labels)}")
                for k, tube in enumerate(gttubes[video][label_index]):
                    boxes = np.asarray(tube, dtype=np.float64)  # (n, 5): frame, x1, y1, x2, y2
                    if boxes.ndim != 2 or boxes.shape[1] != 5 or len(boxes) == 0:
                        raise ManifestError(f"{where} row {k}: expected rows (frame, x1, y1, x2, y2)")
                    boxes[:, 0] -= 1  # 1-based -> 0-based frames
                    label = labels[int(label_index)]
                    box_json = {"width": width, "height": height,
                                "tubes": {label: np.round(boxes, 2).tolist()}}
                    rows.append({
                        "video_id": safe_video_id(f"{video}_a{int(label_index)}_t{k}"),
                        "uri": uri, "label": label, "label_id": int(label_index), "split": split,
                        "start_frame": int(boxes[:, 0].min()), "end_frame": int(boxes[:, 0].max()),
                        "boxes": json.dumps(box_json, separators=(",", ":")),
                    })
    _missing_report(rows, set(index.values()), vdir)
    return make_manifest(rows)


def read_k400(root: str, *, annotations: str = "", video_dir: str = "") -> pa.Table:
    """Kinetics-400 csvs ``label,youtube_id,time_start,time_end,split`` (train/val/test).

    Trimmed files ``<youtube_id>_<start:06d>_<end:06d>.mp4`` are found anywhere below the video dir
    (``<split>/``, flat, or per-label folders). When only a full video ``<youtube_id>.mp4`` exists,
    the row keeps ``start_sec``/``end_sec`` so the decoder cuts the clip.
    """
    if annotations:
        csv_uris = [_join(root, annotations)]
    else:
        csv_uris = [
            _join(base, name)
            for base in (root, _join(root, "annotations"))
            for name in ("train.csv", "validate.csv", "val.csv", "test.csv")
            if _exists(_join(base, name))
        ]
        if not csv_uris:
            raise ManifestError(
                f"no Kinetics csv (train.csv, validate.csv, val.csv, test.csv) under {root} or "
                f"{root}/annotations: set data.annotations to the csv file"
            )
    vdir = _join(root, video_dir) if video_dir else _first_existing(root, ("videos",))
    index = _video_index(vdir)
    rows = []
    for uri in csv_uris:
        for row, entry in enumerate(_read_csv(uri, ("label", "youtube_id", "time_start", "time_end", "split"))):
            try:
                start, end = int(float(entry["time_start"])), int(float(entry["time_end"]))
            except ValueError as exc:
                raise ManifestError(f"{uri} row {row}: time_start/time_end must be numbers") from exc
            yid, label = entry["youtube_id"].strip(), entry["label"].strip()
            if not yid or not label:
                raise ManifestError(f"{uri} row {row}: empty youtube_id or label")
            name = f"{yid}_{start:06d}_{end:06d}"
            record = {"video_id": safe_video_id(name), "label": label,
                      "split": _split_of(entry["split"], uri, row), "_source": uri, "_row": row}
            if name in index:
                record["uri"] = index[name]
            elif yid in index:  # an untrimmed download: cut the span at decode time
                record.update(uri=index[yid], start_sec=float(start), end_sec=float(end))
            else:
                record["uri"] = _join(vdir, f"{name}.mp4")
            rows.append(record)
    _apply_label_map(rows, _sorted_label_map(rows), "sorted train labels")
    _missing_report(rows, set(index.values()), vdir)
    return make_manifest(rows)


def read_csv_manifest(root: str, *, annotations: str = "", video_dir: str = "") -> pa.Table:
    """A plain csv ``path,label[,split]`` (paths relative to the video dir, or absolute URIs).

    Without a split column every row is train (val is then carved; there is no test split).
    """
    uri = _join(root, annotations or "manifest.csv")
    vdir = _join(root, video_dir) if video_dir else root
    rows = []
    for row, entry in enumerate(_read_csv(uri, ("path", "label"))):
        path, label = (entry.get("path") or "").strip(), (entry.get("label") or "").strip()
        if not path or not label:
            raise ManifestError(f"{uri} row {row}: empty path or label")
        video_uri = path if ("://" in path or path.startswith("/")) else _join(vdir, path)
        stem = path.split("://", 1)[-1].strip("/").rsplit(".", 1)[0]
        split = _split_of(entry["split"], uri, row) if entry.get("split") else "train"
        rows.append({"video_id": safe_video_id(stem), "uri": video_uri, "label": label,
                     "split": split, "_source": uri, "_row": row})
    _apply_label_map(rows, _sorted_label_map(rows), "sorted train labels")
    return make_manifest(rows)


def _read_synthetic(root: str, *, annotations: str = "", video_dir: str = "") -> pa.Table:
    from a2o.data.synthetic import read_synth_manifest  # another layer: imported on use

    return read_synth_manifest(root)


# Name -> "module:function", imported on use so a reader's dependencies load only when needed.
READERS: dict[str, str] = {
    "ssv2": "a2o.data.manifest:read_ssv2",
    "multisports": "a2o.data.manifest:read_multisports",
    "k400": "a2o.data.manifest:read_k400",
    "csv": "a2o.data.manifest:read_csv_manifest",
    "synthetic": "a2o.data.manifest:_read_synthetic",
}


def get_reader(dataset: str) -> Callable[..., pa.Table]:
    """The reader function of ``dataset``; ``ValueError`` lists the valid names."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {sorted(READERS)}")
    module, func = READERS[dataset].split(":")
    return getattr(importlib.import_module(module), func)


def _validate(table: pa.Table, dataset: str, root: str) -> pa.Table:
    table = table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    if table.num_rows == 0:
        raise ManifestError(f"the {dataset} manifest under {root} is empty: check data.root")
    ids = table.column("video_id").to_pylist()
    if len(set(ids)) != len(ids):
        dupes = sorted({v for v in ids if ids.count(v) > 1})[:5]
        raise ManifestError(f"duplicate video_id(s) in the {dataset} manifest: {dupes}")
    bad = sorted(set(table.column("split").to_pylist()) - set(SPLITS))
    if bad:
        raise ManifestError(f"split value(s) {bad} are not one of {list(SPLITS)}")
    return table


def check_data_root(data_cfg: DataConfig) -> None:
    """The cheap part of :func:`load_manifest`, for entry points to run before Ray starts.

    ``data.root`` must be set and, except for A2O-Synth (generated there on first use), exist.
    """
    if not data_cfg.root:
        raise ConfigError("data.root: empty; set it to the dataset folder or URI")
    if data_cfg.dataset == "synthetic":
        return
    root = data_cfg.root if "://" in data_cfg.root else os.path.abspath(data_cfg.root)
    try:
        found = _exists(root)
    except Exception as exc:  # an unreachable bucket, missing credentials, a bad scheme
        raise DataError(f"data.root: cannot reach {root} ({type(exc).__name__}: {exc})") from None
    if not found:
        raise DataError(
            f"data.root: {root} does not exist. Set data.root to the folder that holds the "
            f"{data_cfg.dataset} dataset (its annotations and videos), or use data.dataset: synthetic "
            "for the built-in A2O-Synth worlds"
        )


def load_manifest(data_cfg: DataConfig) -> pa.Table:
    """Read ``data.dataset`` under ``data.root``, then split and sample; deterministic for ``data.seed``.

    Order: dataset splits -> seeded stratified val carve from train when there is no val ->
    few-shot ``data.few_shot_k`` per class of train -> ``data.max_videos`` per split. Test rows are
    only ever capped, never moved.
    """
    from a2o.data.splits import cap_per_split, carve_val, few_shot, split_counts

    if not data_cfg.root:
        raise ConfigError("data.root: empty; set it to the dataset folder or URI")
    # Absolute local paths: Ray workers decoding the videos need not share the driver's cwd.
    root = data_cfg.root if "://" in data_cfg.root else os.path.abspath(data_cfg.root)
    reader = get_reader(data_cfg.dataset)
    table = _validate(
        reader(root, annotations=data_cfg.annotations, video_dir=data_cfg.video_dir),
        data_cfg.dataset, root,
    )
    splits = set(table.column("split").to_pylist())
    if "train" not in splits:
        raise ManifestError(f"the {data_cfg.dataset} manifest under {data_cfg.root} has no train rows")
    if "val" not in splits:
        table = carve_val(table, data_cfg.val_fraction, data_cfg.seed)
    table = few_shot(table, data_cfg.few_shot_k, data_cfg.seed)
    table = cap_per_split(table, data_cfg.max_videos, data_cfg.seed)
    table = table.cast(MANIFEST_SCHEMA)
    counts = split_counts(table)
    log.info("manifest %s: %s", data_cfg.dataset,
             ", ".join(f"{s} {n} clips / {c} classes" for s, (n, c) in counts.items()))
    return table


def write_manifest(table: pa.Table, uri: str) -> str:
    """Write a manifest table as Parquet at ``uri`` (parent folders created)."""
    fs, path = _fs(uri)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    pq.write_table(table, path, filesystem=fs)
    return uri


def read_manifest(uri: str) -> pa.Table:
    """Read a manifest Parquet written by :func:`write_manifest` (or A2O-Synth)."""
    fs, path = _fs(uri)
    if not fs.exists(path):
        raise ManifestError(f"no manifest at {uri}: run `a2o data prepare` first")
    from a2o.data.framestore import parquet_source  # arrow-owned reads (see there why)

    return pq.read_table(parquet_source(fs, path)).cast(MANIFEST_SCHEMA)
