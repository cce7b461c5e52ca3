"""What does running a trial as a Tune trial over Ray Train cost, next to a bare process?

One class set, one experiment, the same per-worker loop, measured side by side in one command:

    bare     a fresh ``python`` process that runs the loop (Ray Train local mode: no cluster, no
             actors) and exits: what a user runs without a search. Its wall time counts from the
             spawn, so it includes the interpreter and the imports of torch, transformers and Ray
             Train, exactly as the Tune trial's processes must.
    tune     ``tune.Tuner(a2o.train.trial.trainable_for(cfg))`` running ``--trials`` trials of the
             class set one after another, each a 1-worker (1 CPU) ``TorchTrainer`` built and fitted by
             the trial exactly as a search does. Per trial = the Tuner's wall time / trials (the first
             trial's one-off costs are spread over the search, as in a real one); the first trial
             alone is printed too.
    warm     the loop in this process, with every import already done: the floor no process reaches,
             printed for reference (the ratio against it is the whole start-up of a trial's processes).

The epochs are chosen so the loop has about ``--seconds`` of compute (calibrated on the second of
two epochs; the first also fills the map cache, so every measured run reads warm maps). Ray is started before the
Tuner is timed (a search pays it once); its start-up is printed separately. The bare process runs
before and after the Tune search, to bracket the drift of a shared machine.

    python -m benchmarks.trial_overhead                  # ~60 s trials
    python -m benchmarks.trial_overhead --seconds 120 --out runs/bench/trial_overhead

Target: Tune per-trial wall / bare wall <= 1.15.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

from benchmarks._common import (
    Geometry,
    build_experiment,
    command_line,
    format_table,
    quiet_logs,
    set_torch_threads,
    train_in_process,
)

TARGET_RATIO = 1.15


@dataclass(frozen=True)
class BareRun:
    """One bare process: its wall time from spawn to exit and what its loop reported."""

    wall_s: float
    metrics: dict
    imports_s: float
    """From the spawn to the child's call of the loop (interpreter, imports, config)."""


def relevant_classes(synth_root: str) -> list[str]:
    """Four of the world's tools plus "hand": a realistic C = 5 trial."""
    from a2o.data.synthetic import load_dataset_info
    from benchmarks.maps_matter import tools_by_priority

    return ["hand", *tools_by_priority(load_dataset_info(synth_root))[:4]]


def run_bare_process(spec_path: str, result_path: str) -> BareRun:
    """Run the loop in a fresh ``python`` process (``--bare-child``); time it from spawn to exit."""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # what a 1-CPU Ray Train worker gets
    command = [sys.executable, "-m", "benchmarks.trial_overhead", "--bare-child", spec_path, "--bare-result", result_path]
    spawned_at = time.time()
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, check=False)
    wall_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"the bare process failed (exit {completed.returncode}): {' '.join(command)}")
    with open(result_path, encoding="utf-8") as handle:
        child = json.load(handle)
    return BareRun(wall_s, child["metrics"], child["loop_called_at"] - spawned_at)


def bare_child(spec_path: str, result_path: str) -> int:
    """The bare process: read the spec, run the loop in this process, write the metrics."""
    from a2o.config import config_from_dict

    quiet_logs()
    set_torch_threads(1)
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    cfg = config_from_dict(spec["experiment"])
    loop_called_at = time.time()
    result = train_in_process(cfg, spec["classes"], epochs=int(spec["epochs"]))
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({"metrics": result.metrics, "loop_called_at": loop_called_at}, handle, default=str)
    return 0


@dataclass(frozen=True)
class TuneSearch:
    """One Tuner run of ``trials`` identical trials, one at a time."""

    wall_s: float
    trial_walls_s: list[float]
    """From the Tuner's start (first trial) or the previous trial's end to this trial's end."""
    trial_epochs_s: list[float]
    """Sum of each trial's per-epoch loop times."""
    last_metrics: dict


def run_tune_search(cfg, classes: list[str], epochs: int, trials: int) -> TuneSearch:
    """Fit ``trials`` Tune trials of ``trainable_for(cfg)`` for one class set, one after another."""
    from ray import tune

    from a2o.train.trial import orphaned_group_release, reuse_trial_actors, trainable_for

    ends: dict[str, float] = {}

    class TrialEnds(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            ends[trial.trial_id] = time.perf_counter()

    tuner = tune.Tuner(
        trainable_for(cfg),
        param_space={"classes": classes, "epochs": epochs},
        # FIFO, as `a2o search` with search.scheduler=fifo: the trial actor is reused across trials.
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=1, metric="val_accuracy", mode="max",
                                     reuse_actors=reuse_trial_actors(None)),
        run_config=tune.RunConfig(
            storage_path=os.path.abspath(cfg.storage.path("tune")), name="trial-overhead", verbose=0,
            callbacks=[TrialEnds(), orphaned_group_release()],  # as `a2o search`
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    wall_s = time.perf_counter() - started
    if results.errors:
        raise RuntimeError(f"a Tune trial failed: {results.errors[0]}")
    marks = [started, *sorted(ends.values())]
    walls = [b - a for a, b in itertools.pairwise(marks)]
    epochs_s = [float(r.metrics["train_time_s"]) for r in results]
    return TuneSearch(wall_s, walls, epochs_s, dict(results[0].metrics))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="target compute of one trial's loop")
    parser.add_argument("--trials", type=int, default=3, help="trials of the Tune search (one at a time)")
    parser.add_argument("--preset", default="household", help="A2O-Synth world: preset name or spec path")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--work-dir", default="", help="where data and runs go (default: a temp dir)")
    parser.add_argument("--out", default="runs/bench/trial_overhead", help="folder of the results JSON")
    parser.add_argument("--readme", default="", help="rewrite this README's trial_overhead Results section")
    parser.add_argument("--bare-child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bare-result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_child:
        return bare_child(args.bare_child, args.bare_result)
    quiet_logs()
    # A Ray Train worker with 1 CPU runs torch with OMP_NUM_THREADS=1: the bare runs do the same.
    set_torch_threads(1)
    import ray

    from a2o.commands.ray_session import start_local
    from a2o.config import config_to_dict

    with tempfile.TemporaryDirectory(prefix="a2o-trial-overhead-") as tmp:
        work_dir = args.work_dir or tmp
        cfg = build_experiment(work_dir, preset=args.preset, geometry=Geometry(), epochs=1)
        classes = relevant_classes(cfg.data.root)

        # Two epochs (the first also fills the map cache and warms the kernels): the second one's
        # time sets the epochs, so the measured runs get about --seconds of compute.
        calibration = train_in_process(cfg, classes, epochs=2)
        epoch_s = float(calibration.metrics["epoch_time_s"])
        epochs = max(1, math.ceil(args.seconds / epoch_s))
        print(f"calibration: second epoch {epoch_s:.1f} s (fit {calibration.wall_time_s:.1f} s) -> {epochs} epochs",
              flush=True)
        spec_path = os.path.join(work_dir, "bare-spec.json")
        with open(spec_path, "w", encoding="utf-8") as handle:
            json.dump({"experiment": config_to_dict(cfg), "classes": classes, "epochs": epochs}, handle)

        bare_before = run_bare_process(spec_path, os.path.join(work_dir, "bare-before.json"))
        print(f"bare process (before): {bare_before.wall_s:.1f} s ({bare_before.imports_s:.1f} s to the loop)",
              flush=True)

        ray_started = time.perf_counter()
        start_local(num_cpus=args.num_cpus, log_to_driver=False)  # as `a2o search` starts one
        ray_start_s = time.perf_counter() - ray_started
        try:
            search = run_tune_search(cfg, classes, epochs, args.trials)
        finally:
            ray.shutdown()
        print(f"tune: {search.wall_s:.1f} s for {args.trials} trials "
              f"({', '.join(f'{w:.1f}' for w in search.trial_walls_s)} s; ray start-up {ray_start_s:.1f} s, not included)",
              flush=True)

        bare_after = run_bare_process(spec_path, os.path.join(work_dir, "bare-after.json"))
        print(f"bare process (after): {bare_after.wall_s:.1f} s ({bare_after.imports_s:.1f} s to the loop)", flush=True)
        warm = train_in_process(cfg, classes, epochs=epochs)
        print(f"warm, in this process: {warm.wall_time_s:.1f} s", flush=True)

    def epochs_of(metrics: dict) -> float:
        return float(metrics["train_time_s"])  # the sum of the loop's epoch times

    bare_runs = (bare_before, bare_after)
    bare_s = sum(b.wall_s for b in bare_runs) / 2.0
    bare_epochs_s = sum(epochs_of(b.metrics) for b in bare_runs) / 2.0
    bare_imports_s = sum(b.imports_s for b in bare_runs) / 2.0
    bare_setup_s = sum(float(b.metrics["worker_setup_s"]) for b in bare_runs) / 2.0
    tune_s = search.wall_s / args.trials
    tune_epochs_s = sum(search.trial_epochs_s) / args.trials
    first_s = search.trial_walls_s[0]
    ratio = tune_s / bare_s
    warm_ratio = tune_s / warm.wall_time_s
    tune_setup_s = float(search.last_metrics["worker_setup_s"])
    rows = [
        ["bare process (mean of before/after)", f"{bare_s:.1f}", f"{bare_epochs_s:.1f}",
         f"{bare_s - bare_epochs_s:.1f}", f"{bare_imports_s:.1f} + {bare_setup_s:.1f}", "1.00"],
        [f"Tune trial over Ray Train, per trial of {args.trials}", f"{tune_s:.1f}", f"{tune_epochs_s:.1f}",
         f"{tune_s - tune_epochs_s:.1f}", f"– + {tune_setup_s:.1f}", f"{ratio:.2f}"],
        ["Tune trial over Ray Train, first trial", f"{first_s:.1f}", f"{search.trial_epochs_s[0]:.1f}",
         f"{first_s - search.trial_epochs_s[0]:.1f}", "", f"{first_s / bare_s:.2f}"],
        ["warm loop in an already-started process (floor)", f"{warm.wall_time_s:.1f}",
         f"{epochs_of(warm.metrics):.1f}", f"{warm.wall_time_s - epochs_of(warm.metrics):.1f}",
         f"0 + {float(warm.metrics['worker_setup_s']):.1f}", f"{warm.wall_time_s / bare_s:.2f}"],
    ]
    table = format_table(
        ["run", "wall s", "epochs s", "outside epochs s", "of which to loop + loop set-up s", "ratio to bare"], rows
    )
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print()
    print(f"$ {command_line()}")
    print(f"A2O-Synth '{args.preset}', classes {classes}, {epochs} epochs, {Geometry()}; "
          f"Ray start-up {ray_start_s:.1f} s (paid once per search, not in the Tune wall time)")
    print(f"bare before {bare_before.wall_s:.1f} s, after {bare_after.wall_s:.1f} s; "
          f"Tune trials {', '.join(f'{w:.1f}' for w in search.trial_walls_s)} s")
    print(table)
    print(f"overhead ratio {ratio:.2f} {verdict} the target <= {TARGET_RATIO} "
          f"(first trial alone {first_s / bare_s:.2f}; against the warm floor {warm_ratio:.2f})")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "trial_overhead.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({
            "command": command_line(), "args": vars(args), "geometry": asdict(Geometry()), "classes": classes,
            "epochs": epochs, "calibration_epoch_s": epoch_s, "ray_start_s": ray_start_s,
            "bare_wall_s": [b.wall_s for b in bare_runs], "bare_imports_s": [b.imports_s for b in bare_runs],
            "bare_epochs_s": bare_epochs_s, "tune_wall_s": search.wall_s, "tune_trial_walls_s": search.trial_walls_s,
            "tune_trial_epochs_s": search.trial_epochs_s, "tune_per_trial_s": tune_s, "warm_wall_s": warm.wall_time_s,
            "ratio": ratio, "ratio_first_trial": first_s / bare_s, "ratio_to_warm": warm_ratio, "target": TARGET_RATIO,
            "bare_worker_setup_s": bare_setup_s, "tune_worker_setup_s": tune_setup_s,
            "tune_val_accuracy": search.last_metrics.get("val_accuracy"),
            "bare_val_accuracy": [b.metrics["val_accuracy"] for b in bare_runs],
            "table": table,
        }, handle, indent=2)
    print(f"results: {path}")
    if args.readme:
        from benchmarks._common import machine_line, update_readme_section

        update_readme_section(args.readme, "trial_overhead", "\n".join([
            "```bash", command_line(), "```", "",
            f"Ran on {machine_line()}. A2O-Synth {args.preset}, classes {', '.join(classes)}, {epochs} epochs "
            f"(~{args.seconds:.0f} s of compute). The same loop as a bare `python` process (spawn to exit, "
            f"Ray Train local mode; before and after the search), as {args.trials} Tune trials over a 1-worker "
            "`TorchTrainer` run one after another, and warm in an already-started process:",
            "", table, "",
            f"Overhead ratio **{ratio:.2f}** per trial of a search ({verdict} the target ≤ {TARGET_RATIO}); "
            f"the first trial alone {first_s / bare_s:.2f}, and {warm_ratio:.2f} against the warm floor. "
            "The time outside the epochs is fixed per trial: the Tune trial actor, then Ray Train V2's "
            "controller, helper actors and worker, each a new Python process that imports Ray Train, torch "
            "and transformers, against one such process for the bare run. The ratio falls as trials get longer.",
        ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
