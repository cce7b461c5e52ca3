"""The searcher comparison's tables, from finished runs: pure functions, no training.

``benchmarks/searchers.py`` runs the searches and the Table-8 retrains, then calls these. Every
figure is computed from ``results.json``-shaped run dicts (``trials`` rows with ``iteration``,
``val_accuracy``, ``time_s``; ``best_trial``; ``final``; ``benchmark``; ``searcher_stats``), so
``--resume`` and a rerun over the same folder print the same tables.

Definitions (said again under each table):

- *best@T*: the best val accuracy among a run's first ``T`` trials. A budget-``T`` search by a
  method whose proposals do not depend on its budget (random, Optuna TPE) *is* the first ``T``
  trials of a longer search, so best@8 of a 20-trial random run is a T = 8 random search.
- *p vs X at T = 8*: two-sided paired t-test of best@8 over the seeds both methods ran.
- *target*: the median over all methods and seeds of each run's final best val.
- *trials to reach*: the first trial index whose val accuracy reaches the target; a run that never
  reaches it counts as its budget + 1 (a lower bound), and the table says how many reached it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from a2o.train.stats import format_mean_std, paired_t_test, spearman, summarize

__all__ = [
    "best_at",
    "reach",
    "common_target",
    "method_rows",
    "bar_checks",
    "table8_rows",
    "markdown_table",
    "fmt",
]

Run = Mapping[str, Any]


def best_at(run: Run, budget: int | None = None) -> float | None:
    """Best val accuracy among the run's first ``budget`` trials (all when None)."""
    values = [t["val_accuracy"] for t in run["trials"][: budget if budget else None]
              if t.get("val_accuracy") is not None and math.isfinite(t["val_accuracy"])]
    return max(values) if values else None


def reach(run: Run, target: float) -> tuple[int | None, float | None]:
    """(trials, trial-seconds) until the first trial with val accuracy >= target, or (None, None)."""
    seconds = 0.0
    for row in run["trials"]:
        seconds += row.get("time_s") or 0.0
        value = row.get("val_accuracy")
        if value is not None and value >= target - 1e-9:
            return row["iteration"], seconds
    return None, None


def common_target(runs: Iterable[Run]) -> float:
    """The median over runs of each run's final best val accuracy (1.0 when there is none)."""
    bests = [b for b in (best_at(r) for r in runs) if b is not None]
    return float(np.median(bests)) if bests else 1.0


def fmt(values: Sequence[float | None], digits: int = 3) -> str:
    """``mean ± std (n=k)`` of the finite values, or '–'."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return format_mean_std(summarize(finite), digits) if finite else "–"


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _p(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> tuple[float | None, int]:
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if len(seeds) < 2:
        return None, len(seeds)
    test = paired_t_test([a[s] for s in seeds], [b[s] for s in seeds])
    return (test.p_value if math.isfinite(test.p_value) else None), len(seeds)


def _by_seed(runs: Iterable[Run]) -> dict[str, dict[int, Run]]:
    out: dict[str, dict[int, Run]] = {}
    for run in runs:
        out.setdefault(run["benchmark"]["method"], {})[int(run["benchmark"]["seed"])] = run
    return out


@dataclass(frozen=True)
class MethodRow:
    """One method's figures over its seeds."""

    method: str
    seeds: int
    budget: int
    best: list[float | None]  # best val at the method's own budget, per seed
    best8: list[float | None]  # best@8 per seed
    test: list[float | None]  # test accuracy of the best-val trial's model at the own budget
    test8: list[float | None]  # ... of the best-val trial among the first 8
    p_random8: float | None
    p_static8: float | None
    reached: int
    trials_to_reach: float | None  # mean over runs, unreached = budget + 1
    seconds_to_reach: float | None  # mean over the runs that reached
    trial_seconds: float  # mean training seconds per run
    asha_stops: float
    llm_calls: float | None
    llm_tokens: float | None
    llm_seconds: float | None
    fallback_share: float | None

    def cells(self) -> list[Any]:
        def p(value):
            return "–" if value is None else (f"{value:.2g}" if value < 0.001 else f"{value:.3f}")

        llm = ("–" if self.llm_calls is None else
               f"{self.llm_calls:.1f} / {self.llm_tokens:.0f} / {self.llm_seconds:.0f}")
        return [
            self.method, self.seeds, self.budget, fmt(self.best), fmt(self.best8), p(self.p_random8),
            p(self.p_static8), fmt(self.test), f"{self.reached}/{self.seeds}",
            "–" if self.trials_to_reach is None else f"{self.trials_to_reach:.1f}",
            "–" if self.seconds_to_reach is None else f"{self.seconds_to_reach:.0f}",
            f"{self.trial_seconds:.0f}", f"{self.asha_stops:.1f}", llm,
            "–" if self.fallback_share is None else f"{self.fallback_share:.0%}",
        ]


METHOD_HEADERS = [
    "method", "seeds", "T", "best val @T", "best val @8", "p vs random @8", "p vs static @8", "test @T",
    "reached target", "trials to reach", "trial-s to reach", "trial-s / run", "ASHA stops",
    "LLM calls / tokens / s", "fallbacks",
]


def _llm_tag(method: str) -> str:
    """The ``[label]`` suffix a method carries when its LLM is not the embedded one ('' otherwise)."""
    return method[method.index("["):] if "[" in method else ""


def method_rows(runs: Sequence[Run], methods: Sequence[str], target: float, *, at: int = 8) -> list[MethodRow]:
    """One :class:`MethodRow` per method present in ``runs``, in ``methods`` order.

    p vs static pairs a method with the Static prompts run of the same LLM (``static[remote]`` for
    ``icrl[remote]``); random search has no LLM.
    """
    grouped = _by_seed(runs)
    random8 = {s: best_at(r, at) for s, r in grouped.get("random", {}).items()}
    rows = []
    for method in methods:
        seeded = grouped.get(method)
        if not seeded:
            continue
        values = [seeded[s] for s in sorted(seeded)]
        mine8 = {s: best_at(r, at) for s, r in seeded.items()}
        static_name = "static" + _llm_tag(method)
        static8 = {s: best_at(r, at) for s, r in grouped.get(static_name, {}).items()}
        budget = max(len(r["trials"]) for r in values)
        reaches = [reach(r, target) for r in values]
        stats = [r.get("searcher_stats") or {} for r in values]
        is_llm = any("llm_calls" in s for s in stats)
        proposals = [len(r["trials"]) for r in values]
        fallbacks = [s.get("fallbacks", 0) for s in stats]
        rows.append(MethodRow(
            method=method, seeds=len(values), budget=budget,
            best=[best_at(r) for r in values], best8=list(mine8.values()),
            test=[(r.get("final") or {}).get("test", {}).get("accuracy") for r in values],
            test8=[((r.get("final_at") or {}).get(str(at)) or r.get("final") or {}).get("test", {}).get("accuracy")
                   for r in values],
            p_random8=None if method == "random" else _p(mine8, random8)[0],
            p_static8=None if method == static_name else _p(mine8, static8)[0],
            reached=sum(1 for t, _ in reaches if t is not None),
            trials_to_reach=_mean([t if t is not None else len(r["trials"]) + 1 for (t, _), r in zip(reaches, values, strict=True)]),
            seconds_to_reach=_mean([s for _, s in reaches if s is not None]),
            trial_seconds=float(np.mean([sum(t.get("time_s") or 0.0 for t in r["trials"]) for r in values])),
            asha_stops=float(np.mean([sum(bool(t.get("stopped_early")) for t in r["trials"]) for r in values])),
            llm_calls=_mean([s.get("llm_calls", 0) for s in stats]) if is_llm else None,
            llm_tokens=_mean([s.get("prompt_tokens", 0) + s.get("completion_tokens", 0) for s in stats]) if is_llm else None,
            llm_seconds=_mean([s.get("llm_time_s", 0.0) for s in stats]) if is_llm else None,
            fallback_share=(sum(fallbacks) / max(1, sum(proposals))) if is_llm else None,
        ))
    return rows


@dataclass(frozen=True)
class Bar:
    """One line of the issue's bar: what it asks, the figures, and whether they meet it."""

    claim: str
    figures: str
    met: bool | None  # None: not measurable (a method or seeds missing)
    seeds: int = 0  # the fewest seeds among the methods it compares

    def verdict(self, min_seeds: int = 5) -> str:
        """MET / MISSED / not measured; 'provisional' below ``min_seeds`` seeds."""
        if self.met is None:
            return "not measured"
        word = "MET" if self.met else "MISSED"
        return word if self.seeds >= min_seeds else f"provisional ({self.seeds} seed(s)), {word}"


def bar_checks(rows: Sequence[MethodRow], runs: Sequence[Run], *, at: int = 8, llm_tag: str = "") -> list[Bar]:
    """The four bars of the comparison, checked on the measured figures of the LLM ``llm_tag``
    ('' = the embedded one; '[remote]' for a --llm URL run)."""
    by = {r.method.replace(llm_tag, "") if llm_tag else r.method: r
          for r in rows if not llm_tag or _llm_tag(r.method) in ("", llm_tag)}
    icrl, random_, static = by.get("icrl"), by.get("random"), by.get("static")
    bars = []
    m = lambda row, field: _mean(getattr(row, field)) if row else None  # noqa: E731
    icrl8 = m(icrl, "best8")
    others = {name: m(by.get(name), "best") for name in ("random", "optuna", "optuna-slots") if name in by}
    if icrl8 is not None and "random" in others and ("optuna" in others or "optuna-slots" in others):
        bars.append(Bar(
            f"ICRL's mean best at T={at} >= random's and Optuna's mean best at their T",
            f"ICRL {icrl8:.3f}; " + ", ".join(f"{k} {v:.3f} (T={by[k].budget})" for k, v in others.items()),
            all(icrl8 >= v - 1e-12 for v in others.values()), min(icrl.seeds, *(by[k].seeds for k in others))))
    else:
        bars.append(Bar(f"ICRL's mean best at T={at} >= random's and Optuna's", "not measured", None))
    if icrl and random_:
        grouped = _by_seed(runs)
        p, n = _p({s: best_at(r, at) for s, r in grouped["icrl" + llm_tag].items()},
                  {s: best_at(r, at) for s, r in grouped["random"].items()})
        r8 = m(random_, "best8")
        bars.append(Bar(f"ICRL beats random at T={at}, paired p < 0.05",
                        f"ICRL {icrl8:.3f} vs random {r8:.3f}, p = {p if p is None else round(p, 4)} (n={n})",
                        None if p is None else bool(p < 0.05 and icrl8 > r8), n))
    else:
        bars.append(Bar(f"ICRL beats random at T={at}, paired p < 0.05", "not measured", None))
    if icrl and static:
        s8 = m(static, "best8")
        pool8 = m(by.get("pool"), "best8")
        bars.append(Bar(f"ICRL's mean >= Static prompts' mean at T={at} (paper: ICRL >= Prompt pool >= Static)",
                        f"ICRL {icrl8:.3f}, pool {'–' if pool8 is None else f'{pool8:.3f}'}, static {s8:.3f}",
                        bool(icrl8 >= s8 - 1e-12), min(icrl.seeds, static.seeds)))
    else:
        bars.append(Bar(f"ICRL's mean >= Static prompts' mean at T={at}", "not measured", None))
    if icrl and random_ and icrl.trials_to_reach is not None and random_.trials_to_reach is not None:
        bars.append(Bar(
            "ICRL reaches the common target in <= 1/4 of random's trials",
            f"ICRL {icrl.trials_to_reach:.1f} trials ({icrl.reached}/{icrl.seeds} reached), random "
            f"{random_.trials_to_reach:.1f} ({random_.reached}/{random_.seeds}); unreached = budget + 1",
            bool(icrl.trials_to_reach <= random_.trials_to_reach / 4.0), min(icrl.seeds, random_.seeds)))
    else:
        bars.append(Bar("ICRL reaches the common target in <= 1/4 of random's trials", "not measured", None))
    return bars


SCREENING_HEADERS = ["method", "seeds", "candidates screened", "trained", "Spearman(proxy, full val)",
                     "proxy s / iteration", "trial-s to reach (proxy incl.)", "best val @8"]
SCREENED_TRIAL_HEADERS = ["method", "seed", "trial", "classes", "candidates", "proxy score", "full val"]


def screened_trials(runs: Sequence[Run]) -> list[tuple[str, int, Mapping[str, Any]]]:
    """(method, seed, trial row) of every screened trial that got a val accuracy."""
    out = []
    for run in runs:
        for trial in run.get("trials") or []:
            screen = trial.get("screen") or {}
            if screen.get("proxy_score") is not None and _finite(trial.get("val_accuracy")):
                out.append((run["benchmark"]["method"], int(run["benchmark"]["seed"]), trial))
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def seconds_to_reach_total(run: Run, target: float) -> tuple[float, bool]:
    """Trial-seconds (training + a screened proposal's proxy seconds) up to the first trial at or
    above ``target``; an unreached run counts all its trial-seconds (a lower bound). -> (s, reached)."""
    total = 0.0
    for trial in run.get("trials") or []:
        total += float(trial.get("time_s") or 0.0)
        if _finite(trial.get("val_accuracy")) and trial["val_accuracy"] >= target - 1e-12:
            return total, True
    return total, False


def screening_rows(runs: Sequence[Run], target: float, *, at: int = 8) -> list[list[Any]]:
    """Per screened method (and plain ICRL, the reference): what screening cost and bought."""
    by = _by_seed(runs)
    rows = []
    screened = screened_trials(runs)
    for method in sorted(by):
        seeded = by[method]
        candidates = sum(len(r.get("screened") or []) for r in seeded.values())
        if not candidates and method.split("[")[0] != "icrl":
            continue
        pairs = [(t["screen"]["proxy_score"], t["val_accuracy"]) for m, _, t in screened if m == method]
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None
        iterations = [t for r in seeded.values() for t in r.get("trials") or [] if t.get("screen")]
        proxy_s = _mean([float(t["screen"].get("proxy_seconds") or 0.0) for t in iterations])
        reach_s = [seconds_to_reach_total(r, target) for r in seeded.values()]
        rows.append([
            method, len(seeded), candidates or "–", len(pairs) or "–", "–" if rho is None else f"{rho:.3f}",
            "–" if proxy_s is None else f"{proxy_s:.1f}",
            f"{_mean([s for s, _ in reach_s]):.0f} ({sum(ok for _, ok in reach_s)}/{len(reach_s)} reached)",
            fmt([best_at(r, at) for r in seeded.values()]),
        ])
    return rows


def screening_bar(runs: Sequence[Run], method: str, target: float, *, reference: str = "icrl", at: int = 8
                  ) -> Bar:
    """Screened ICRL reaches the target in <= 1/2 of plain ICRL's trial-seconds, with a best@8 not lower."""
    by = _by_seed(runs)
    claim = f"{method} reaches the target in <= 1/2 of {reference}'s trial-seconds, best@{at} not lower"
    if method not in by or reference not in by:
        return Bar(claim, "not measured", None)
    seeds = sorted(set(by[method]) & set(by[reference]))
    if not seeds:
        return Bar(claim, "not measured (no common seed)", None)
    s_m = _mean([seconds_to_reach_total(by[method][s], target)[0] for s in seeds])
    s_r = _mean([seconds_to_reach_total(by[reference][s], target)[0] for s in seeds])
    b_m = _mean([best_at(by[method][s], at) for s in seeds])
    b_r = _mean([best_at(by[reference][s], at) for s in seeds])
    met = bool(s_m <= s_r / 2.0 and b_m >= b_r - 1e-12)
    return Bar(claim, f"{method} {s_m:.0f} s, best@{at} {b_m:.3f}; {reference} {s_r:.0f} s, best@{at} {b_r:.3f} "
                      f"(target {target:.3f}; unreached runs count all their trial-seconds)", met, len(seeds))


def screened_trial_rows(runs: Sequence[Run]) -> list[list[Any]]:
    """Proxy against full val accuracy for every screened candidate that got a trial."""
    return [[m, seed, t.get("iteration"), ", ".join(t.get("classes") or []), t["screen"].get("candidates"),
             f"{t['screen']['proxy_score']:.3f}", f"{t['val_accuracy']:.3f}"]
            for m, seed, t in sorted(screened_trials(runs), key=lambda x: (x[0], x[1], x[2].get("iteration") or 0))]


def table8_rows(results: Mapping[str, Mapping[int, Mapping[str, Any]]], *, reference: str = "rgb") -> list[list[Any]]:
    """Table-8-style rows: per class set, val and test mean ± std, 95% CI (t) of test, paired p vs ``reference``.

    ``results[name][seed]`` holds ``classes``, ``val_accuracy`` and ``test_accuracy`` of one retrain.
    """
    rows = []
    ref = results.get(reference, {})
    for name, seeded in results.items():
        if not seeded:
            continue
        seeds = sorted(seeded)
        classes = seeded[seeds[0]].get("classes") or []
        test = [seeded[s]["test_accuracy"] for s in seeds]
        val = [seeded[s]["val_accuracy"] for s in seeds]
        summary = summarize(test)
        ci = "–" if summary.n < 2 else f"[{summary.ci_low:.3f}, {summary.ci_high:.3f}]"
        p_val = p_test = "–"
        if name != reference:
            p1, _ = _p({s: seeded[s]["val_accuracy"] for s in seeds}, {s: r["val_accuracy"] for s, r in ref.items()})
            p2, _ = _p({s: seeded[s]["test_accuracy"] for s in seeds}, {s: r["test_accuracy"] for s, r in ref.items()})
            p_val = "–" if p1 is None else f"{p1:.2g}"
            p_test = "–" if p2 is None else f"{p2:.2g}"
        rows.append([name, ", ".join(classes) or "(none: RGB only)", len(classes), fmt(val), fmt(test), ci,
                     p_val, p_test])
    return rows


TABLE8_HEADERS = ["set", "classes", "C", "val (mean ± std)", "test (mean ± std)", "test 95% CI (t)",
                  "p vs RGB (val)", "p vs RGB (test)"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A padded markdown table."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])])
