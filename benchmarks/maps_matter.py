"""Do the maps of the right objects help? Val accuracy of four class sets on A2O-Synth.

Trains the recognizer (tiny V-JEPA2, oracle maps from the annotation detector) with the same seeds
for each class set and prints val accuracy (mean ± std over seeds) with a paired t-test against
the map-free baseline:

    (a) no maps                C = 0, the RGB-only baseline
    (b) relevant objects       dataset.json action_objects + "hand"
    (c) irrelevant objects     the distractors only
    (d) relevant + scene       (b) + the background regions (floor, wall, grass, table)

    python -m benchmarks.maps_matter                       # demo preset, 3 seeds, 2 jobs
    python -m benchmarks.maps_matter --seeds 5 --epochs 20 --out runs/bench/maps_matter

Defaults (benchmarks._common.Geometry): 4 frames at 32 px, patch 4, hidden 64 x 2 layers, frozen
random-init encoder (weight std 0.64 / sqrt(hidden), see a2o.model.recognizer.tiny_init_std), lr
2e-3 with the fusion path (adapter + zero-init projection, anchored so empty maps add nothing) at
50x (train.fusion_lr_scale), 15 epochs.

Training runs through the real Ray Train loop in Ray Train's local mode
(:func:`benchmarks._common.train_in_process`), one torch thread per run; ``--jobs`` runs that many
(seed, class set) runs at once in spawned processes. The maps are filled once, up front. Results
(per seed, summaries, tests, settings) go to ``--out/maps_matter.json``.
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
    SCENE_CLASSES,
    Geometry,
    build_experiment,
    command_line,
    format_table,
    quiet_logs,
    set_torch_threads,
    train_in_process,
    with_seed,
)


def class_sets(synth_root: str) -> dict[str, list[str]]:
    """The four class sets of the benchmark, from the dataset's own description."""
    from a2o.data.synthetic import load_dataset_info

    info = load_dataset_info(synth_root)
    relevant = sorted(set(info["action_objects"].values())) + ["hand"]
    return {
        "(a) no maps": [],
        "(b) relevant objects": relevant,
        "(c) irrelevant (distractors)": list(info["vocabulary"]["distractors"]),
        "(d) relevant + scene": relevant + list(SCENE_CLASSES),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per class set (paired)")
    parser.add_argument("--preset", default="demo", choices=("tiny", "demo"), help="A2O-Synth preset")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logs()
    set_torch_threads(args.threads)
    from a2o.train.stats import format_mean_std, paired_t_test, summarize

    started = time.perf_counter()
    geometry = Geometry(
        num_frames=args.frames, resolution=args.resolution, hidden=args.hidden, layers=args.layers,
        patch=args.patch, batch_size=args.batch_size, lr=args.lr, fusion_lr_scale=args.fusion_lr_scale,
        freeze_backbone=args.freeze_backbone,
    )
    with tempfile.TemporaryDirectory(prefix="a2o-maps-matter-") as tmp:
        work_dir = args.work_dir or tmp
        cfg = build_experiment(work_dir, preset=args.preset, geometry=geometry, epochs=args.epochs)
        sets = class_sets(cfg.data.root)
        # Fill the map cache once here, so parallel runs only read it.
        from a2o.train.trial import prepare_inputs

        prepare_inputs(cfg, sorted({c for classes in sets.values() for c in classes}))
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

    baseline = [r["val_accuracy"] for r in runs["(a) no maps"]]
    rows, summary = [], {}
    for name, classes in sets.items():
        accuracies = [r["val_accuracy"] for r in runs[name]]
        stats = summarize(accuracies)
        test = None if name == "(a) no maps" else paired_t_test(accuracies, baseline)
        summary[name] = {"classes": classes, "summary": asdict(stats), "vs_no_maps": asdict(test) if test else None}
        rows.append([
            name,
            len(classes),
            format_mean_std(stats),
            "—" if test is None else f"{test.mean_difference:+.3f}",
            "—" if test is None else f"{test.p_value:.3g}",
        ])
    wall_s = time.perf_counter() - started
    table = format_table(["class set", "C", "val accuracy (mean ± std)", "Δ vs (a)", "paired t p"], rows)
    print()
    print(f"$ {command_line()}")
    print(f"A2O-Synth '{args.preset}', {args.seeds} seeds, {args.epochs} epochs, T={args.frames}, "
          f"{args.resolution}px, tiny V-JEPA2 hidden {args.hidden} x {args.layers} layers, patch {args.patch}, "
          f"{'frozen' if args.freeze_backbone else 'fine-tuned'} encoder, lr {args.lr:g}, "
          f"fusion lr x{args.fusion_lr_scale:g}, oracle maps; {args.jobs} jobs x {args.threads} thread(s); "
          f"setup {setup_s:.0f} s, wall {wall_s:.0f} s")
    print(table)
    for name, classes in sets.items():
        print(f"  {name}: {', '.join(classes) or '(none)'}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "maps_matter.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({
            "command": command_line(), "args": vars(args), "geometry": asdict(geometry),
            "wall_time_s": wall_s, "setup_time_s": setup_s, "runs": runs, "summary": summary,
            "table": table,
        }, handle, indent=2)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
