"""A2O-Synth: seeded procedural video worlds where the choice of object classes changes accuracy.

Why it exists: a search over object classes needs a dataset whose answer is known, and a fair test
of an LLM searcher needs a world where only commonsense finds that answer. A world is a YAML spec
(:mod:`a2o.data.synth.spec`, format in docs/WORLDS.md): objects with shapes, colours and names,
scene regions, and actions named as people name them, each moving one object along a motion that
other actions share. Every clip shows the hand, the acting object and several other objects of the
world (among them the object of an action with the same motion), so the maps of the right objects
help and mere presence does not. A train-only *shortcut* ties each action to a scene region with
probability ``shortcut.probability``; val and test draw regions uniformly, so a model (or a class
set) that leans on the region loses accuracy there.

Directory layout (docs/INTERFACES.md)::

    DIR/manifest.parquet    MANIFEST_SCHEMA; uri / masks_uri relative to DIR
    DIR/videos/<video_id>.mp4
    DIR/masks/<video_id>.npz  uint8 {0,1} (T, H, W) per object / region present in the clip
    DIR/scenes.parquet      video_id, split, label, background, others, shortcut_applied,
                            shortcut_background
    DIR/dataset.json        the world spec, action names, detector channels and lexicon, shortcut
                            map (written last: the completion marker)

Example::

    root = generate_synth("/data/a2o-synth", "household", seed=0)   # or a spec file's path
    manifest = read_synth_manifest(root)          # absolute uri / masks_uri
    shortcut_statistic(root)                      # {"train": ~0.62, "val": ~0.25, "test": ~0.25}
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

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
from a2o.data.synth.render import ScenePlan, render_clip
from a2o.data.synth.spec import (
    WorldSpec,
    apply_world_overrides,
    load_world_spec,
    preset_names,
    world_lexicon,
    world_to_dict,
)
from a2o.errors import DataError
from a2o.progress import progress

__all__ = [
    "WorldSpec",
    "load_world_spec",
    "preset_names",
    "resolve_world",
    "generate_synth",
    "ensure_synthetic",
    "read_synth_manifest",
    "load_scenes",
    "load_dataset_info",
    "shortcut_statistic",
    "expected_shortcut_rate",
    "class_counts",
]

logger = logging.getLogger(__name__)

FORMAT = "a2o-synth"
FORMAT_VERSION = 2


def expected_shortcut_rate(spec: WorldSpec) -> dict[str, float]:
    """The region-shortcut rate each split is built to have (what ``shortcut_statistic`` estimates)."""
    chance = 1.0 / len(spec.regions)
    train = spec.shortcut + (1.0 - spec.shortcut) * chance
    return {"train": train, "val": chance, "test": chance}


def _shortcut_map(spec: WorldSpec, rng: np.random.Generator) -> dict[str, str]:
    """Each action's shortcut region, seeded; regions are dealt round-robin over a shuffled order."""
    regions = spec.region_names
    order = rng.permutation(len(regions))
    actions = [spec.action_names[i] for i in rng.permutation(len(spec.actions))]
    return {action: regions[order[i % len(regions)]] for i, action in enumerate(actions)}


def _others(spec: WorldSpec, action: str, rng: np.random.Generator) -> list[str]:
    """The clip's bystander objects: first objects of actions with the same motion, then any."""
    chosen = spec.action(action)
    confusable = sorted({a.object for a in spec.actions if a.motion == chosen.motion} - {chosen.object})
    n_confusable = min(spec.confusable_per_clip, len(confusable))
    picked = [str(x) for x in rng.choice(confusable, size=n_confusable, replace=False)] if n_confusable else []
    rest = [o for o in spec.object_names if o not in (spec.agent, chosen.object, *picked)]
    picked += [str(x) for x in rng.choice(rest, size=spec.others_per_clip - n_confusable, replace=False)]
    return picked


def _plan_scenes(spec: WorldSpec, shortcut_map: dict[str, str], rng: np.random.Generator) -> list[dict]:
    """Assign every clip its split, action, region, other objects and render seed."""
    counts = spec.split_counts()
    scenes: list[dict] = []
    for split in SPLITS:
        actions = [a for a in spec.action_names for _ in range(counts[split])]
        for position, index in enumerate(rng.permutation(len(actions))):
            action = actions[index]
            applied = split == "train" and bool(rng.random() < spec.shortcut)
            background = shortcut_map[action] if applied else str(rng.choice(spec.region_names))
            scenes.append(
                {
                    "video_id": f"{split}-{position:05d}",
                    "split": split,
                    "label": action,
                    "background": background,
                    "others": _others(spec, action, rng),
                    "shortcut_applied": applied,
                    "shortcut_background": shortcut_map[action],
                    "seed": int(rng.integers(0, 2**63 - 1)),
                }
            )
    return scenes


def _boxes_json(masks: dict[str, np.ndarray], regions: tuple[str, ...], height: int, width: int) -> str:
    """Per-frame boxes of every object (not regions), in the manifest's ``boxes`` JSON format."""
    tubes: dict[str, list[list[int]]] = {}
    for name in sorted(masks):
        if name in regions:
            continue
        rows = []
        for t, mask in enumerate(masks[name]):
            ys, xs = np.nonzero(mask)
            if len(ys):
                rows.append([t, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1])
        if rows:
            tubes[name] = rows
    return json.dumps({"width": width, "height": height, "tubes": tubes}, sort_keys=True)


def _make_clip(root: str, scene: dict, spec: WorldSpec) -> str:
    """Render and write one clip and its masks; returns its boxes JSON. Runs in worker processes."""
    height, width = spec.resolution
    plan = ScenePlan(
        video_id=scene["video_id"],
        action=scene["label"],
        background=scene["background"],
        others=tuple(scene["others"]),
        seed=scene["seed"],
    )
    clip = render_clip(spec, plan)
    write_mp4(os.path.join(root, "videos", f"{plan.video_id}.mp4"), clip.frames, fps=spec.fps, crf=spec.crf)
    write_masks_npz(os.path.join(root, "masks", f"{plan.video_id}.npz"), clip.masks)
    return _boxes_json(clip.masks, spec.region_names, height, width)


def dataset_info(spec: WorldSpec, shortcut_map: dict[str, str]) -> dict:
    """The content of ``dataset.json`` (without the shortcut map when none is given)."""
    tools = sorted({a.object for a in spec.actions})
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "world": world_to_dict(spec),
        "spec_sha256": spec.sha256(),
        "actions": list(spec.action_names),
        "label_ids": {action: i for i, action in enumerate(spec.action_names)},
        "action_objects": {a.name: a.object for a in spec.actions},
        "action_motions": {a.name: a.motion for a in spec.actions},
        "channels": list(spec.channels),
        "lexicon": world_lexicon(spec),
        "vocabulary": {
            "agent": [spec.agent],
            "tools": tools,
            "bystanders": [o for o in spec.object_names if o != spec.agent and o not in tools],
            "regions": list(spec.region_names),
        },
        "shortcut_map": shortcut_map,
        "expected_shortcut_rate": expected_shortcut_rate(spec),
        "split_counts": {split: n * len(spec.actions) for split, n in spec.split_counts().items()},
    }


def _generate_local(root: str, spec: WorldSpec, num_workers: int) -> None:
    """Write the whole dataset under the local folder ``root``; dataset.json goes last (the marker)."""
    started = time.monotonic()
    os.makedirs(os.path.join(root, "videos"), exist_ok=True)
    os.makedirs(os.path.join(root, "masks"), exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    shortcut_map = _shortcut_map(spec, rng)
    scenes = _plan_scenes(spec, shortcut_map, rng)
    total = len(scenes)
    logger.info(
        "A2O-Synth '%s': rendering %d clips (%d actions) into %s with %d worker(s)",
        spec.world, total, len(spec.actions), root, num_workers,
    )
    boxes: list[str] = []
    with progress(total, "A2O-Synth: rendering", logger, unit="clips") as bar:
        if num_workers > 1:
            # spawn, not fork: callers may be Ray workers or other threaded processes, where fork can hang
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
                futures = [pool.submit(_make_clip, root, scene, spec) for scene in scenes]
                for future in futures:  # in submission order: deterministic rows
                    boxes.append(future.result())
                    bar.update(1)
        else:
            for scene in scenes:
                boxes.append(_make_clip(root, scene, spec))
                bar.update(1)

    info = dataset_info(spec, shortcut_map)
    rows = [
        {
            "video_id": scene["video_id"],
            "uri": f"videos/{scene['video_id']}.mp4",
            "label": scene["label"],
            "label_id": info["label_ids"][scene["label"]],
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
    _write_text(os.path.join(root, "dataset.json"), json.dumps(info, indent=2, sort_keys=True) + "\n")
    logger.info("A2O-Synth: %d clips written to %s in %.1f s", total, root, time.monotonic() - started)


def _write_parquet(table: pa.Table, path: str) -> None:
    pq.write_table(table, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)


def _write_text(path: str, text: str) -> None:
    with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(f"{path}.tmp", path)


def resolve_world(world: str | WorldSpec, seed: int | None = None, **overrides) -> WorldSpec:
    """A spec from a preset name, a spec file path or a :class:`WorldSpec`, with ``seed`` and
    top-level ``overrides`` (``clips_per_action=60``, ``shortcut=0``, ``actions=[...]``) applied."""
    spec = world if isinstance(world, WorldSpec) else load_world_spec(world)
    if seed is not None:
        overrides = {**overrides, "seed": seed}
    return apply_world_overrides(spec, overrides) if overrides else spec


def generate_synth(
    out_dir: str,
    world: str | WorldSpec = "household",
    seed: int | None = None,
    *,
    overwrite: bool = False,
    num_workers: int = 1,
    **overrides,
) -> str:
    """Generate an A2O-Synth world under ``out_dir`` (a local path or fsspec URI); returns ``out_dir``.

    ``world`` is a preset name (:func:`preset_names`), the path of a world spec YAML, or a
    :class:`WorldSpec`; ``seed`` (default: the spec's) and ``overrides`` replace its top-level fields.
    Idempotent: when ``out_dir/dataset.json`` already holds the same world, nothing is written. A
    folder holding a *different* A2O-Synth dataset raises :class:`DataError` unless ``overwrite=True``
    (which deletes only the files this generator writes). ``num_workers`` > 1 renders in that many
    *spawned* processes; they re-import the caller's ``__main__``, so only use it from a script with
    an ``if __name__ == "__main__":`` guard. The output bytes do not depend on it. Remote URIs are
    generated in a local temp folder, then uploaded.
    """
    spec = resolve_world(world, seed, **overrides)
    fs, path = fs_and_path(out_dir)
    info_path = f"{path.rstrip('/')}/dataset.json"
    if fs.exists(info_path):
        with fs.open(info_path, "r", encoding="utf-8") as handle:
            existing = json.load(handle)
        if existing.get("version") == FORMAT_VERSION and existing.get("spec_sha256") == spec.sha256():
            logger.info("A2O-Synth: %s already holds world '%s' (same spec and seed); not regenerating",
                        out_dir, spec.world)
            return out_dir
        if not overwrite:
            previous = (existing.get("world") or {}).get("world", "an older format")
            raise DataError(
                f"{out_dir} already holds another A2O-Synth dataset ({previous}, other spec or seed); "
                "pick another output folder or pass overwrite=True (a2o data synth --overwrite)"
            )
        for name in ("dataset.json", "manifest.parquet", "scenes.parquet", "videos", "masks"):
            target = f"{path.rstrip('/')}/{name}"
            if fs.exists(target):
                fs.rm(target, recursive=True)
    if is_local(fs):
        _generate_local(path, spec, max(int(num_workers), 1))
        return out_dir
    with tempfile.TemporaryDirectory(prefix="a2o-synth-") as tmp:
        _generate_local(tmp, spec, max(int(num_workers), 1))
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

    A no-op for other datasets, and for an existing dataset of the same world and seed.
    """
    if data_cfg.dataset != "synthetic":
        return
    if not data_cfg.root:
        raise DataError("data.root: set the A2O-Synth directory (it is generated there if missing)")
    generate_synth(data_cfg.root, data_cfg.synth_preset, seed=data_cfg.seed)
