"""Do the maps of the right objects help? Val accuracy of five class sets on an A2O-Synth world.

Trains the recognizer (tiny V-JEPA2, maps from the world's *learned* detector, which sees pixels)
with the same seeds for each class set and prints val accuracy (mean ± std over seeds) with paired
t-tests against RGB only and against irrelevant objects:

    (a) RGB only                    C = 0, no maps
    (b) best set known              --best (default: the hand, one tool of each shared-motion pair,
                                    and one scene class), at most --max-classes
    (c) every tool, best C_max      the actions' tools; when they exceed --max-classes, the tools of
                                    shared-motion actions first (one per motion, then the rest)
    (d) irrelevant objects          the world's bystanders (objects no action moves)
    (e) (b) without scene classes   (b) minus the world's regions

    python -m benchmarks.maps_matter                                # household, 5 seeds, 2 jobs
    python -m benchmarks.maps_matter --detector annotation          # the oracle maps instead

Defaults (benchmarks._common.Geometry): 4 frames at 32 px, patch 4, hidden 64 x 2 layers, frozen
random-init encoder (weight std 0.64 / sqrt(hidden), see a2o.model.recognizer.tiny_init_std), lr
2e-3 with the fusion path (adapter + zero-init projection, anchored so empty maps add nothing) at
50x (train.fusion_lr_scale), 15 epochs.

Training runs through the real Ray Train loop in Ray Train's local mode
(:func:`benchmarks._common.train_in_process`), one torch thread per run; ``--jobs`` runs that many
(seed, class set) runs at once in spawned processes. The detector is trained (or reused) and the
maps are filled once, up front. Results (per seed, summaries, tests, settings, the detector's val
IoU) go to ``--out/maps_matter.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict

from benchmarks._common import (
    Geometry,
    build_experiment,
    command_line,
    format_table,
    quiet_logs,
    set_torch_threads,
    train_in_process,
    with_seed,
)

BASELINE = "(a) RGB only"
IRRELEVANT = "(d) irrelevant objects"
DEFAULT_BEST = "hand,spoon,broom,sponge,knife,kettle,paint roller,floor"


def tools_by_priority(info: dict) -> list[str]:
    """The actions' tools, those of shared-motion actions first: one per motion, then the rest."""
    motions = info["action_motions"]
    objects = info["action_objects"]
    shared = [m for m in dict.fromkeys(motions.values()) if list(motions.values()).count(m) > 1]
    first = [next(objects[a] for a in objects if motions[a] == m) for m in shared]
    rest = [objects[a] for a in objects if motions[a] in shared and objects[a] not in first]
    unique = [objects[a] for a in objects if motions[a] not in shared]
    return list(dict.fromkeys(first + rest + unique))


def class_sets(synth_root: str, best: list[str], max_classes: int) -> dict[str, list[str]]:
    """The five class sets of the benchmark, from the world's own description."""
    from a2o.data.synthetic import load_dataset_info

    info = load_dataset_info(synth_root)
    regions = set(info["vocabulary"]["regions"])
    tools = tools_by_priority(info)
    tools_name = "(c) every tool" if len(tools) <= max_classes else f"(c) every tool, best {max_classes} of {len(tools)}"
    return {
        BASELINE: [],
        "(b) best set known": best,
        tools_name: tools[:max_classes],
        IRRELEVANT: list(info["vocabulary"]["bystanders"]),
        "(e) (b) without scene classes": [c for c in best if c not in regions],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per class set (paired)")
    parser.add_argument("--preset", default="household", help="A2O-Synth world: preset name or spec path")
    parser.add_argument("--detector", default="learned", choices=("learned", "annotation"),
                        help="learned (sees pixels; the default) or annotation (the oracle)")
    parser.add_argument("--best", default=DEFAULT_BEST, help="comma-separated best set known, row (b)")
    parser.add_argument("--max-classes", type=int, default=8, help="C_max (search.max_classes of the demo)")
    parser.add_argument("--epochs", type=int, default=15, help="training epochs per run")
    parser.add_argument("--frames", type=int, default=Geometry.num_frames, help="frames per clip")
    parser.add_argument("--resolution", type=int, default=Geometry.resolution, help="model input side")
    parser.add_argument("--hidden", type=int, default=Geometry.hidden, help="tiny V-JEPA2 hidden size")
    parser.add_argument("--layers", type=int, default=Geometry.layers, help="tiny V-JEPA2 layers")
    parser.add_argument("--lr", type=float, default=Geometry.lr, help="peak learning rate")
    parser.add_argument("--batch-size", type=int, default=Geometry.batch_size, help="clips per step")
    parser.add_argument("--patch", type=int, default=Geometry.patch, help="tiny V-JEPA2 patch size")
    parser.add_argument(
        "--fusion-lr-scale", type=float, default=Geometry.fusion_lr_scale,
        help="adapter + projection lr as a multiple of --lr (train.fusion_lr_scale)",
    )
    parser.add_argument(
        "--freeze-backbone", action=argparse.BooleanOptionalAction, default=Geometry.freeze_backbone,
        help="freeze the random-init V-JEPA2 encoder (probe and fusion path train)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (spawned processes)")
    parser.add_argument("--work-dir", default="", help="where data and runs go (default: a temp dir)")
    parser.add_argument("--out", default="runs/bench/maps_matter", help="folder of the results JSON")
    parser.add_argument("--from-json", default="", help="print the table of an earlier run's maps_matter.json")
    return parser.parse_args(argv)


def _run_one(cfg, seed: int, name: str, classes: list[str], threads: int) -> tuple[int, str, dict]:
    """One (seed, class set) run; module level so a spawned process can unpickle it."""
    quiet_logs()
    set_torch_threads(threads)
    result = train_in_process(with_seed(cfg, seed), classes)
    metrics = result.metrics
    return seed, name, {
        "seed": seed,
        "val_accuracy": float(metrics["val_accuracy"]),
        "loss": float(metrics["loss"]),
        "classwise_accuracy": metrics["classwise_accuracy"],
        "wall_time_s": result.wall_time_s,
    }


def summarise(sets: dict[str, list[str]], runs: dict[str, list[dict]]) -> tuple[dict, str]:
    """Per class set: mean ± std and paired t-tests against RGB only and irrelevant objects."""
    from a2o.train.stats import format_mean_std, paired_t_test, summarize

    baseline = [r["val_accuracy"] for r in runs[BASELINE]]
    irrelevant = [r["val_accuracy"] for r in runs[IRRELEVANT]]
    rows, summary = [], {}
    for name, classes in sets.items():
        accuracies = [r["val_accuracy"] for r in runs[name]]
        stats = summarize(accuracies)
        test = None if name == BASELINE else paired_t_test(accuracies, baseline)
        test_irrelevant = None if name in (BASELINE, IRRELEVANT) else paired_t_test(accuracies, irrelevant)
        summary[name] = {
            "classes": classes, "summary": asdict(stats), "vs_no_maps": asdict(test) if test else None,
            "vs_irrelevant": asdict(test_irrelevant) if test_irrelevant else None,
        }
        rows.append([
            name,
            len(classes),
            format_mean_std(stats),
            "—" if test is None else f"{test.mean_difference:+.3f}",
            "—" if test is None else f"{test.p_value:.3g}",
            "—" if test_irrelevant is None else f"{test_irrelevant.mean_difference:+.3f}",
            "—" if test_irrelevant is None else f"{test_irrelevant.p_value:.3g}",
        ])
    table = format_table(["class set", "C", "val accuracy (mean ± std)", "Δ vs RGB only", "p vs RGB",
                          "Δ vs (d)", "p vs (d)"], rows)
    return summary, table


def rerender(path: str) -> int:
    """Print the table of an earlier run's results JSON (recomputing the statistics)."""
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    sets = {name: entry["classes"] for name, entry in results["summary"].items()}
    _, table = summarise(sets, results["runs"])
    print(f"$ {results['command']}")
    print(table)
    for name, classes in sets.items():
        print(f"  {name}: {', '.join(classes) or '(none)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args.from_json)
    quiet_logs()
    set_torch_threads(args.threads)

    started = time.perf_counter()
    geometry = Geometry(
        num_frames=args.frames, resolution=args.resolution, hidden=args.hidden, layers=args.layers,
        patch=args.patch, batch_size=args.batch_size, lr=args.lr, fusion_lr_scale=args.fusion_lr_scale,
        freeze_backbone=args.freeze_backbone,
    )
    with tempfile.TemporaryDirectory(prefix="a2o-maps-matter-") as tmp:
        work_dir = args.work_dir or tmp
        cfg = build_experiment(
            work_dir, preset=args.preset, detector=args.detector, geometry=geometry, epochs=args.epochs
        )
        best = [c.strip() for c in args.best.split(",") if c.strip()]
        if len(best) > args.max_classes:
            raise SystemExit(f"--best has {len(best)} classes, more than --max-classes {args.max_classes}")
        sets = class_sets(cfg.data.root, best, args.max_classes)
        detector_iou = _detector_iou(cfg)
        # Fill the map cache once here, so parallel runs only read it.
        from a2o.detect.classes import ClassSet
        from a2o.train.trial import prepare_inputs

        prepare_inputs(cfg, ClassSet.parse(sorted({c for classes in sets.values() for c in classes}),
                                           where="the benchmark's class sets"))
        setup_s = time.perf_counter() - started
        runs: dict[str, list[dict]] = {name: [] for name in sets}
        jobs = [(seed, name, classes) for seed in range(args.seeds) for name, classes in sets.items()]
        print(f"{len(jobs)} runs ({args.seeds} seeds x {len(sets)} class sets), {args.jobs} at a time", flush=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=context) as pool:
            futures = [pool.submit(_run_one, cfg, seed, name, classes, args.threads) for seed, name, classes in jobs]
            for future in futures:
                seed, name, run = future.result()
                runs[name].append(run)
                print(f"seed {seed} {name:<30} val_accuracy={run['val_accuracy']:.3f} "
                      f"train_loss={run['loss']:.3f} ({run['wall_time_s']:.0f} s)", flush=True)

    summary, table = summarise(sets, runs)
    wall_s = time.perf_counter() - started
    print()
    print(f"$ {command_line()}")
    print(f"A2O-Synth '{args.preset}', {args.seeds} seeds, {args.epochs} epochs, T={args.frames}, "
          f"{args.resolution}px, tiny V-JEPA2 hidden {args.hidden} x {args.layers} layers, patch {args.patch}, "
          f"{'frozen' if args.freeze_backbone else 'fine-tuned'} encoder, lr {args.lr:g}, "
          f"fusion lr x{args.fusion_lr_scale:g}, {args.detector} detector; {args.jobs} jobs x {args.threads} thread(s); "
          f"setup {setup_s:.0f} s, wall {wall_s:.0f} s")
    print(table)
    for name, classes in sets.items():
        print(f"  {name}: {', '.join(classes) or '(none)'}")
    if detector_iou:
        print("learned detector, val IoU per channel: "
              + ", ".join(f"{name} {iou:.2f}" for name, iou in detector_iou.items()))

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "maps_matter.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({
            "command": command_line(), "args": vars(args), "geometry": asdict(geometry),
            "wall_time_s": wall_s, "setup_time_s": setup_s, "runs": runs, "summary": summary,
            "table": table, "detector": args.detector, "detector_val_iou": detector_iou,
        }, handle, indent=2)
    print(f"results: {path}")
    return 0


def _detector_iou(cfg) -> dict[str, float]:
    """The learned detector's per-channel val IoU, as it recorded when trained ({} for the oracle)."""
    if cfg.detect.detector != "learned":
        return {}
    from a2o.detect.learned import read_detector_metadata

    return dict(read_detector_metadata(cfg.detect.learned_model).get("val_iou", {}))


if __name__ == "__main__":
    raise SystemExit(main())
