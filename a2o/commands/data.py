"""``a2o data prepare`` and ``a2o data synth``: the recipe that turns a dataset into a frame store.

prepare: config -> manifest (split, few-shot) -> ``storage/manifest.parquet`` -> Ray -> frame store
at ``storage/frames/<grid_key>`` -> summary table. Rerunning reuses every stored video.
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

    from a2o.commands._ray import connect
    from a2o.data.framestore import grid_key, prepare_frame_store
    from a2o.data.manifest import load_manifest, write_manifest
    from a2o.data.synthetic import ensure_synthetic

    cfg = load_config(args.config, args.overrides)
    ensure_synthetic(cfg.data)
    manifest = load_manifest(cfg.data)
    manifest_uri = write_manifest(manifest, cfg.storage.path("manifest.parquet"))
    frames_uri = cfg.storage.path("frames", grid_key(cfg.data))
    started = connect(cfg.ray.address, cfg.ray.num_cpus)
    try:
        summary = prepare_frame_store(manifest, cfg.data, frames_uri)
    finally:
        if started:
            ray.shutdown()
    _print_summary(manifest, summary, frames_uri, manifest_uri)
    return 0


def synth(args) -> int:
    """Generate the A2O-Synth benchmark (idempotent for the same parameters)."""
    from a2o.data.synthetic import generate_synth

    path = generate_synth(args.out, preset=args.preset, seed=args.seed)
    print(path)
    return 0
