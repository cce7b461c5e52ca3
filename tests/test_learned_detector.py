"""The learned detector: training from a world's masks, text -> channel lexicon, the trained folder
(atomic, content fingerprint, clear errors), reuse by ensure_learned_detector, and the map cache.

Everything runs on the A2O-Synth "tiny" world (24 clips, 8 frames, 32 px) with a few epochs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from a2o.config import config_from_dict, learned_detector_key, resolve_paths
from a2o.errors import ConfigError, DetectorModelError

LEARNED = {"learned_epochs": 15, "learned_min_steps": 0, "learned_batch_size": 16, "learned_lr": 0.02}  # ~6 s, 1 core


def make_cfg(root, **detect):
    return resolve_paths(config_from_dict({
        "data": {"dataset": "synthetic", "root": str(root / "synth"), "synth_preset": "tiny",
                 "num_frames": 8, "resolution": 32},
        "detect": {"detector": "learned", **LEARNED, **detect},
        "storage": {"root": str(root / "run")},
    }))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On two shared cores, two intra-op threads that contend train ~4x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world, its frame store, and a learned detector trained by ensure_learned_detector."""
    from a2o.data.framestore import FrameStore, grid_key, prepare_frame_store
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import generate_synth
    from a2o.detect.learned_train import ensure_learned_detector

    root = tmp_path_factory.mktemp("learned")
    generate_synth(str(root / "synth"), "tiny", seed=0)
    cfg = make_cfg(root)
    frames_uri = cfg.storage.path("frames", grid_key(cfg.data))
    assert prepare_frame_store(load_manifest(cfg.data), cfg.data, frames_uri, use_ray=False).skipped == 0
    model_dir = ensure_learned_detector(cfg)
    assert model_dir == cfg.detect.learned_model
    return dataclasses.make_dataclass("World", ["root", "cfg", "store", "model_dir"])(
        root, cfg, FrameStore(frames_uri), model_dir
    )


@pytest.fixture(scope="module")
def detector(world):
    from a2o.detect.learned import LearnedDetector

    return LearnedDetector(world.model_dir)


def video_meta(store, video_id):
    from a2o.detect.base import VideoMeta

    record = store.read(video_id)
    return record.frames, VideoMeta(video_id, record.frame_indices, record.source_height, record.source_width)


def val_ids(store):
    rows = store.manifest().select(["video_id", "split"]).to_pylist()
    return sorted(r["video_id"] for r in rows if r["split"] == "val")


def copy_with_meta(model_dir, dest, **changes):
    shutil.copytree(model_dir, dest)
    path = os.path.join(dest, "detector.json")
    with open(path, encoding="utf-8") as fh:
        meta = json.load(fh)
    meta.update(changes)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    return str(dest)


# ---------------------------------------------------------------------------------------------
# lexicon (no training)


def test_world_channels_reads_the_spec_and_falls_back_to_the_vocabulary():
    from a2o.detect.learned import Lexicon, world_channels

    spec = {"channels": ["hand", "cup", "spoon", "floor"],
            "lexicon": {"Mug": [["cup", 1.0]], "utensil": [["cup", 0.5], ["spoon", 0.5]]}}
    channels, lexicon = world_channels(spec)
    assert channels == ["hand", "cup", "spoon", "floor"]
    assert lexicon["mug"] == [["cup", 1.0]] and lexicon["floor"] == [["floor", 1.0]]
    lex = Lexicon.build(channels, lexicon)
    assert lex.lookup("  MUG ") == ((1, 1.0),)
    assert lex.lookup("cups") == lex.lookup("cup") == ((1, 1.0),)  # plural "s"
    assert lex.lookup("utensils") == ((1, 0.5), (2, 0.5))
    assert lex.lookup("giraffe") == ()

    old = {"vocabulary": {"agents": ["hand", "person"], "manipulated": ["ball", "box"],
                          "distractors": ["lamp"], "regions": ["floor"]}}
    channels, lexicon = world_channels(old)
    assert channels == ["hand", "person", "ball", "box", "lamp", "floor"]
    assert lexicon == {c: [[c, 1.0]] for c in channels}
    assert Lexicon.build(channels, lexicon).lookup("boxes") == ((3, 1.0),)  # plural "es"

    with pytest.raises(DetectorModelError, match="not one of"):
        world_channels({"channels": ["cup"], "lexicon": {"mug": [["kettle", 1.0]]}})
    with pytest.raises(DetectorModelError, match=r"weights in \(0, 1\]"):
        world_channels({"channels": ["cup"], "lexicon": {"mug": [["cup", 2.0]]}})


def test_config_fills_the_model_folder_from_the_training_inputs(tmp_path):
    cfg = make_cfg(tmp_path)
    assert cfg.detect.learned_model == f"{tmp_path}/run/detectors/{learned_detector_key(cfg)}"
    assert make_cfg(tmp_path).detect.learned_model == cfg.detect.learned_model
    assert make_cfg(tmp_path, learned_seed=1).detect.learned_model != cfg.detect.learned_model
    assert make_cfg(tmp_path, learned_epochs=9).detect.learned_model != cfg.detect.learned_model
    assert make_cfg(tmp_path, learned_model="mine").detect.learned_model == os.path.abspath("mine")
    annotation = resolve_paths(config_from_dict({"storage": {"root": str(tmp_path)}}))
    assert annotation.detect.learned_model == ""  # only set for the learned detector
    with pytest.raises(ConfigError, match="detect.learned_epochs"):
        config_from_dict({"detect": {"learned_epochs": 0}})
    with pytest.raises(ConfigError, match="detect.learned_lr"):
        config_from_dict({"detect": {"learned_lr": -1}})


def test_small_worlds_train_for_at_least_min_steps():
    from a2o.detect.learned_train import LearnedTrainSettings, epochs_to_run

    settings = LearnedTrainSettings(epochs=5, batch_size=32, min_steps=300)
    assert epochs_to_run(2688, settings) == 5  # 84 steps an epoch: 420 >= 300
    assert epochs_to_run(128, settings) == 75  # 4 steps an epoch
    assert epochs_to_run(128, dataclasses.replace(settings, min_steps=0)) == 5


# ---------------------------------------------------------------------------------------------
# training and detection


def test_training_is_seeded_and_deterministic(world, tmp_path):
    from a2o.data.synthetic import load_dataset_info
    from a2o.detect.learned import LearnedDetector
    from a2o.detect.learned_train import LearnedTrainSettings, train_learned_detector

    info = load_dataset_info(world.cfg.data.root)
    settings = dataclasses.replace(LearnedTrainSettings.from_config(world.cfg.detect), epochs=2)
    first = train_learned_detector(world.store, info, str(tmp_path / "a"), settings)
    second = train_learned_detector(world.store, info, str(tmp_path / "b"), settings)
    other_seed = train_learned_detector(world.store, info, str(tmp_path / "c"), dataclasses.replace(settings, seed=1))
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["val_iou"] == second["val_iou"]
    assert other_seed["weights_sha256"] != first["weights_sha256"]
    frames, meta = video_meta(world.store, val_ids(world.store)[0])
    classes = ["hand", "ball", "floor"]
    maps_a = LearnedDetector(str(tmp_path / "a")).detect(frames, classes, video=meta)
    np.testing.assert_array_equal(maps_a, LearnedDetector(str(tmp_path / "b")).detect(frames, classes, video=meta))
    assert not np.array_equal(maps_a, LearnedDetector(str(tmp_path / "c")).detect(frames, classes, video=meta))


def test_metadata_records_training(world):
    from a2o.detect.learned import read_detector_metadata

    meta = read_detector_metadata(world.model_dir)
    assert meta["channels"][0] == "hand" and "floor" in meta["channels"]
    assert set(meta["val_iou"]) == set(meta["channels"])
    assert meta["seed"] == 0 and meta["training"]["epochs"] == LEARNED["learned_epochs"]
    assert meta["train_resolution"] == 32 and meta["data"]["train_clips"] == 16
    assert len(meta["epochs_log"]) == LEARNED["learned_epochs"] and meta["training_seconds"] > 0
    assert meta["epochs_log"][-1]["loss"] < meta["epochs_log"][0]["loss"]


def test_maps_shape_range_and_other_frame_sizes(world, detector):
    frames, meta = video_meta(world.store, val_ids(world.store)[0])
    maps = detector.detect(frames, ["hand", "ball", "grass"], video=meta)
    assert maps.shape == (8, 3, 32, 32) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    bigger = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)  # (T, 64, 64, 3)
    big_maps = detector.detect(bigger, ["hand", "ball", "grass"], video=meta)
    assert big_maps.shape == (8, 3, 64, 64) and big_maps.min() >= 0.0 and big_maps.max() <= 1.0
    # resized to the training size and back: close to the maps of the original frames
    assert np.abs(big_maps[:, :, ::2, ::2] - maps).mean() < 0.05


def test_maps_come_from_pixels(world, detector):
    from a2o.detect.learned import read_detector_metadata

    frames, meta = video_meta(world.store, val_ids(world.store)[0])
    maps = detector.detect(frames, ["hand"], video=meta)
    flat = np.broadcast_to(frames.reshape(-1, 3).mean(0).astype(np.uint8), frames.shape).copy()
    assert np.abs(maps - detector.detect(flat, ["hand"], video=meta)).max() > 0.2
    # after a few seconds of training on 16 clips, the hand is found on the val split
    assert read_detector_metadata(world.model_dir)["val_iou"]["hand"] > 0.3


def test_unknown_synonym_plural_and_hypernym(world, detector):
    frames, meta = video_meta(world.store, val_ids(world.store)[0])
    maps = detector.detect(frames, ["giraffe", "cup", "mug", "cups", "Ball", "toy", "box"], video=meta)
    giraffe, cup, mug, cups, ball, toy, box = (maps[:, i] for i in range(7))
    assert not giraffe.any()  # an unknown word: all zeros
    np.testing.assert_array_equal(mug, cup)  # synonym (tiny.yaml: cup has synonym "mug")
    np.testing.assert_array_equal(cups, cup)  # plural
    np.testing.assert_allclose(toy, 0.5 * np.maximum(ball, box), atol=1e-6)  # hypernym "toy": [ball, box]
    members = np.maximum(ball, box)
    assert (toy <= members + 1e-6).all()
    assert ball.max() > 0.5 and toy.max() <= 0.5  # weaker: never as sure as a member itself


def test_hand_written_lexicon_weights_its_channel(world, detector, tmp_path):
    from a2o.detect.base import detector_fingerprint
    from a2o.detect.learned import LearnedDetector

    copy = copy_with_meta(world.model_dir, tmp_path / "d", lexicon={"utensil": [["cup", 0.25]]})
    custom = LearnedDetector(copy)
    frames, meta = video_meta(world.store, val_ids(world.store)[0])
    cup = detector.detect(frames, ["cup"], video=meta)
    np.testing.assert_allclose(custom.detect(frames, ["utensil"], video=meta), 0.25 * cup, atol=1e-6)
    assert not detector.detect(frames, ["utensil"], video=meta).any()  # unknown to the world's lexicon
    assert custom.fingerprint != detector.fingerprint
    assert custom.fingerprint == detector_fingerprint(dataclasses.replace(world.cfg.detect, learned_model=copy))


# ---------------------------------------------------------------------------------------------
# the folder: reuse, fingerprint, errors


def test_ensure_reuses_the_trained_folder(world, monkeypatch, caplog):
    from a2o.detect import learned_train

    def must_not_train(*args, **kwargs):
        raise AssertionError("retrained a detector that was already there")

    monkeypatch.setattr(learned_train, "train_learned_detector", must_not_train)
    marker = os.path.join(world.model_dir, "detector.json")
    before = os.stat(marker).st_mtime_ns
    with caplog.at_level(logging.INFO, logger="a2o.detect.learned"):
        assert learned_train.ensure_learned_detector(world.cfg) == world.model_dir
    assert os.stat(marker).st_mtime_ns == before
    assert "reusing learned detector at" in caplog.text


def test_fingerprint_is_content_based_and_path_independent(world, detector, tmp_path):
    from a2o.detect.base import ConfigDetectorFactory, detector_fingerprint

    fingerprint = detector_fingerprint(world.cfg.detect)
    assert fingerprint == detector.fingerprint
    assert world.model_dir not in fingerprint
    copy = shutil.copytree(world.model_dir, tmp_path / "best" / "detector")
    moved = dataclasses.replace(world.cfg.detect, learned_model=str(copy))
    assert detector_fingerprint(moved) == fingerprint
    assert ConfigDetectorFactory(moved)(None).fingerprint == fingerprint  # builds and agrees
    for change in ({"seed": 1}, {"spec_sha256": "0" * 64},
                   {"training": {**detector.metadata["training"], "lr": 0.5}}):
        other = copy_with_meta(world.model_dir, tmp_path / f"x{len(os.listdir(tmp_path))}", **change)
        assert detector_fingerprint(dataclasses.replace(world.cfg.detect, learned_model=other)) != fingerprint


def test_untrained_folder_says_how_to_train(world, tmp_path):
    from a2o.detect.base import detector_fingerprint

    absent = dataclasses.replace(world.cfg.detect, learned_model=str(tmp_path / "nothing"))
    with pytest.raises(DetectorModelError, match="a2o data prepare --config"):
        detector_fingerprint(absent)
    with pytest.raises(DetectorModelError, match="resolve_paths"):
        detector_fingerprint(dataclasses.replace(world.cfg.detect, learned_model=""))


@pytest.mark.parametrize("damage", ["bad_json", "no_marker", "weights", "wrong_version"])
def test_corrupt_folder_gives_a_clear_error(world, tmp_path, damage):
    from a2o.detect.learned import LearnedDetector
    from a2o.detect.learned_train import ensure_learned_detector

    copy = str(shutil.copytree(world.model_dir, tmp_path / "d"))
    marker = os.path.join(copy, "detector.json")
    if damage == "bad_json":
        with open(marker, "w") as fh:
            fh.write('{"format": "a2o-learned')
    elif damage == "no_marker":
        os.remove(marker)
    elif damage == "weights":
        with open(os.path.join(copy, "model.safetensors"), "r+b") as fh:
            fh.seek(-4, os.SEEK_END)
            fh.write(b"\0\1\2\3")
    else:
        copy_with_meta(world.model_dir, tmp_path / "v", format_version=99)
        copy = str(tmp_path / "v")
    with pytest.raises(DetectorModelError) as info:
        LearnedDetector(copy)
    assert copy in str(info.value) and "delete that folder and rerun `a2o data prepare" in str(info.value)
    cfg = dataclasses.replace(world.cfg, detect=dataclasses.replace(world.cfg.detect, learned_model=copy))
    with pytest.raises(DetectorModelError, match="delete that folder"):
        ensure_learned_detector(cfg)  # never retrains over, nor silently uses, a damaged folder


def test_ensure_is_a_no_op_for_other_detectors_and_needs_a_synthetic_world(world):
    from a2o.detect.learned_train import ensure_learned_detector

    annotation = dataclasses.replace(world.cfg.detect, detector="annotation")
    assert ensure_learned_detector(dataclasses.replace(world.cfg, detect=annotation)) is None
    csv = dataclasses.replace(world.cfg, data=dataclasses.replace(world.cfg.data, dataset="csv"))
    with pytest.raises(ConfigError, match="detect.detector"):
        ensure_learned_detector(csv)


def test_a_waiter_that_judged_a_lock_dead_late_does_not_break_the_new_holders_lock(tmp_path):
    """The race CI caught: A and B both see a dead holder; A breaks it and takes the lock; B must
    re-judge under the break lock and leave A's lock alone."""
    from a2o.detect import learned_train

    lock = str(tmp_path / "model.lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(lock, "w") as fh:
        json.dump({"pid": dead.pid, "host": os.uname().nodename, "time": 0}, fh)
    assert learned_train._lock_abandoned(lock)  # both A and B judge it so
    assert learned_train._break_abandoned_lock(lock)  # A breaks it ...
    with open(lock, "w") as fh:  # ... and takes it
        json.dump({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}, fh)
    assert not learned_train._break_abandoned_lock(lock)  # B, late, re-judges and backs off
    with open(lock, encoding="utf-8") as fh:
        assert json.load(fh)["pid"] == os.getpid()
    assert not os.path.exists(lock + ".break")


def test_two_processes_never_train_one_folder_at_once(world, monkeypatch):
    """Two concurrent ensures (threads share nothing but the lock file) train once; a lock left by
    a dead process is broken at once."""
    from a2o.detect import learned_train

    cfg = make_cfg(world.root, learned_seed=7, learned_epochs=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(cfg.detect.learned_model + ".lock", "w") as fh:
        json.dump({"pid": dead.pid, "host": os.uname().nodename, "time": 0}, fh)
    calls = []
    real = learned_train.train_learned_detector

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(learned_train, "train_learned_detector", counted)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(learned_train.ensure_learned_detector(cfg)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == [cfg.detect.learned_model] * 2
    assert len(calls) == 1
    assert not os.path.exists(cfg.detect.learned_model + ".lock")


# ---------------------------------------------------------------------------------------------
# the map cache


def test_map_cache_computes_each_pair_once(world, detector, tmp_path):
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import MapCache

    factory = ConfigDetectorFactory(world.cfg.detect)
    cache = MapCache(str(tmp_path / "maps"), factory.fingerprint, 32)
    videos = world.store.video_ids()
    classes = ["hand", "mug", "giraffe"]
    reader = cache.ensure_maps(classes, world.store, factory)
    assert reader.stats.computed_pairs == len(videos) * 3 and reader.stats.reused_pairs == 0
    again = cache.ensure_maps(classes, world.store, factory)
    assert again.stats.computed_pairs == 0 and again.stats.reused_pairs == len(videos) * 3
    frames, meta = video_meta(world.store, videos[0])
    expected = np.rint(detector.detect(frames, classes, video=meta) * 255).astype(np.uint8)
    np.testing.assert_array_equal(again.read(videos[0]), expected)
