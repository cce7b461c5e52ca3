"""``a2o search --config X [--set k=v] [--resume]``: config to best model."""

from __future__ import annotations

import json

from a2o.config import load_config


def run(args) -> int:
    from a2o.commands.console import log_dir_for, run_log
    from a2o.commands.ray_session import connect
    from a2o.runtime import Runtime
    from a2o.service import preflight_inputs, run_service

    cfg = load_config(args.config, args.overrides)
    preflight_inputs(cfg)  # before Ray starts: a bad data root or spec fails in under a second
    with run_log(log_dir_for(cfg.storage.root), "search") as run_log_file:
        started = connect(cfg.ray.address, cfg.ray.num_cpus)
        try:
            outcome = run_service(cfg, resume=args.resume, eval_runtime=Runtime.best_available())
        finally:
            if started:
                import ray

                ray.shutdown()
    best, final = outcome["best"], outcome["final"] or {}
    say = run_log_file.print
    say(f"best classes : {', '.join(best.record.class_set) or '(none)'}")
    say(f"search val   : {best.record.val_accuracy:.4f} (trial {best.iteration}; the best of "
        f"{outcome.get('num_trials', 'all')} trials, so optimistic)")
    if final:
        say(f"final val    : {final['val_accuracy']:.4f} (the best set retrained from scratch for "
            f"{final['final_epochs']} epochs)")
        if final.get("test"):
            test = final["test"]
            say(f"test         : {test['accuracy']:.4f} on {test['num_samples']} held-out videos "
                f"({test['segments']} segments x {test['views']} views)")
    from a2o.service import proposal_summary

    proposals = proposal_summary(outcome.get("searcher_stats") or {})
    if proposals:
        say(f"LLM          : {proposals}")
    say(f"results      : {outcome['results']}")
    if run_log_file.path:
        say(f"full log     : {run_log_file.path}")
    say("class-wise test accuracy: " + json.dumps((final.get("test") or {}).get("classwise_accuracy", {})))
    return 0
