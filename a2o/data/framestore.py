"""The frame store: every video decoded once to the fixed frame grid, shared by detection and training.

Layout under ``root_uri`` (``storage.path("frames", grid_key(data))``)::

    grid.json              {"format": 1, "num_frames": T, "resolution": S}
    shards/part-<h>.parquet  decoded videos, one Parquet row group per video:
                           video_id, source_key, frames (large_binary: T*S*S*3 uint8, C order),
                           num_frames, height, width, frame_indices (list<int64>),
                           source_height, source_width
    index.parquet          video_id, source_key, shard, row_group (rebuilt from the shards)
    manifest.parquet       the manifest rows of the last prepare whose frames are stored

Why this layout: Parquet goes through fsspec/pyarrow to any object store and needs no extra
dependency. Each Ray Data task writes one shard (temp name, then rename) so workers never contend
on a file and a crash loses at most the batches in flight. One row group per video lets
:meth:`FrameStore.read` fetch exactly one video's bytes through the index, in one seek. Raw uint8
frames (zstd-compressed) decode in microseconds, unlike re-encoded video, which matters because
every trial re-reads every clip. ``source_key`` hashes the video URI and span, so a reused entry is
never stale; the index is rebuilt from the shards, so finished shards survive an interrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from a2o.config import DataConfig
from a2o.data.schema import MANIFEST_SCHEMA
from a2o.errors import DataError, VideoDecodeError
from a2o.progress import progress

__all__ = [
    "FrameRecord", "FrameStore", "PrepareSummary", "decode_batch", "grid_key", "parquet_source", "prepare_frame_store",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("source_key", pa.string()), ("frames", pa.large_binary()),
    ("num_frames", pa.int32()), ("height", pa.int32()), ("width", pa.int32()),
    ("frame_indices", pa.list_(pa.int64())), ("source_height", pa.int32()), ("source_width", pa.int32()),
])
RESULT_SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string())])
INDEX_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("source_key", pa.string()), ("shard", pa.string()), ("row_group", pa.int32()),
])
_SPAN_COLUMNS = ("uri", "start_sec", "end_sec", "start_frame", "end_frame")


def grid_key(data_cfg: DataConfig) -> str:
    """Folder name of a frame grid, e.g. ``t16_r64``: one store per (num_frames, grid_resolution)."""
    return f"t{data_cfg.num_frames}_r{data_cfg.grid_resolution}"


def source_key(row: dict) -> str:
    """Hash of what a video's frames depend on (file and span), to detect stale entries."""
    payload = json.dumps([row.get(c) for c in _SPAN_COLUMNS], sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PrepareSummary:
    """What :func:`prepare_frame_store` did: every manifest row is decoded, reused or skipped."""

    total: int
    decoded: int
    reused: int
    skipped: int
    skipped_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FrameRecord:
    """One stored video on the frame grid."""

    video_id: str
    frames: np.ndarray  # (T, S, S, 3) uint8
    frame_indices: np.ndarray  # (T,) int64, 0-based frame index in the source video
    source_height: int
    source_width: int


def _fs(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


def _is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def parquet_source(fs, path: str):
    """A source pyarrow reads without Python file objects.

    pyarrow 26 can abort the interpreter at exit (``terminate called without an active
    exception``) after reading Parquet through a Python file object, so local files go to arrow
    by path and remote ones through an arrow-owned buffer.
    """
    if _is_local(fs):
        return path
    return pa.BufferReader(pa.py_buffer(fs.cat_file(path)))


def _write_atomic(table: pa.Table, fs, path: str, **kwargs) -> None:
    """Write Parquet under a temp name then rename, so readers never see half a file."""
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex[:8]}-{name}"
    pq.write_table(table, tmp, filesystem=fs, compression="zstd", **kwargs)
    fs.mv(tmp, path)


def decode_batch(batch: pa.Table, *, root_uri: str, num_frames: int, resolution: int) -> pa.Table:
    """Decode a batch of manifest rows, write them as one shard, return one status row per video.

    The Ray Data map function of :func:`prepare_frame_store`, callable directly (tests, one box).
    A bad video (missing, empty, undecodable) becomes a ``skipped`` row with its error; the batch
    goes on.
    """
    from a2o.data.video import decode_clip, resize_center_crop

    stored, results = [], []
    for row in batch.to_pylist():
        video_id = row["video_id"]
        try:
            frames, indices = decode_clip(
                row["uri"], num_frames, start_sec=row.get("start_sec"), end_sec=row.get("end_sec"),
                start_frame=row.get("start_frame"), end_frame=row.get("end_frame"),
            )
            grid = resize_center_crop(frames, resolution)  # (T, S, S, 3) uint8
        except VideoDecodeError as exc:
            log.warning("skipping video %s: %s", video_id, exc)
            results.append({"video_id": video_id, "status": "skipped", "error": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001 - one odd file must not stop the stage; counted
            log.warning("skipping video %s (unexpected %s)", video_id, type(exc).__name__, exc_info=True)
            results.append({"video_id": video_id, "status": "skipped", "error": f"{type(exc).__name__}: {exc}"})
            continue
        stored.append({
            "video_id": video_id, "source_key": source_key(row), "frames": grid.tobytes(),
            "num_frames": grid.shape[0], "height": grid.shape[1], "width": grid.shape[2],
            "frame_indices": indices.tolist(),
            "source_height": frames.shape[1], "source_width": frames.shape[2],
        })
        results.append({"video_id": video_id, "status": "decoded", "error": None})
    if stored:
        fs, path = _fs(root_uri)
        fs.makedirs(f"{path}/shards", exist_ok=True)
        digest = hashlib.sha1("\n".join(f"{r['video_id']}:{r['source_key']}" for r in stored).encode())
        shard = pa.Table.from_pylist(stored, schema=SHARD_SCHEMA)
        _write_atomic(shard, fs, f"{path}/shards/part-{digest.hexdigest()[:16]}.parquet", row_group_size=1)
    log.info("frame store: decoded %d, skipped %d of a batch of %d",
             len(stored), len(results) - len(stored), batch.num_rows)
    return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)


def _scan_shards(fs, path: str) -> pa.Table:
    """The index rebuilt from the shards: (video_id, source_key, shard, row_group) per stored video."""
    shard_dir = f"{path}/shards"
    if not fs.exists(shard_dir):
        return INDEX_SCHEMA.empty_table()
    parts = []
    for shard in sorted(p for p in fs.ls(shard_dir, detail=False) if not p.rsplit("/", 1)[-1].startswith(".")):
        ids = pq.read_table(parquet_source(fs, shard), columns=["video_id", "source_key"])
        name = shard.rsplit("/", 1)[-1]
        parts.append(ids.append_column("shard", pa.array([name] * ids.num_rows, pa.string()))
                     .append_column("row_group", pa.array(range(ids.num_rows), pa.int32())))
    return pa.concat_tables(parts).cast(INDEX_SCHEMA) if parts else INDEX_SCHEMA.empty_table()


def _check_grid(fs, path: str, num_frames: int, resolution: int) -> None:
    grid = {"format": FORMAT_VERSION, "num_frames": num_frames, "resolution": resolution}
    grid_path = f"{path}/grid.json"
    if fs.exists(grid_path):
        with fs.open(grid_path, "r") as fh:
            existing = json.load(fh)
        if existing != grid:
            raise DataError(
                f"frame store {path} holds grid {existing}, not {grid}: use the folder named by "
                "grid_key(data) for this grid, or delete the old store"
            )
        return
    fs.makedirs(path, exist_ok=True)
    with fs.open(grid_path, "w") as fh:
        json.dump(grid, fh)


def _run_ray(todo: pa.Table, batch_size: int, num_cpus: float, fn_kwargs: dict) -> pa.Table:
    """Decode as a Ray Data stage: one task per ``batch_size`` rows, scheduled over the cluster."""
    import ray

    if not ray.is_initialized():
        raise DataError(
            "prepare_frame_store needs a running Ray: the entry point calls ray.init() "
            "(`a2o data prepare` does), or pass use_ray=False to decode in this process"
        )
    # One block per batch so each batch is its own task; results stream back as tasks finish.
    blocks = [todo.slice(i, batch_size) for i in range(0, todo.num_rows, batch_size)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        decode_batch, batch_format="pyarrow", batch_size=None, fn_kwargs=fn_kwargs, num_cpus=num_cpus,
    )
    parts = []
    with progress(todo.num_rows, "decoding videos", log, unit="videos") as bar:
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            parts.append(batch)
            bar.update(batch.num_rows)
    if not parts:
        return RESULT_SCHEMA.empty_table()
    return pa.concat_tables([part.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA) for part in parts])


def prepare_frame_store(
    manifest: pa.Table,
    data_cfg: DataConfig,
    root_uri: str,
    *,
    use_ray: bool = True,
    batch_size: int = 8,
    num_cpus: float = 1.0,
) -> PrepareSummary:
    """Decode every manifest video once onto the grid (``data.num_frames`` x ``data.grid_resolution``).

    Idempotent: videos already stored with the same source are reused; only the rest are decoded,
    as a Ray Data stage (``use_ray=False`` runs the same batches in this process). Bad videos are
    logged and counted in the summary, never raised. Does not start Ray: the caller does.
    """
    # Absolute local paths: Ray workers on other processes/nodes need not share our cwd.
    root_uri = root_uri if "://" in root_uri else os.path.abspath(root_uri)
    fs, path = _fs(root_uri)
    num_frames, resolution = data_cfg.num_frames, data_cfg.grid_resolution
    _check_grid(fs, path, num_frames, resolution)
    manifest = manifest.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    rows = manifest.select(list(("video_id",) + _SPAN_COLUMNS)).to_pylist()
    wanted = {r["video_id"]: source_key(r) for r in rows}
    existing = _scan_shards(fs, path)
    stored = set(zip(existing.column("video_id").to_pylist(), existing.column("source_key").to_pylist(), strict=True))
    reuse = [vid in wanted and (vid, wanted[vid]) in stored for vid in manifest.column("video_id").to_pylist()]
    todo = manifest.filter(pa.array([not r for r in reuse]))
    log.info("frame store %s: %d videos, %d reused, %d to decode", root_uri, len(rows), sum(reuse), todo.num_rows)

    fn_kwargs = {"root_uri": root_uri, "num_frames": num_frames, "resolution": resolution}
    if todo.num_rows == 0:
        results = RESULT_SCHEMA.empty_table()
    elif use_ray:
        results = _run_ray(todo, batch_size, num_cpus, fn_kwargs)
    else:
        parts = []
        with progress(todo.num_rows, "decoding videos", log, unit="videos") as bar:
            for i in range(0, todo.num_rows, batch_size):
                parts.append(decode_batch(todo.slice(i, batch_size), **fn_kwargs))
                bar.update(parts[-1].num_rows)
        results = pa.concat_tables(parts)
    statuses = dict(zip(results.column("video_id").to_pylist(), results.column("status").to_pylist(), strict=True))
    skipped_ids = sorted(vid for vid, status in statuses.items() if status == "skipped")

    # Index: keep, per video, the entry matching the current source (else the latest shard's).
    index = _scan_shards(fs, path).to_pylist()
    chosen: dict[str, dict] = {}
    for entry in index:
        current = chosen.get(entry["video_id"])
        if current is None or entry["source_key"] == wanted.get(entry["video_id"]):
            chosen[entry["video_id"]] = entry
    index_table = pa.Table.from_pylist(sorted(chosen.values(), key=lambda e: e["video_id"]), schema=INDEX_SCHEMA)
    _write_atomic(index_table, fs, f"{path}/index.parquet")
    ready = [chosen.get(vid, {}).get("source_key") == key for vid, key in wanted.items()]
    _write_atomic(manifest.filter(pa.array(ready)), fs, f"{path}/manifest.parquet")

    summary = PrepareSummary(
        total=len(rows), decoded=sum(s == "decoded" for s in statuses.values()), reused=sum(reuse),
        skipped=len(skipped_ids), skipped_ids=skipped_ids,
    )
    log.info("frame store %s: decoded %d, reused %d, skipped %d%s", root_uri, summary.decoded,
             summary.reused, summary.skipped, f" ({skipped_ids[:10]})" if skipped_ids else "")
    return summary


class FrameStore:
    """Reader of a prepared frame store. Picklable (open files are per process), so it can go to
    Ray workers and DataLoader workers."""

    _MAX_OPEN = 32

    def __init__(self, root_uri: str):
        self.root_uri = root_uri
        self._fs, self._path = _fs(root_uri)
        grid_path = f"{self._path}/grid.json"
        if not self._fs.exists(grid_path) or not self._fs.exists(f"{self._path}/index.parquet"):
            raise DataError(f"no frame store at {root_uri}: run `a2o data prepare` with this config first")
        with self._fs.open(grid_path, "r") as fh:
            grid = json.load(fh)
        self.num_frames: int = int(grid["num_frames"])
        self.resolution: int = int(grid["resolution"])
        index = pq.read_table(parquet_source(self._fs, f"{self._path}/index.parquet")).to_pylist()
        self._index = {e["video_id"]: (e["shard"], int(e["row_group"])) for e in index}
        self._files: OrderedDict = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._index

    def manifest(self) -> pa.Table:
        """The manifest rows whose frames are stored (all splits), as of the last prepare."""
        return pq.read_table(parquet_source(self._fs, f"{self._path}/manifest.parquet")).cast(MANIFEST_SCHEMA)

    def video_ids(self) -> list[str]:
        """Ids of the prepared videos of the current manifest, sorted."""
        return sorted(self.manifest().column("video_id").to_pylist())

    def _shard_file(self, shard: str) -> pq.ParquetFile:
        if os.getpid() != self._pid:  # forked (DataLoader worker): never share file offsets
            self._files, self._pid = OrderedDict(), os.getpid()
        if shard not in self._files:
            if len(self._files) >= self._MAX_OPEN:
                self._files.popitem(last=False)
            self._files[shard] = pq.ParquetFile(parquet_source(self._fs, f"{self._path}/shards/{shard}"))
        self._files.move_to_end(shard)
        return self._files[shard]

    def read(self, video_id: str) -> FrameRecord:
        """One video's frames: reads a single row group through the index."""
        if video_id not in self._index:
            raise DataError(
                f"video {video_id!r} is not in the frame store {self.root_uri} (skipped as undecodable, "
                "or not in the manifest it was prepared from): rerun `a2o data prepare`"
            )
        shard, row_group = self._index[video_id]
        table = self._shard_file(shard).read_row_group(row_group)
        row = {name: table.column(name)[0] for name in table.column_names}
        if row["video_id"].as_py() != video_id:
            raise DataError(f"frame store index of {self.root_uri} is stale: rerun `a2o data prepare`")
        shape = tuple(row[k].as_py() for k in ("num_frames", "height", "width")) + (3,)
        # as_buffer is zero-copy; the one copy makes the array writable (torch.from_numpy wants that).
        frames = np.frombuffer(row["frames"].as_buffer(), dtype=np.uint8).reshape(shape).copy()
        return FrameRecord(
            video_id=video_id, frames=frames,  # (T, S, S, 3) uint8
            frame_indices=np.asarray(row["frame_indices"].as_py(), dtype=np.int64),
            source_height=int(row["source_height"].as_py()), source_width=int(row["source_width"].as_py()),
        )
