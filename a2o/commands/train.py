"""``a2o train --config X --classes "hand,ball"``: one trial outside Tune."""

from __future__ import annotations

import json

from a2o.config import load_config


def run(args) -> int:
    from a2o.commands.ray_session import connect
    from a2o.detect.classes import ClassSet
    from a2o.train.trial import fit_trial

    cfg = load_config(args.config, args.overrides)
    # Empty means the RGB-only baseline; a bad text fails here, naming the flag.
    classes = ClassSet.parse([c.strip() for c in args.classes.split(",") if c.strip()], where="--classes")
    from a2o.commands.console import log_dir_for, run_log
    from a2o.service import preflight_inputs

    preflight_inputs(cfg)  # before Ray starts
    with run_log(log_dir_for(cfg.storage.root), "train") as run_log_file:
        started = connect(cfg.ray.address, cfg.ray.num_cpus)
        try:
            result = fit_trial(cfg, classes)
        finally:
            if started:
                import ray

                ray.shutdown()
    say = run_log_file.print  # the summary goes to the terminal, not the log file
    metrics = result.metrics
    say(f"classes       : {list(classes) or '(none: RGB-only baseline)'}")
    say(f"val accuracy  : {metrics.get('val_accuracy', float('nan')):.4f}  (epoch {metrics.get('epoch')})")
    say(f"maps          : {result.detect_stats['computed']} computed, {result.detect_stats['reused']} reused")
    say(f"checkpoint    : {result.checkpoint_path}")
    say(f"wall time     : {result.wall_time_s:.1f} s")
    say("class-wise    : " + json.dumps(metrics.get("classwise_accuracy", {}), sort_keys=True))
    return 0
