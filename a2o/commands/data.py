"""``a2o data prepare`` and ``a2o data synth``: the recipe that turns a dataset into a frame store.

prepare: config -> manifest (split, few-shot) -> ``storage/manifest.parquet`` -> Ray -> frame store
at ``storage/frames/<grid_key>`` -> summary table -> with ``detect.detector: learned``, the learned
detector trained from that frame store into ``detect.learned_model``. Rerunning reuses every stored
video and a trained detector.
"""

from __future__ import annotations

import logging

from a2o.config import load_config

log = logging.getLogger(__name__)


def _print_summary(manifest, summary, frames_uri: str, manifest_uri: str) -> None:
    from a2o.data.splits import split_counts

    skipped = set(summary.skipped_ids)
    ids = manifest.column("video_id").to_pylist()
    splits = manifest.column("split").to_pylist()
    print(f"manifest: {manifest_uri}")
    print(f"frames:   {frames_uri}")
    print(f"{'split':<7}{'clips':>8}{'classes':>9}{'skipped':>9}")
    for split, (clips, classes) in split_counts(manifest).items():
        bad = sum(1 for vid, s in zip(ids, splits, strict=True) if s == split and vid in skipped)
        print(f"{split:<7}{clips:>8}{classes:>9}{bad:>9}")
    print(f"videos: {summary.total} total, {summary.decoded} decoded, {summary.reused} reused, "
          f"{summary.skipped} skipped")
    if skipped:
        shown = ", ".join(summary.skipped_ids[:10])
        more = f" (+{len(skipped) - 10} more)" if len(skipped) > 10 else ""
        print(f"skipped (undecodable, empty or missing; see the log for why): {shown}{more}")


def prepare(args) -> int:
    """Read the manifest, split it, and decode every video once onto the frame grid."""
    import ray

    from a2o.commands.ray_session import connect
    from a2o.data.framestore import grid_key, prepare_frame_store
    from a2o.data.manifest import load_manifest, write_manifest
    from a2o.data.synthetic import ensure_synthetic

    cfg = load_config(args.config, args.overrides)
    from a2o.service import preflight_inputs

    preflight_inputs(cfg)  # before anything is generated or Ray starts
    ensure_synthetic(cfg.data)
    manifest = load_manifest(cfg.data)
    manifest_uri = write_manifest(manifest, cfg.storage.path("manifest.parquet"))
    frames_uri = cfg.storage.path("frames", grid_key(cfg.data))
    from a2o.commands.console import log_dir_for, run_log

    with run_log(log_dir_for(cfg.storage.root), "data-prepare"):
        started = connect(cfg.ray.address, cfg.ray.num_cpus)
        try:
            summary = prepare_frame_store(manifest, cfg.data, frames_uri)
        finally:
            if started:
                ray.shutdown()
    _print_summary(manifest, summary, frames_uri, manifest_uri)
    if cfg.detect.detector == "learned":  # trained here from the frame store, once; reused afterwards
        from a2o.detect.learned_train import ensure_learned_detector

        _print_detector(ensure_learned_detector(cfg))
    return 0


def _print_detector(detector_dir: str) -> None:
    from a2o.detect.learned import read_detector_metadata

    meta = read_detector_metadata(detector_dir)
    print(f"detector: {detector_dir}")
    print(f"  learned, {len(meta['channels'])} channels, trained in {meta['training_seconds']:.1f} s; "
          f"val IoU (threshold 0.5) mean {meta.get('val_mean_iou')}")
    ious = meta["val_iou"]
    print("  val IoU: " + ", ".join(f"{name} {ious.get(name) if ious.get(name) is not None else '-'}"
                                    for name in meta["channels"]))


def synth(args) -> int:
    """Generate an A2O-Synth world (idempotent for the same spec and seed); prints what it holds."""
    from a2o.data.synthetic import class_counts, generate_synth, load_dataset_info

    world = args.spec or args.preset or "household"
    path = generate_synth(args.out, world, seed=args.seed, overwrite=args.overwrite, num_workers=args.workers)
    info = load_dataset_info(path)
    spec = info["world"]
    counts = class_counts(path)
    print(f"world '{spec['world']}' (seed {spec['seed']}, spec sha256 {info['spec_sha256'][:12]}): {path}")
    print(f"  {len(info['actions'])} actions, {len(spec['objects'])} objects, {len(spec['regions'])} regions, "
          f"{spec['num_frames']} frames at {spec['resolution'][0]}x{spec['resolution'][1]} px")
    print("  clips: " + ", ".join(f"{split} {sum(c.values())}" for split, c in counts.items()))
    return 0
