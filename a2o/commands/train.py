"""``a2o train --config X --classes "hand,ball"``: one trial outside Tune."""

from __future__ import annotations

import json

from a2o.config import load_config


def run(args) -> int:
    from a2o.commands._ray import connect
    from a2o.train.trial import fit_trial

    cfg = load_config(args.config, args.overrides)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    started = connect(cfg.ray.address, cfg.ray.num_cpus)
    try:
        result = fit_trial(cfg, classes)
    finally:
        if started:
            import ray

            ray.shutdown()
    metrics = result.metrics
    print(f"classes       : {classes or '(none: RGB-only baseline)'}")
    print(f"val accuracy  : {metrics.get('val_accuracy', float('nan')):.4f}  (epoch {metrics.get('epoch')})")
    print(f"maps          : {result.detect_stats['computed']} computed, {result.detect_stats['reused']} reused")
    print(f"checkpoint    : {result.checkpoint_path}")
    print(f"wall time     : {result.wall_time_s:.1f} s")
    print("class-wise    : " + json.dumps(metrics.get("classwise_accuracy", {}), sort_keys=True))
    return 0
