"""Dataset readers in their real annotation layouts, splits, few-shot sampling, label-map errors."""

from __future__ import annotations

import json
import sys
import types
import uuid

import fsspec
import pyarrow as pa
import pytest
from fixtures_video import write_multisports, write_video

from a2o.config import DataConfig
from a2o.data.manifest import load_manifest as _load
from a2o.data.manifest import (
    read_csv_manifest,
    read_k400,
    read_manifest,
    read_multisports,
    read_ssv2,
    write_manifest,
)
from a2o.data.schema import MANIFEST_SCHEMA, make_manifest
from a2o.errors import ManifestError

SSV2_LABELS = {"Putting something on something": "0", "Pushing something from left to right": "1",
               "Holding something": "2"}
SSV2_TEMPLATES = ["Putting [something] on [something]", "Pushing [something] from left to right", "Holding [something]"]


def load_manifest(**kwargs):
    return _load(DataConfig(**kwargs))


def _by_split(table: pa.Table) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for row in table.to_pylist():
        out[row["split"]].append(row)
    return out


def write_ssv2(root, per_class=6, val_per_class=2, videos=False, bad_template=None):
    """labels/{labels,train,validation}.json and 20bn-something-something-v2/<id>.webm."""
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "labels.json").write_text(json.dumps(SSV2_LABELS))
    next_id = 1000
    for name, count in (("train.json", per_class), ("validation.json", val_per_class)):
        entries = []
        for _ in range(count):
            for template in SSV2_TEMPLATES:
                entries.append({"id": str(next_id), "label": template.replace("[something]", "a cup"),
                                "template": template, "placeholders": ["a cup"]})
                next_id += 1
        if bad_template and name == "train.json":
            entries.insert(1, {"id": "9", "label": "x", "template": bad_template, "placeholders": []})
        (root / "labels" / name).write_text(json.dumps(entries))
    if videos:
        write_video(root / "20bn-something-something-v2" / "1000.webm", num_frames=6)
    return root


def test_ssv2_ids_from_labels_json_and_validation_is_test(tmp_path):
    table = read_ssv2(str(write_ssv2(tmp_path, videos=True)))
    assert table.schema.equals(MANIFEST_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) == 3 * 6 + 3 * 2
    first = rows[0]
    assert first["video_id"] == "1000" and first["label"] == "Putting something on something"
    assert first["label_id"] == 0 and first["uri"] == f"{tmp_path}/20bn-something-something-v2/1000.webm"
    assert {r["label"]: r["label_id"] for r in rows} == {k: int(v) for k, v in SSV2_LABELS.items()}
    assert sorted({r["split"] for r in rows}) == ["test", "train"]


def test_ssv2_unknown_template_names_file_row_and_label(tmp_path):
    write_ssv2(tmp_path, bad_template="Spinning [something] around")
    with pytest.raises(ManifestError, match=r"train\.json row 1: label 'Spinning something around'"):
        read_ssv2(str(tmp_path))


def test_load_manifest_ssv2_carves_stratified_val_and_keeps_test(tmp_path):
    write_ssv2(tmp_path, per_class=10)
    table = load_manifest(dataset="ssv2", root=str(tmp_path), val_fraction=0.2, seed=3)
    splits = _by_split(table)
    assert len(splits["test"]) == 6  # the official validation set, untouched
    for label in SSV2_LABELS:
        assert sum(r["label"] == label for r in splits["val"]) == 2  # 20 % of 10, per class
        assert sum(r["label"] == label for r in splits["train"]) == 8
    again = load_manifest(dataset="ssv2", root=str(tmp_path), val_fraction=0.2, seed=3)
    assert again.equals(table)
    other = load_manifest(dataset="ssv2", root=str(tmp_path), val_fraction=0.2, seed=4)
    assert {r["video_id"] for r in _by_split(other)["val"]} != {r["video_id"] for r in splits["val"]}


def test_few_shot_and_max_videos_are_seeded(tmp_path):
    write_ssv2(tmp_path, per_class=10)
    table = load_manifest(dataset="ssv2", root=str(tmp_path), few_shot_k=3, seed=1)
    splits = _by_split(table)
    for label in SSV2_LABELS:
        assert sum(r["label"] == label for r in splits["train"]) == 3
    assert len(splits["val"]) == 3 and len(splits["test"]) == 6  # val/test not sampled
    assert load_manifest(dataset="ssv2", root=str(tmp_path), few_shot_k=3, seed=1).equals(table)
    capped = _by_split(load_manifest(dataset="ssv2", root=str(tmp_path), max_videos=4, seed=1))
    assert [len(capped[s]) for s in ("train", "val", "test")] == [4, 3, 4]
    assert len({r["label"] for r in capped["train"]}) == 3  # round-robin keeps every class


def test_val_carve_leaves_one_train_clip_per_class(tmp_path):
    rows = [{"path": f"v{i}.mp4", "label": label} for i, label in enumerate(["a", "b", "b", "c", "c", "c"])]
    (tmp_path / "manifest.csv").write_text("path,label\n" + "".join(f"{r['path']},{r['label']}\n" for r in rows))
    splits = _by_split(load_manifest(dataset="csv", root=str(tmp_path), val_fraction=0.9))
    train_labels = [r["label"] for r in splits["train"]]
    assert sorted(set(train_labels)) == ["a", "b", "c"]
    assert sorted(r["label"] for r in splits["val"]) == ["b", "c", "c"]


def test_multisports_one_row_per_tube_with_boxes_and_zero_based_span(tmp_path):
    table = read_multisports(str(write_multisports(tmp_path)))
    rows = table.to_pylist()
    assert len(rows) == 5 * 2  # two tubes per video
    first = rows[0]
    assert first["video_id"] == "basketball_v_a1_a0_t0" and first["label"] == "basketball dribble"
    assert first["label_id"] == 0 and first["split"] == "train"
    assert first["uri"] == f"{tmp_path}/trainval/basketball/v_a1.mp4"
    assert (first["start_frame"], first["end_frame"]) == (0, 4)  # frames 1..5 in the pickle
    boxes = json.loads(first["boxes"])
    assert boxes["width"] == 32 and boxes["height"] == 24
    assert boxes["tubes"]["basketball dribble"][0] == [0, 2, 3, 20, 22]
    assert (rows[1]["start_frame"], rows[1]["end_frame"]) == (6, 10)
    assert [r["split"] for r in rows].count("test") == 2
    assert {r["label"]: r["label_id"] for r in rows} == {"basketball dribble": 0, "football pass": 1,
                                                        "football shoot": 2}


def test_multisports_val_carve_keeps_tubes_of_a_video_together(tmp_path):
    write_multisports(tmp_path)
    table = load_manifest(dataset="multisports", root=str(tmp_path), val_fraction=0.5)
    splits = _by_split(table)
    train_uris, val_uris = {r["uri"] for r in splits["train"]}, {r["uri"] for r in splits["val"]}
    assert val_uris and not (train_uris & val_uris)
    assert all(r["uri"].endswith("v_t1.mp4") for r in splits["test"])


def test_multisports_label_index_outside_labels_fails(tmp_path):
    write_multisports(tmp_path, bad_label=True)
    with pytest.raises(ManifestError, match=r"v_a2.*label '7' is not in the label map"):
        read_multisports(str(tmp_path))


K400_ROWS = [("abseiling", "aaa", 10, 20, "train"), ("abseiling", "bbb", 0, 10, "train"),
             ("archery", "ccc", 5, 15, "train"), ("archery", "ddd", 1, 11, "train"),
             ("archery", "eee", 3, 13, "val"), ("abseiling", "fff", 7, 17, "test")]


def _k400_csv(rows) -> str:
    return "label,youtube_id,time_start,time_end,split\n" + "".join(f"{','.join(map(str, r))}\n" for r in rows)


@pytest.mark.parametrize("layout", ["split_dirs", "flat"])
def test_k400_finds_files_in_split_dirs_or_flat(tmp_path, layout):
    for split in ("train", "validate", "test"):
        rows = [r for r in K400_ROWS if {"validate": "val"}.get(split, split) == r[4]]
        (tmp_path / f"{split}.csv").write_text(_k400_csv(rows))
    for _, yid, start, end, split in K400_ROWS:
        folder = {"split_dirs": f"videos/{split}", "flat": "videos"}[layout]
        write_video(tmp_path / folder / f"{yid}_{start:06d}_{end:06d}.mp4", num_frames=2)
    table = read_k400(str(tmp_path))
    rows = {r["video_id"]: r for r in table.to_pylist()}
    assert set(rows) == {f"{y}_{s:06d}_{e:06d}" for _, y, s, e, _ in K400_ROWS}
    aaa = rows["aaa_000010_000020"]
    prefix = "videos/train" if layout == "split_dirs" else "videos"
    assert aaa["uri"] == f"{tmp_path}/{prefix}/aaa_000010_000020.mp4"
    assert aaa["start_sec"] is None  # a trimmed file: the whole file is the clip
    assert {r["label"]: r["label_id"] for r in rows.values()} == {"abseiling": 0, "archery": 1}
    assert sorted(r["split"] for r in rows.values()) == ["test", "train", "train", "train", "train", "val"]
    splits = _by_split(load_manifest(dataset="k400", root=str(tmp_path)))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]  # its own val: no carve


def test_k400_untrimmed_video_keeps_the_span_and_unknown_label_fails(tmp_path):
    (tmp_path / "k.csv").write_text(_k400_csv(K400_ROWS[:4]))
    write_video(tmp_path / "videos" / "aaa.mp4", num_frames=2)
    rows = {r["video_id"]: r for r in read_k400(str(tmp_path), annotations="k.csv").to_pylist()}
    assert rows["aaa_000010_000020"]["uri"].endswith("videos/aaa.mp4")
    assert (rows["aaa_000010_000020"]["start_sec"], rows["aaa_000010_000020"]["end_sec"]) == (10.0, 20.0)
    assert rows["bbb_000000_000010"]["uri"] == f"{tmp_path}/videos/bbb_000000_000010.mp4"  # missing file
    (tmp_path / "k.csv").write_text(_k400_csv(K400_ROWS[:4] + [("juggling", "zzz", 0, 10, "val")]))
    with pytest.raises(ManifestError, match=r"k\.csv row 4: label 'juggling'"):
        read_k400(str(tmp_path), annotations="k.csv")


def test_plain_csv_local_and_memory(tmp_path):
    text = "path,label,split\na/x.mp4,run,train\nb.mp4,jump,train\nc.mp4,run,test\nmemory://ext/d.mp4,jump,val\n"
    (tmp_path / "manifest.csv").write_text(text)
    local = read_csv_manifest(str(tmp_path))
    root = f"memory://csv-{uuid.uuid4().hex[:8]}"
    with fsspec.open(f"{root}/lists/clips.csv", "w") as fh:
        fh.write(text)
    remote = read_csv_manifest(root, annotations="lists/clips.csv", video_dir="vids")
    for table, base in ((local, str(tmp_path)), (remote, f"{root}/vids")):
        rows = table.to_pylist()
        assert [r["video_id"] for r in rows] == ["a_x", "b", "c", "ext_d"]
        assert rows[0]["uri"] == f"{base}/a/x.mp4" and rows[3]["uri"] == "memory://ext/d.mp4"
        assert [r["label_id"] for r in rows] == [1, 0, 1, 0]  # sorted: jump=0, run=1
        assert [r["split"] for r in rows] == ["train", "train", "test", "val"]
    (tmp_path / "manifest.csv").write_text(text + "e.mp4,swim,test\n")
    with pytest.raises(ManifestError, match=r"manifest\.csv row 4: label 'swim'"):
        read_csv_manifest(str(tmp_path))


def test_ssv2_from_memory_filesystem(tmp_path):
    write_ssv2(tmp_path / "src", per_class=2, val_per_class=1)
    root = f"memory://ssv2-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for name in ("labels.json", "train.json", "validation.json"):
        fs.pipe(f"{root.split('://')[1]}/labels/{name}", (tmp_path / "src" / "labels" / name).read_bytes())
    table = load_manifest(dataset="ssv2", root=root)
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table.num_rows == 9 and table.column("uri")[0].as_py().startswith(f"{root}/")
    uri = write_manifest(table, f"{root}/run/manifest.parquet")
    assert read_manifest(uri).equals(table)


def test_synthetic_delegates_to_read_synth_manifest(tmp_path, monkeypatch):
    seen = []
    rows = [{"video_id": f"s{i}", "uri": f"/x/s{i}.mp4", "label": "lift" if i % 2 else "roll",
             "label_id": i % 2, "split": "train" if i < 8 else "test", "masks_uri": f"/x/s{i}.npz"}
            for i in range(10)]

    def fake_reader(root):
        seen.append(root)
        return make_manifest(rows)

    monkeypatch.setitem(sys.modules, "a2o.data.synthetic", types.SimpleNamespace(read_synth_manifest=fake_reader))
    splits = _by_split(load_manifest(dataset="synthetic", root=str(tmp_path), val_fraction=0.25))
    assert seen == [str(tmp_path)]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert {r["label"] for r in splits["val"]} == {"lift", "roll"}
