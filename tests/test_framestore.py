"""The frame store: decode once, reuse, skip bad videos, read back exact shapes; one Ray Data run."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pyarrow as pa
import pytest
from fixtures_video import level, write_corrupt, write_multisports, write_video

from a2o.config import DataConfig
from a2o.data.framestore import FrameStore, decode_batch, grid_key, prepare_frame_store
from a2o.data.manifest import load_manifest
from a2o.data.schema import make_manifest
from a2o.errors import DataError

DATA = DataConfig(num_frames=4, resolution=16)


def _manifest(tmp_path, bad: bool = True) -> pa.Table:
    """Four good clips (mp4/webm, two classes) and, optionally, random-bytes, empty and missing files."""
    rows = []
    for i, name in enumerate(["g0.mp4", "g1.webm", "g2.mp4", "g3.webm"]):
        path = write_video(tmp_path / "videos" / name, num_frames=12 - i)
        rows.append({"video_id": name.split(".")[0], "uri": path, "label": "ab"[i % 2], "label_id": i % 2,
                     "split": ["train", "train", "val", "test"][i]})
    if bad:
        for kind in ("random", "empty"):
            path = write_corrupt(tmp_path / "videos" / f"{kind}.mp4", kind)
            rows.append({"video_id": kind, "uri": path, "label": "a", "label_id": 0, "split": "train"})
        rows.append({"video_id": "missing", "uri": str(tmp_path / "videos" / "nope.mp4"), "label": "b",
                     "label_id": 1, "split": "train"})
    return make_manifest(rows)


def test_prepare_skips_bad_videos_and_reads_back_the_grid(tmp_path):
    root = str(tmp_path / "frames" / grid_key(DATA))
    assert root.endswith("t4_r16")
    summary = prepare_frame_store(_manifest(tmp_path), DATA, root, use_ray=False, batch_size=3)
    assert (summary.total, summary.decoded, summary.reused, summary.skipped) == (7, 4, 0, 3)
    assert summary.skipped_ids == ["empty", "missing", "random"]
    store = FrameStore(root)
    assert store.video_ids() == ["g0", "g1", "g2", "g3"] and len(store) == 4 and "random" not in store
    assert store.num_frames == 4 and store.resolution == 16
    record = store.read("g1")  # 11 frames, sampled to 4
    assert record.frames.shape == (4, 16, 16, 3) and record.frames.dtype == np.uint8
    assert record.frames.flags.writeable
    np.testing.assert_array_equal(record.frame_indices, [1, 4, 6, 9])
    assert (record.source_height, record.source_width) == (24, 32)
    grey = record.frames[:, :, -4:].reshape(4, -1).mean(axis=1)
    np.testing.assert_allclose(grey, [level(i) for i in record.frame_indices], atol=8)
    manifest = store.manifest()
    assert manifest.column("video_id").to_pylist() == ["g0", "g1", "g2", "g3"]
    assert manifest.column("label_id").to_pylist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="rerun `a2o data prepare`"):
        store.read("random")


def test_second_prepare_reuses_and_a_changed_source_is_redecoded(tmp_path):
    root = str(tmp_path / "store")
    manifest = _manifest(tmp_path)
    prepare_frame_store(manifest, DATA, root, use_ray=False)
    again = prepare_frame_store(manifest, DATA, root, use_ray=False)
    assert (again.decoded, again.reused, again.skipped) == (0, 4, 3)  # bad ones are retried
    # a new span for g0 makes its stored frames stale: only g0 is decoded again
    spans = [0 if vid == "g0" else None for vid in manifest.column("video_id").to_pylist()]
    ends = [2 if vid == "g0" else None for vid in manifest.column("video_id").to_pylist()]
    changed = manifest.set_column(7, "start_frame", pa.array(spans, pa.int32()))
    changed = changed.set_column(8, "end_frame", pa.array(ends, pa.int32()))
    third = prepare_frame_store(changed, DATA, root, use_ray=False)
    assert (third.decoded, third.reused, third.skipped) == (1, 3, 3)
    np.testing.assert_array_equal(FrameStore(root).read("g0").frame_indices, [0, 1, 1, 2])


def test_grid_mismatch_and_missing_store_fail_clearly(tmp_path):
    root = str(tmp_path / "store")
    prepare_frame_store(_manifest(tmp_path, bad=False), DATA, root, use_ray=False)
    with pytest.raises(DataError, match="grid_key"):
        prepare_frame_store(_manifest(tmp_path, bad=False), DataConfig(num_frames=8, resolution=16), root,
                            use_ray=False)
    with pytest.raises(DataError, match="run `a2o data prepare`"):
        FrameStore(str(tmp_path / "nowhere"))


def test_decode_batch_directly_and_store_pickles(tmp_path):
    root = f"memory://frames-{uuid.uuid4().hex[:8]}"
    results = decode_batch(_manifest(tmp_path).slice(3, 2), root_uri=root, num_frames=2, resolution=8)
    assert results.to_pylist()[0] == {"video_id": "g3", "status": "decoded", "error": None}
    skipped = results.to_pylist()[1]
    assert skipped["status"] == "skipped" and "random.mp4" in skipped["error"]
    summary = prepare_frame_store(_manifest(tmp_path, bad=False), DataConfig(num_frames=2, resolution=8), root,
                                  use_ray=False)
    assert (summary.decoded, summary.reused) == (3, 1)  # g3's shard from decode_batch is reused
    store = FrameStore(root)
    expected = store.read("g2").frames
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.read("g2").frames, expected)
    assert expected.shape == (2, 8, 8, 3)


def test_prepare_as_ray_data_stage(tmp_path, ray_local):
    root = str(tmp_path / "store")
    summary = prepare_frame_store(_manifest(tmp_path), DATA, root, batch_size=4, num_cpus=1)
    assert (summary.total, summary.decoded, summary.reused, summary.skipped) == (7, 4, 0, 3)
    assert summary.skipped_ids == ["empty", "missing", "random"]
    store = FrameStore(root)
    assert store.read("g3").frames.shape == (4, 16, 16, 3)
    assert prepare_frame_store(_manifest(tmp_path), DATA, root).reused == 4


def test_data_prepare_command_writes_manifest_and_store(tmp_path, ray_local, capsys):
    from a2o.cli import main

    lines = ["path,label,split"]
    for i in range(6):
        write_video(tmp_path / "ds" / f"c{i}.mp4", num_frames=6)
        lines.append(f"c{i}.mp4,{'ab'[i % 2]},{'test' if i == 5 else 'train'}")
    (tmp_path / "ds" / "manifest.csv").write_text("\n".join(lines) + "\n")
    storage = tmp_path / "run"
    args = ["data", "prepare", "--config", "", "--set", "data.dataset=csv", "--set", f"data.root={tmp_path / 'ds'}",
            "--set", "data.num_frames=3", "--set", "data.resolution=8", "--set", f"storage.root={storage}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "6 total, 6 decoded, 0 reused, 0 skipped" in out
    assert (storage / "manifest.parquet").exists()
    store = FrameStore(str(storage / "frames" / "t3_r8"))
    assert sorted(store.video_ids()) == [f"c{i}" for i in range(6)]
    assert set(store.manifest().column("split").to_pylist()) == {"train", "val", "test"}
    assert main(args) == 0
    assert "0 decoded, 6 reused" in capsys.readouterr().out


def test_multisports_tubes_decode_inside_their_span(tmp_path):
    data = DataConfig(dataset="multisports", root=str(tmp_path / "ms"), num_frames=3, resolution=16)
    write_multisports(tmp_path / "ms")
    manifest = load_manifest(data)
    summary = prepare_frame_store(manifest, data, str(tmp_path / "frames"), use_ray=False)
    assert (summary.decoded, summary.skipped) == (10, 0)
    store = FrameStore(str(tmp_path / "frames"))
    for row in store.manifest().to_pylist():
        record = store.read(row["video_id"])
        assert record.frames.shape == (3, 16, 16, 3)
        assert row["start_frame"] <= record.frame_indices.min() <= record.frame_indices.max() <= row["end_frame"]
        grey = record.frames[:, :, -4:].reshape(3, -1).mean(axis=1)
        np.testing.assert_allclose(grey, [level(i) for i in record.frame_indices], atol=8)
    labels = dict(zip(store.manifest().column("label").to_pylist(), store.manifest().column("label_id").to_pylist(),
                      strict=True))
    assert labels == {"basketball dribble": 0, "football pass": 1, "football shoot": 2}
