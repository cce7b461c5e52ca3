"""A2O-Synth: a seeded procedural video benchmark where the choice of object classes changes accuracy.

Why it exists: a search over object classes needs a dataset whose answer is known. In A2O-Synth
every clip shows a hand and the same four objects ("ball", "box", "cup", "bottle") in random places,
plus distractors ("chair", "lamp", "book", "plant"), sometimes a "person", over one background
region ("floor", "wall", "grass", "table"). An action class is defined only by how one particular
object moves relative to the hand (see :data:`a2o.data.synth.render.ACTIONS`), so the maps of the
right objects help and mere presence does not. A controllable *shortcut* ties each action to one
background region and one distractor in train only (probability ``shortcut``); val and test draw
them uniformly, so a model (or a class set) that leans on the background loses accuracy there.

Directory layout (docs/INTERFACES.md)::

    DIR/manifest.parquet    MANIFEST_SCHEMA; uri / masks_uri relative to DIR
    DIR/videos/<video_id>.mp4
    DIR/masks/<video_id>.npz  uint8 {0,1} (T, H, W) per object / region present in the clip
    DIR/scenes.parquet      video_id, split, label, background, distractors, has_person,
                            shortcut_applied, shortcut_background, shortcut_distractor
    DIR/dataset.json        parameters, action names, vocabulary, shortcut map (written last)

Example::

    root = generate_synth("/data/a2o-synth", preset="demo", seed=0, shortcut=0.8)
    manifest = read_synth_manifest(root)          # absolute uri / masks_uri
    shortcut_statistic(root)                      # {"train": ~0.85, "val": ~0.25, "test": ~0.25}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from a2o.data.schema import SPLITS, make_manifest
from a2o.data.synth.io import write_masks_npz, write_mp4
from a2o.data.synth.reader import (
    SCENES_SCHEMA,
    class_counts,
    fs_and_path,
    is_local,
    load_dataset_info,
    load_scenes,
    read_synth_manifest,
    shortcut_statistic,
)
from a2o.data.synth.render import (
    ACTIONS,
    AGENT,
    DISTRACTORS,
    MANIPULATED,
    PERSON,
    REGIONS,
    ScenePlan,
    render_clip,
)
from a2o.errors import ConfigError, DataError

__all__ = [
    "SynthParams",
    "PRESETS",
    "ACTIONS",
    "generate_synth",
    "read_synth_manifest",
    "load_scenes",
    "load_dataset_info",
    "shortcut_statistic",
    "expected_shortcut_rate",
    "class_counts",
]

logger = logging.getLogger(__name__)

FORMAT = "a2o-synth"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SynthParams:
    """Everything that determines an A2O-Synth dataset, byte for byte."""

    classes: tuple[str, ...] = field(default_factory=lambda: tuple(ACTIONS))
    """Action classes (names from ``ACTIONS``); label ids follow this order."""
    videos_per_class: int = 40
    """Clips per class over all splits together (split by ``split_fractions``)."""
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Shares of each class's clips in train / val / test; val and test get at least one each."""
    num_frames: int = 16
    """Frames per clip (T)."""
    resolution: tuple[int, int] = (64, 64)
    """Frame (height, width) in pixels; even, because yuv420p halves chroma."""
    fps: int = 8
    """Frame rate written into the mp4 (clip length is num_frames / fps seconds)."""
    shortcut: float = 0.8
    """Probability that a train clip uses its action's background and distractor; otherwise both are
    drawn uniformly (so the measured train rate is shortcut + (1 - shortcut) / 4). 0 = no shortcut."""
    num_distractors: int = 2
    """Distractor objects per clip, from ("chair", "lamp", "book", "plant")."""
    person_probability: float = 0.5
    """Chance that a (action-irrelevant) person stands in the scene."""
    contrast: float = 0.45
    """Object colour = background + contrast * (object colour - background): lower is harder from RGB."""
    crf: int = 12
    """x264 constant rate factor: low, so the faint object colours survive compression."""
    seed: int = 0
    """Seeds the splits, scenes, shortcut map and every clip."""

    def __post_init__(self) -> None:
        # JSON and keyword overrides bring lists: normalise so equality and hashing work.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        object.__setattr__(self, "resolution", tuple(int(r) for r in self.resolution))
        unknown = [c for c in self.classes if c not in ACTIONS]
        if unknown or not self.classes:
            raise ConfigError(f"synth.classes: {unknown or 'empty'} not valid; choose from {list(ACTIONS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError("synth.classes: names must be unique")
        if self.videos_per_class < 3:
            raise ConfigError("synth.videos_per_class: must be >= 3 (one clip per split at least)")
        fractions = self.split_fractions
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                "synth.split_fractions: need three positive shares (train, val, test) summing to 1"
            )
        if self.num_frames < 2:
            raise ConfigError("synth.num_frames: must be >= 2 (actions are motions)")
        if len(self.resolution) != 2 or min(self.resolution) < 16 or any(r % 2 for r in self.resolution):
            raise ConfigError("synth.resolution: need (height, width), both even and >= 16")
        if self.fps < 1:
            raise ConfigError("synth.fps: must be >= 1")
        if not 0.0 <= self.shortcut <= 1.0:
            raise ConfigError("synth.shortcut: must be in [0, 1] (0 = no shortcut)")
        if not 0 <= self.num_distractors <= len(DISTRACTORS):
            raise ConfigError(f"synth.num_distractors: must be in [0, {len(DISTRACTORS)}]")
        if not 0.0 <= self.person_probability <= 1.0:
            raise ConfigError("synth.person_probability: must be in [0, 1]")
        if not 0.05 <= self.contrast <= 1.0:
            raise ConfigError("synth.contrast: must be in [0.05, 1]")
        if not 0 <= self.crf <= 51:
            raise ConfigError("synth.crf: must be in [0, 51] (lower = better quality)")

    def split_counts(self) -> dict[str, int]:
        """Clips per class in each split."""
        n = self.videos_per_class
        n_val = max(1, round(n * self.split_fractions[1]))
        n_test = max(1, round(n * self.split_fractions[2]))
        n_train = max(1, n - n_val - n_test)
        return {"train": n_train, "val": n - n_train - n_test, "test": n_test}


PRESETS: dict[str, SynthParams] = {
    # about a second to generate (24 clips): for tests
    "tiny": SynthParams(
        classes=("pushing ball left", "pushing ball right", "lifting box", "dropping cup"),
        videos_per_class=6,
        num_frames=8,
        resolution=(32, 32),
    ),
    # The demo / benchmark dataset: 400 clips (240 train, 80 val, 80 test), ~10 s in one process.
    # Sized so that a tiny *randomly initialised* V-JEPA2 on 2 CPU cores shows the method's claim
    # (benchmarks/maps_matter.py): four actions whose moving object or direction differ (left /
    # right / up / down), rendered at the model's 32 px and 8 frames (no resize blurs the faint
    # objects), objects faint in RGB (contrast 0.2) while their masks stay crisp, and no background
    # shortcut (with one, a model with no useful motion features settles on the background and every
    # class set ties at chance). The full eight-action set stays available: PRESETS["demo"] with
    # classes=tuple(ACTIONS), or generate_synth(..., classes=...).
    "demo": SynthParams(
        classes=("pushing ball left", "pushing ball right", "lifting box", "dropping cup"),
        videos_per_class=100,
        num_frames=8,
        resolution=(32, 32),
        contrast=0.2,
        shortcut=0.0,
    ),
}


def expected_shortcut_rate(params: SynthParams) -> dict[str, float]:
    """The background-shortcut rate each split is built to have (what ``shortcut_statistic`` estimates)."""
    chance = 1.0 / len(REGIONS)
    train = params.shortcut + (1.0 - params.shortcut) * chance
    return {"train": train, "val": chance, "test": chance}


def _shortcut_map(params: SynthParams, rng: np.random.Generator) -> dict[str, dict[str, str | None]]:
    """A distinct (background, distractor) pair per action, seeded, so the shortcut is learnable."""
    pairs = [(b, d) for b in REGIONS for d in DISTRACTORS]
    order = rng.permutation(len(pairs))
    chosen = [pairs[i] for i in order[: len(params.classes)]]
    # with more actions than pairs the shortcut becomes ambiguous; ACTIONS is smaller than 16
    return {
        action: {"background": b, "distractor": d if params.num_distractors else None}
        for action, (b, d) in zip(params.classes, chosen, strict=True)
    }


def _plan_scenes(params: SynthParams, shortcut_map: dict, rng: np.random.Generator) -> list[dict]:
    """Assign every clip its split, action, background, distractors and render seed."""
    counts = params.split_counts()
    scenes: list[dict] = []
    for split in SPLITS:
        actions = [a for a in params.classes for _ in range(counts[split])]
        for position, index in enumerate(rng.permutation(len(actions))):
            action = actions[index]
            cue = shortcut_map[action]
            applied = split == "train" and bool(rng.random() < params.shortcut)
            if applied:
                background = cue["background"]
                rest = [d for d in DISTRACTORS if d != cue["distractor"]]
                extra = rng.choice(rest, size=max(params.num_distractors - 1, 0), replace=False)
                distractors = ([cue["distractor"]] if params.num_distractors else []) + list(extra)
            else:
                background = str(rng.choice(REGIONS))
                distractors = list(rng.choice(DISTRACTORS, size=params.num_distractors, replace=False))
            scenes.append(
                {
                    "video_id": f"{split}-{position:05d}",
                    "split": split,
                    "label": action,
                    "background": background,
                    "distractors": [str(d) for d in distractors],
                    "has_person": bool(rng.random() < params.person_probability),
                    "shortcut_applied": applied,
                    "shortcut_background": cue["background"],
                    "shortcut_distractor": cue["distractor"],
                    "seed": int(rng.integers(0, 2**63 - 1)),
                }
            )
    return scenes


def _boxes_json(masks: dict[str, np.ndarray], height: int, width: int) -> str:
    """Per-frame boxes of every object (not regions), in the manifest's ``boxes`` JSON format."""
    tubes: dict[str, list[list[int]]] = {}
    for name in sorted(masks):
        if name in REGIONS:
            continue
        rows = []
        for t, mask in enumerate(masks[name]):
            ys, xs = np.nonzero(mask)
            if len(ys):
                rows.append([t, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        if rows:
            tubes[name] = rows
    return json.dumps({"width": width, "height": height, "tubes": tubes}, sort_keys=True)


def _make_clip(root: str, scene: dict, params: SynthParams) -> str:
    """Render and write one clip and its masks; returns its boxes JSON. Runs in worker processes."""
    height, width = params.resolution
    plan = ScenePlan(
        video_id=scene["video_id"],
        action=scene["label"],
        background=scene["background"],
        distractors=tuple(scene["distractors"]),
        has_person=scene["has_person"],
        seed=scene["seed"],
    )
    clip = render_clip(plan, params.num_frames, height, width, params.contrast)
    write_mp4(
        os.path.join(root, "videos", f"{plan.video_id}.mp4"), clip.frames, fps=params.fps, crf=params.crf
    )
    write_masks_npz(os.path.join(root, "masks", f"{plan.video_id}.npz"), clip.masks)
    return _boxes_json(clip.masks, height, width)


def _params_json(params: SynthParams) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(params)))


def _generate_local(root: str, params: SynthParams, num_workers: int) -> None:
    """Write the whole dataset under the local folder ``root``; dataset.json goes last (the marker)."""
    started = time.monotonic()
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    rng = np.random.default_rng(params.seed)
    shortcut_map = _shortcut_map(params, rng)
    scenes = _plan_scenes(params, shortcut_map, rng)
    total = len(scenes)
    logger.info(
        "A2O-Synth: rendering %d clips (%d classes) into %s with %d worker(s)",
        total,
        len(params.classes),
        root,
        num_workers,
    )
    boxes: list[str] = []
    step = max(total // 10, 1) if total > 50 else total + 1  # progress lines for big sets only
    if num_workers > 1:
        # spawn, not fork: callers may be Ray workers or other threaded processes, where fork can hang
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            futures = [pool.submit(_make_clip, root, scene, params) for scene in scenes]
            for done, future in enumerate(futures, start=1):  # in submission order: deterministic rows
                boxes.append(future.result())
                if done % step == 0 or done == total:
                    logger.info("A2O-Synth: %d/%d clips written", done, total)
    else:
        for done, scene in enumerate(scenes, start=1):
            boxes.append(_make_clip(root, scene, params))
            if done % step == 0 or done == total:
                logger.info("A2O-Synth: %d/%d clips written", done, total)

    label_ids = {action: i for i, action in enumerate(params.classes)}
    rows = [
        {
            "video_id": scene["video_id"],
            "uri": f"videos/{scene['video_id']}.mp4",
            "label": scene["label"],
            "label_id": label_ids[scene["label"]],
            "split": scene["split"],
            "boxes": box_json,
            "masks_uri": f"masks/{scene['video_id']}.npz",
        }
        for scene, box_json in zip(scenes, boxes, strict=True)
    ]
    _write_parquet(make_manifest(rows), os.path.join(root, "manifest.parquet"))
    scene_columns = {f.name: [scene[f.name] for scene in scenes] for f in SCENES_SCHEMA}
    _write_parquet(
        pa.Table.from_pydict(scene_columns, schema=SCENES_SCHEMA), os.path.join(root, "scenes.parquet")
    )
    info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "params": _params_json(params),
        "actions": list(params.classes),
        "label_ids": label_ids,
        "action_objects": {a: ACTIONS[a].target for a in params.classes},
        "vocabulary": {
            "agents": [AGENT, PERSON],
            "manipulated": list(MANIPULATED),
            "distractors": list(DISTRACTORS),
            "regions": list(REGIONS),
        },
        "shortcut_map": shortcut_map,
        "expected_shortcut_rate": expected_shortcut_rate(params),
        "split_counts": {split: n * len(params.classes) for split, n in params.split_counts().items()},
    }
    _write_text(os.path.join(root, "dataset.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
    logger.info("A2O-Synth: %d clips written to %s in %.1f s", total, root, time.monotonic() - started)


def _write_parquet(table: pa.Table, path: str) -> None:
    pq.write_table(table, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def _write_text(path: str, text: str) -> None:
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(f"{path}.tmp", path)


def _resolve_params(preset: str | SynthParams, seed: int, overrides: dict) -> SynthParams:
    if isinstance(preset, SynthParams):
        return dataclasses.replace(preset, seed=seed, **overrides)
    if preset not in PRESETS:
        raise ConfigError(f"synth preset '{preset}' is unknown; choose one of {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(SynthParams)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"synth overrides {unknown} are not SynthParams fields; valid: {sorted(names)}")
    return dataclasses.replace(PRESETS[preset], seed=seed, **overrides)


def generate_synth(
    out_dir: str,
    preset: str | SynthParams = "demo",
    seed: int = 0,
    *,
    overwrite: bool = False,
    num_workers: int = 1,
    **overrides,
) -> str:
    """Generate A2O-Synth under ``out_dir`` (a local path or fsspec URI) and return ``out_dir``.

    ``preset`` names an entry of :data:`PRESETS` (or is a :class:`SynthParams`); ``overrides`` replace
    its fields (``videos_per_class=60``). Idempotent: when ``out_dir/dataset.json`` already holds the
    same parameters, nothing is written. A folder holding a *different* A2O-Synth dataset raises
    :class:`DataError` unless ``overwrite=True`` (which deletes only the files this generator writes).
    ``num_workers`` > 1 renders in that many *spawned* processes (about 2x faster on 2 cores; the demo
    takes ~10 s in one process). Spawned workers re-import the caller's ``__main__``, so only use it from
    a script with an ``if __name__ == "__main__":`` guard (not from stdin or a notebook); the default, 1,
    works anywhere. The output bytes do not depend on it. Remote URIs are generated in a local temp folder, then uploaded.
    """
    params = _resolve_params(preset, seed, overrides)
    fs, path = fs_and_path(out_dir)
    info_path = f"{path.rstrip('/')}/dataset.json"
    if fs.exists(info_path):
        with fs.open(info_path, "r", encoding="utf-8") as handle:
            existing = json.load(handle)
        if existing.get("version") == FORMAT_VERSION and existing.get("params") == _params_json(params):
            logger.info(
                "A2O-Synth: %s already holds this dataset (same parameters); not regenerating", out_dir
            )
            return out_dir
        if not overwrite:
            raise DataError(
                f"{out_dir} already holds an A2O-Synth dataset with other parameters "
                f"({existing.get('params')}); pick another output folder or pass overwrite=True"
            )
        for name in ("dataset.json", "manifest.parquet", "scenes.parquet", "videos", "masks"):
            target = f"{path.rstrip('/')}/{name}"
            if fs.exists(target):
                fs.rm(target, recursive=True)
    if is_local(fs):
        _generate_local(path, params, max(int(num_workers), 1))
        return out_dir
    with tempfile.TemporaryDirectory(prefix="a2o-synth-") as tmp:
        _generate_local(tmp, params, max(int(num_workers), 1))
        names = sorted(
            os.path.relpath(os.path.join(d, f), tmp) for d, _, files in os.walk(tmp) for f in files
        )
        names.remove("dataset.json")
        for name in [*names, "dataset.json"]:  # the completion marker last
            fs.makedirs(os.path.dirname(f"{path.rstrip('/')}/{name}"), exist_ok=True)
            fs.put_file(os.path.join(tmp, name), f"{path.rstrip('/')}/{name}")
    return out_dir


def ensure_synthetic(data_cfg) -> None:
    """Generate A2O-Synth at ``data.root`` when the config names it and it is not there yet.

    A no-op for other datasets, and for an existing dataset with the same parameters.
    """
    if data_cfg.dataset != "synthetic":
        return
    if not data_cfg.root:
        raise DataError("data.root: set the A2O-Synth directory (it is generated there if missing)")
    generate_synth(data_cfg.root, preset=data_cfg.synth_preset, seed=data_cfg.seed)
