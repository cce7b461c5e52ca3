"""``a2o search --config X [--set k=v] [--resume]``: config to best model."""

from __future__ import annotations

import json

from a2o.config import load_config


def pick_eval_device() -> str:
    """The driver's device for the final test evaluation (entry points pick devices)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args) -> int:
    from a2o.commands._ray import connect
    from a2o.service import run_service

    cfg = load_config(args.config, args.overrides)
    started = connect(cfg.ray.address, cfg.ray.num_cpus)
    try:
        outcome = run_service(cfg, resume=args.resume, eval_device=pick_eval_device())
    finally:
        if started:
            import ray

            ray.shutdown()
    best, final = outcome["best"], outcome["final"] or {}
    print(f"best classes : {', '.join(best['classes']) or '(none)'}")
    print(f"search val   : {best['val_accuracy']:.4f} (trial {best['iteration']})")
    if final:
        print(f"final val    : {final['val_accuracy']:.4f} after {final['final_epochs']} epochs")
        if final.get("test"):
            test = final["test"]
            print(f"test         : {test['accuracy']:.4f} on {test['num_samples']} videos "
                  f"({test['segments']} segments x {test['views']} views)")
    print(f"results      : {outcome['results']}")
    print("class-wise test accuracy: " + json.dumps((final.get("test") or {}).get("classwise_accuracy", {})))
    return 0
