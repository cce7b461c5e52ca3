"""Does the map-only proxy predict a full trial? Score every finished trial of a searcher comparison.

Reads ``<out>/runs/*/results.json`` of ``benchmarks/searchers.py`` (every method, every seed), scores
each trained class set with the screening proxy (:class:`a2o.train.proxy.MapProxy` on the same
world's map cache, train split, scored on val) and compares it with the set's full-trial val
accuracy: Spearman per method and overall, the full accuracy per proxy quartile, the proxy's
seconds per set, and a scatter plot. Early-stopped (ASHA) and failed trials are left out: their
accuracy is not a full trial's.

    python -m benchmarks.proxy_check --out runs/bench-household

Nothing here trains a recognizer, and the test split is never read.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np

from a2o.detect.classes import ClassSet
from a2o.train.stats import spearman
from benchmarks._common import Geometry
from benchmarks.comparison import markdown_table

HEADERS = ["method", "trials", "Spearman(proxy, full val)"]


def trained_sets(out_dir: str) -> list[tuple[str, int, list[str], float]]:
    """(method, seed, classes, full val) of every finished, full-length trial of the comparison."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "runs", "*", "results.json"))):
        with open(path, encoding="utf-8") as fh:
            run = json.load(fh)
        method, seed = run["benchmark"]["method"], int(run["benchmark"]["seed"])
        for trial in run.get("trials") or []:
            value = trial.get("val_accuracy")
            if isinstance(value, (int, float)) and np.isfinite(value) and not trial.get("stopped_early"):
                rows.append((method, seed, list(trial["classes"]), float(value)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-household", help="the comparison's --out folder")
    parser.add_argument("--preset", default="household", help="its world (--preset of benchmarks.searchers)")
    parser.add_argument("--epochs", type=int, default=15, help="its --epochs (the bench config; nothing trains)")
    parser.add_argument("--write", default=None, help="where proxy_check.json and .png go (default: --out)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from a2o.train.proxy import MapProxy
    from benchmarks.searchers import _maps_for, setup

    rows = trained_sets(args.out)
    if len(rows) < 3:
        print(f"{args.out}: {len(rows)} finished trials; need at least 3", file=sys.stderr)
        return 1
    bench = setup(args.out, preset=args.preset, geometry=Geometry(), epochs=args.epochs)
    proxy = MapProxy(lambda class_set: _maps_for(bench, class_set, ("train", "val"))[0],
                     bench.splits["train"], bench.splits["val"], len(bench.labels), seed=args.seed)
    started = time.perf_counter()
    scores, seconds = [], []
    for i, (_, _, classes, _) in enumerate(rows, 1):
        result = proxy.score(ClassSet.parse(classes, action_names=bench.action_names, where="trial classes"))
        scores.append(result.score)
        seconds.append(result.seconds)
        if i % 25 == 0:
            print(f"  scored {i}/{len(rows)} sets ({time.perf_counter() - started:.0f} s)", flush=True)
    full = [r[3] for r in rows]
    table = []
    for method in sorted({r[0] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r[0] == method]
        rho = spearman([scores[i] for i in idx], [full[i] for i in idx]) if len(idx) >= 3 else None
        table.append([method, len(idx), "–" if rho is None else f"{rho:.3f}"])
    overall = spearman(scores, full)
    table.append(["all", len(rows), "–" if overall is None else f"{overall:.3f}"])
    quartiles = np.quantile(scores, [0.25, 0.5, 0.75])
    bins = np.digitize(scores, quartiles)
    quartile_rows = [[f"Q{q + 1}", int((bins == q).sum()),
                      f"{np.mean([s for s, b in zip(scores, bins, strict=True) if b == q]):.3f}",
                      f"{np.mean([f for f, b in zip(full, bins, strict=True) if b == q]):.3f}"] for q in range(4)]
    write = args.write or args.out
    os.makedirs(write, exist_ok=True)
    from a2o.report.plots import scatter_plot

    png = scatter_plot(list(zip(scores, full, strict=True)), os.path.join(write, "proxy_check.png"),
                       xlabel="proxy score (map-only classifier: val true-class probability)",
                       ylabel="full trial val accuracy",
                       title=f"A2O-Synth {args.preset}: {len(rows)} trials, Spearman {overall:.3f}")
    text = "\n".join([
        markdown_table(HEADERS, table), "",
        markdown_table(["proxy quartile", "trials", "mean proxy", "mean full val"], quartile_rows), "",
        f"proxy seconds per set: median {np.median(seconds):.2f}, max {np.max(seconds):.2f} (the first set of a "
        f"class reads, and if needed detects, its maps; later sets reuse the memoised features); "
        f"{time.perf_counter() - started:.0f} s for all {len(rows)} sets on {os.cpu_count()} CPU cores",
        f"scatter: {png}",
    ])
    print(text)
    with open(os.path.join(write, "proxy_check.json"), "w", encoding="utf-8") as fh:
        json.dump({"spearman": overall, "by_method": table, "quartiles": quartile_rows,
                   "points": [{"method": r[0], "seed": r[1], "classes": r[2], "full_val": r[3], "proxy": s,
                               "proxy_seconds": round(t, 3)} for r, s, t in zip(rows, scores, seconds, strict=True)]},
                  fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
