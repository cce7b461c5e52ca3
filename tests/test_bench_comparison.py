"""The searcher comparison's tables (benchmarks/comparison.py) on hand-made runs, and a quick end-to-end run."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest

from benchmarks.comparison import (
    bar_checks,
    best_at,
    common_target,
    method_rows,
    reach,
    table8_rows,
)


def run(method: str, seed: int, values: list[float | None], *, seconds: float = 10.0, stats: dict | None = None,
        stopped: int = 0) -> dict:
    trials = [{"iteration": i + 1, "val_accuracy": v, "time_s": seconds, "stopped_early": i < stopped}
              for i, v in enumerate(values)]
    scored = [t for t in trials if t["val_accuracy"] is not None]
    best = max(scored, key=lambda t: t["val_accuracy"]) if scored else None
    return {"benchmark": {"method": method, "seed": seed}, "trials": trials, "best_trial": best,
            "final": {"test": {"accuracy": (best["val_accuracy"] - 0.01) if best else None}},
            "searcher_stats": stats or {}, "searcher": method.split("+")[0], "scheduler": "fifo"}


def test_best_at_reach_and_target():
    r = run("random", 0, [0.1, None, 0.3, 0.2, float("nan"), 0.5])
    assert best_at(r) == 0.5 and best_at(r, 3) == 0.3 and best_at(r, 1) == 0.1
    assert reach(r, 0.3) == (3, 30.0) and reach(r, 0.9) == (None, None)
    assert common_target([r, run("icrl", 0, [0.2]), run("icrl", 1, [0.4])]) == 0.4
    assert common_target([]) == 1.0


def test_method_rows_pair_seeds_and_read_best_at_8_of_a_longer_run():
    llm_stats = {"llm_calls": 9, "prompt_tokens": 900, "completion_tokens": 100, "llm_time_s": 30.0, "fallbacks": 2}
    runs = [run("icrl", s, [0.3, 0.5 + 0.01 * s, 0.6 + 0.02 * s] + [0.1] * 5, stats=llm_stats) for s in range(4)]
    # random: 20 trials, its best comes after trial 8, so best@8 and best@20 differ
    runs += [run("random", s, [0.2 + 0.01 * s] * 8 + [0.9] * 12) for s in range(4)]
    runs += [run("static", s, [0.4] * 8) for s in range(3)]  # one seed fewer: paired over 3
    rows = {r.method: r for r in method_rows(runs, ["icrl", "static", "random", "optuna"], target=0.6)}
    assert set(rows) == {"icrl", "static", "random"}  # a method without runs has no row
    icrl, rnd, static = rows["icrl"], rows["random"], rows["static"]
    assert rnd.budget == 20 and icrl.budget == 8
    assert rnd.best == [0.9] * 4 and rnd.best8 == pytest.approx([0.2, 0.21, 0.22, 0.23])
    assert icrl.p_random8 is not None and icrl.p_random8 < 0.001 and rnd.p_random8 is None
    assert icrl.p_static8 is not None and static.p_static8 is None
    # reach 0.6: icrl at trial 3 on every seed; random at trial 9; static never (budget 8 + 1)
    assert icrl.trials_to_reach == 3 and rnd.trials_to_reach == 9 and static.trials_to_reach == 9
    assert icrl.reached == 4 and static.reached == 0 and icrl.seconds_to_reach == 30.0
    assert icrl.llm_calls == 9 and icrl.llm_tokens == 1000 and rnd.llm_calls is None
    assert icrl.fallback_share == pytest.approx(8 / 32)
    bars = bar_checks(list(rows.values()), runs)
    # random's best@20 (0.9) beats ICRL's @8; ICRL needs 3 trials, more than a quarter of random's 9
    assert [b.met for b in bars] == [None, True, True, False]  # bar 1 needs Optuna too
    rows["optuna"] = method_rows([run("optuna", s, [0.3] * 20) for s in range(4)], ["optuna"], target=0.6)[0]
    bars = bar_checks(list(rows.values()), runs)
    assert [b.met for b in bars] == [False, True, True, False]
    assert "random 0.900 (T=20)" in bars[0].figures and bars[2].seeds == 3
    assert bars[1].verdict(min_seeds=4) == "MET" and bars[1].verdict(min_seeds=5) == "provisional (4 seed(s)), MET"
    assert bar_checks([], [])[0].verdict() == "not measured"


def test_bars_are_not_measured_without_the_methods():
    rows = method_rows([run("random", 0, [0.2])], ["random"], target=0.2)
    assert all(b.met is None for b in bar_checks(rows, [run("random", 0, [0.2])]))


def test_table8_rows_ci_and_paired_p():
    results = {
        "rgb": {s: {"classes": [], "val_accuracy": 0.1, "test_accuracy": 0.08 + 0.01 * s} for s in range(5)},
        "best icrl": {s: {"classes": ["spoon", "floor"], "val_accuracy": 0.3 + 0.01 * s,
                          "test_accuracy": 0.28 + 0.012 * s} for s in range(5)},
    }
    rgb, best = table8_rows(results)
    assert rgb[0] == "rgb" and rgb[1] == "(none: RGB only)" and rgb[2] == 0 and rgb[6] == "–"
    assert best[1] == "spoon, floor" and best[2] == 2
    low, high = (float(x) for x in best[5].strip("[]").split(", "))
    mean = sum(0.28 + 0.012 * s for s in range(5)) / 5
    assert low < mean < high and math.isclose((low + high) / 2, mean, abs_tol=1e-3)
    assert float(best[7]) < 1e-4  # test differs by 0.20 + 0.002 s on every seed


@pytest.mark.slow
def test_quick_run_end_to_end_with_the_scripted_llm(tmp_path):
    """The whole benchmark on the tiny world: searches, OOD source, Table 8, tables, resume."""
    from benchmarks.searchers import main

    out, kept = tmp_path / "bench", tmp_path / "kept"
    assert main(["--quick", "--llm", "fake", "--searchers", "icrl,static,ood,random", "--asha", "",
                 "--out", str(out), "--keep", str(kept)]) == 0
    assert (kept / "runs" / "random_seed1" / "results.json").exists() and (kept / "table8").is_dir()
    comparison = json.loads((out / "comparison.json").read_text())
    titles = [t["title"] for t in comparison["tables"]]
    assert titles[0] == "Per method" and titles[2].startswith("Table 8")
    methods = [row[0] for row in comparison["tables"][0]["rows"]]
    assert methods == ["icrl[fake]", "static[fake]", "ood[fake]", "random"]
    run0 = json.loads((out / "runs" / "icrl_fake_seed0" / "results.json").read_text())
    assert run0["benchmark"]["llm_endpoint"]["model"].startswith("scripted")
    assert run0["trials"][0]["confusion_labels"] and run0["trials"][0]["confusion"]
    assert (out / "ood_source" / "runs" / "icrl_fake_seed0" / "results.json").exists()
    summary = (out / "summary.md").read_text()
    shutil.rmtree(out / "runs")  # another machine: only the kept copies remain
    shutil.rmtree(out / "table8")
    assert main(["--quick", "--llm", "fake", "--searchers", "icrl,static,ood,random", "--asha", "",
                 "--out", str(out), "--resume", "--keep", str(kept)]) == 0
    reused = int(re.search(r"\((\d+) results reused by --resume\)", (out / "summary.md").read_text()).group(1))
    assert reused >= 9  # 8 searches + the OOD source (+ the Table-8 retrains): nothing was rerun
    assert summary.split("command:")[0] == (out / "summary.md").read_text().split("command:")[0]
    assert main(["--quick", "--llm", "fake", "--searchers", "icrl,static,ood,random", "--asha", "",
                 "--out", str(out), "--summarize"]) == 0  # reads only: no LLM, no training
    assert summary.split("command:")[0] == (out / "summary.md").read_text().split("command:")[0]


def test_a_free_job_takes_a_task_of_the_other_kind_within_the_earliest_seed():
    from benchmarks.searchers import Task, _start_order

    def task(key, llm, seed=0):
        return Task(key, "", dict, (), uses_llm=llm, seed=seed)

    pending = [task("icrl", True), task("static", True), task("random", False), task("icrl1", True, 1),
               task("random1", False, 1)]
    order = lambda running: [t.key for t in _start_order(pending, running)]  # noqa: E731
    assert order([task("pool", True)]) == ["random", "icrl", "static", "icrl1", "random1"]
    assert order([task("optuna", False)]) == ["icrl", "static", "random", "icrl1", "random1"]
    assert order([]) == ["icrl", "static", "random", "icrl1", "random1"]
    assert _start_order([], [task("pool", True)]) == []


def test_run_tasks_waits_for_prerequisites_reuses_kept_results_and_skips_orphans(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.searchers import Task, run_tasks

    def job(name):
        return {"name": name}

    def tasks():
        return [Task("source", str(tmp_path / "out" / "source.json"), job, ("source",), uses_llm=True),
                Task("ood", str(tmp_path / "out" / "ood.json"), job, ("ood",), after="source", uses_llm=True),
                Task("random", str(tmp_path / "out" / "random.json"), job, ("random",)),
                Task("orphan", str(tmp_path / "out" / "orphan.json"), job, ("orphan",), after="missing")]

    keep = lambda path: path.replace("/out/", "/kept/")  # noqa: E731
    seen: list[tuple[str, bool]] = []
    with ThreadPoolExecutor(2) as pool:
        run_tasks(tasks(), jobs=2, pool=pool, resume=False, keep=keep,
                  on_done=lambda task, result, reused: seen.append((task.key, reused)))
    assert sorted(seen) == [("ood", False), ("random", False), ("source", False)]  # the orphan is skipped
    assert seen.index(("source", False)) < seen.index(("ood", False))
    assert json.loads((tmp_path / "kept" / "ood.json").read_text()) == {"name": "ood"}
    shutil.rmtree(tmp_path / "out")  # another machine: only the kept copies
    seen.clear()
    run_tasks(tasks(), jobs=2, pool=None, resume=True, keep=keep,
              on_done=lambda task, result, reused: seen.append((task.key, reused)))
    assert sorted(seen) == [("ood", True), ("random", True), ("source", True)]
    assert (tmp_path / "out" / "random.json").exists()


# ---------------------------------------------------------------------------------------------
# a search interrupted mid-way continues after its last finished trial (benchmarks/searchers.py)


def _stand_in_bench():
    """A Bench with no frames: run_search's searchers, scheduler and bookkeeping are real; the
    trials are a deterministic stand-in (see _stand_in_trial)."""
    from types import SimpleNamespace

    from a2o.config import config_from_dict
    from benchmarks.searchers import VOCABULARY

    cfg = config_from_dict({"train": {"epochs": 4},
                            "search": {"max_classes": 4, "vocabulary": list(VOCABULARY[:40]),
                                       "task_description": "stand-in world"}})
    return SimpleNamespace(cfg=cfg, action_names=["sweeping", "stirring"], labels=["sweeping", "stirring"],
                           frames_root="/nonexistent/frames", world="stand-in",
                           factory=SimpleNamespace(fingerprint="stand-in"))


def _stand_in_trial(calls: list, interrupt_at: int | None):
    """run_trial's stand-in: val accuracy per epoch is a function of (classes, lr, seed) alone."""
    import hashlib

    from benchmarks.searchers import TrialRun

    def trial(bench, class_set, *, lr, weight_decay, seed, on_epoch):
        calls.append(list(class_set))
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt  # a session's end, mid-trial
        digest = hashlib.sha256(f"{list(class_set)}|{lr}|{seed}".encode()).digest()
        metrics = []
        for epoch in range(1, bench.cfg.train.epochs + 1):
            value = round(digest[epoch] / 255 * epoch / bench.cfg.train.epochs, 4)
            metrics.append({"epoch": epoch, "val_accuracy": value, "classwise_accuracy": {"sweeping": value},
                            "confusion": [[1, 0], [0, 1]], "confusion_labels": bench.labels,
                            "training_iteration": epoch})
            if on_epoch(metrics[-1]):
                break
        return TrialRun(metrics, model=SimpleModel(value), wall_s=1.0, maps_computed=0, maps_reused=0,
                        stopped_early=len(metrics) < bench.cfg.train.epochs)

    return trial


class SimpleModel:
    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize("searcher, scheduler, llm", [("random", "asha", False), ("optuna-slots", "fifo", False),
                                                      ("icrl", "fifo", True)])
def test_an_interrupted_search_resumes_after_its_last_finished_trial(tmp_path, monkeypatch, searcher, scheduler, llm):
    import benchmarks.searchers as bench_searchers
    from benchmarks.searchers import LLMChoice, Method, run_search

    bench = _stand_in_bench()
    monkeypatch.setattr(bench_searchers, "evaluate_test",
                        lambda bench, class_set, model: {"accuracy": model.value - 0.01})
    method = Method(searcher, scheduler, LLMChoice("fake") if llm else None)
    progress = str(tmp_path / "progress.json")

    def search(interrupt_at=None, path=progress):
        calls: list = []
        monkeypatch.setattr(bench_searchers, "run_trial", _stand_in_trial(calls, interrupt_at))
        try:
            return run_search(bench, method, seed=3, trials=10, cache_dir=str(tmp_path), progress_path=path), calls
        except KeyboardInterrupt:
            return None, calls

    straight, straight_calls = search(path=None)  # never interrupted, no checkpoint
    assert len(straight_calls) == 10 and not (tmp_path / "progress.json").exists()
    interrupted, calls = search(interrupt_at=7)
    assert interrupted is None and len(calls) == 7
    resumed, calls = search()
    # trials 1-6 replayed from the checkpoint; the interrupted 7th and the rest trained
    assert calls == straight_calls[6:]
    assert resumed["benchmark"]["checkpointed_trials"] == 6
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time_s",)} for r in rows]  # noqa: E731
    assert strip(resumed["trials"]) == strip(straight["trials"])
    assert resumed["best_trial"]["trial_id"] == straight["best_trial"]["trial_id"]
    assert resumed["final"] == straight["final"] and resumed["final_at"] == straight["final_at"]
    if scheduler == "asha":  # the scheduler saw the replayed epochs: the same trials stopped early
        assert any(r["stopped_early"] for r in resumed["trials"])
    if llm:  # the searcher's own counters cover the whole search, replayed calls included
        assert resumed["searcher_stats"]["llm_calls"] == straight["searcher_stats"]["llm_calls"]


def test_a_search_cut_by_a_session_end_resumes_from_the_kept_copy_in_a_fresh_checkout(tmp_path, monkeypatch):
    """--keep mirrors the checkpoint and the LLM replay cache after every trial: a new checkout,
    with nothing but the kept folder, replays the finished trials and trains only the rest."""
    import shutil

    import benchmarks.searchers as bench_searchers
    from benchmarks.searchers import LLMChoice, Method, run_search

    bench = _stand_in_bench()
    monkeypatch.setattr(bench_searchers, "evaluate_test", lambda bench, class_set, model: {"accuracy": 0.0})
    method = Method("icrl", "fifo", LLMChoice("fake"))
    keep = tmp_path / "keep"

    def search(work, interrupt_at=None, keep_dir=None):
        calls: list = []
        monkeypatch.setattr(bench_searchers, "run_trial", _stand_in_trial(calls, interrupt_at))
        try:
            result = run_search(bench, method, seed=3, trials=8, cache_dir=str(work / "llm_replay"),
                                progress_path=str(work / "runs" / "icrl_seed3" / "progress.json"), keep_dir=keep_dir)
        except KeyboardInterrupt:
            result = None
        return result, calls

    straight, straight_calls = search(tmp_path / "straight")
    # The scripted LLM needs no replay cache; a real endpoint's replies (stand-in file) are mirrored.
    (tmp_path / "session1" / "llm_replay").mkdir(parents=True)
    (tmp_path / "session1" / "llm_replay" / "icrl_seed3.jsonl").write_text('{"reply": 1}\n')
    _, calls = search(tmp_path / "session1", interrupt_at=5, keep_dir=str(keep))
    assert len(calls) == 5
    kept = json.loads((keep / "runs" / "icrl_seed3" / "progress.json").read_text())
    assert len(kept["entries"]) == 4
    assert (keep / "llm_replay" / "icrl_seed3.jsonl").read_text() == '{"reply": 1}\n'
    # The next session: a fresh checkout holds only the kept folder (what git carried).
    fresh = tmp_path / "session2"
    shutil.copytree(keep, fresh)
    resumed, calls = search(fresh, keep_dir=str(keep))
    assert calls == straight_calls[4:]  # trials 1-4 replayed, the cut 5th and the rest trained
    assert resumed["benchmark"]["checkpointed_trials"] == 4
    assert [t["classes"] for t in resumed["trials"]] == [t["classes"] for t in straight["trials"]]


def test_a_checkpoint_of_another_search_or_a_corrupt_one_is_ignored_and_logged(tmp_path, monkeypatch, caplog):
    import benchmarks.searchers as bench_searchers
    from benchmarks.searchers import Method, SearchProgress, run_search

    bench = _stand_in_bench()
    monkeypatch.setattr(bench_searchers, "evaluate_test", lambda bench, class_set, model: {"accuracy": 0.0})
    calls: list = []
    monkeypatch.setattr(bench_searchers, "run_trial", _stand_in_trial(calls, None))
    path = tmp_path / "progress.json"
    run_search(bench, Method("random", "fifo", None), seed=0, trials=3, progress_path=str(path))
    assert len(calls) == 3 and len(json.loads(path.read_text())["entries"]) == 3
    # another seed's search must not read this checkpoint
    assert SearchProgress.load(str(path), method="random", seed=1, trials=3).entries == []
    assert "belongs to" in caplog.text
    path.write_text('{"version": 1, "key": ')  # truncated
    caplog.clear()
    assert SearchProgress.load(str(path), method="random", seed=0, trials=3).entries == []
    assert "unreadable search checkpoint" in caplog.text
    calls.clear()
    run_search(bench, Method("random", "fifo", None), seed=0, trials=3, progress_path=str(path))
    assert len(calls) == 3  # started over, and the checkpoint is whole again
    assert len(json.loads(path.read_text())["entries"]) == 3


def test_screening_rows_spearman_and_the_half_the_seconds_bar():
    from a2o.train.stats import spearman
    from benchmarks.comparison import (
        screened_trial_rows,
        screening_bar,
        screening_rows,
        seconds_to_reach_total,
    )

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.866, abs=1e-3)  # a tie shares its mean rank
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None

    def screened(method, seed, values, proxies, seconds):
        r = run(method, seed, values, seconds=seconds)
        for trial, proxy in zip(r["trials"], proxies, strict=True):
            trial["screen"] = {"candidates": 4, "proxy_score": proxy, "proxy_seconds": 2.0}
        r["screened"] = [{}] * (4 * len(values))
        return r

    runs = [run("icrl", s, [0.1, 0.2, 0.5], seconds=100.0) for s in range(2)]
    runs += [screened("icrl-k4", s, [0.3, 0.5, 0.4], [0.2, 0.6, 0.5], 40.0) for s in range(2)]
    assert seconds_to_reach_total(runs[0], 0.5) == (300.0, True)
    assert seconds_to_reach_total(runs[0], 0.9) == (300.0, False)
    rows = {r[0]: r for r in screening_rows(runs, target=0.5)}
    assert rows["icrl-k4"][2:5] == [24, 6, "1.000"] and rows["icrl-k4"][5] == "2.0"
    assert rows["icrl-k4"][6] == "80 (2/2 reached)" and rows["icrl"][6] == "300 (2/2 reached)"
    bar = screening_bar(runs, "icrl-k4", 0.5)
    assert bar.met is True and bar.seeds == 2 and "icrl-k4 80 s" in bar.figures
    slow = [r if r["benchmark"]["method"] == "icrl" else screened("icrl-k4", r["benchmark"]["seed"], [0.3, 0.4, 0.5],
                                                                    [0.1, 0.2, 0.3], 90.0) for r in runs]
    assert screening_bar(slow, "icrl-k4", 0.5).met is False  # 270 s is more than half of 300 s
    assert screening_bar(runs, "icrl-k8", 0.5).met is None
    assert len(screened_trial_rows(runs)) == 6 and screened_trial_rows(runs)[0][5:] == ["0.200", "0.300"]


def test_proxy_check_reads_only_full_length_finished_trials(tmp_path):
    from benchmarks.proxy_check import trained_sets

    folder = tmp_path / "runs" / "icrl_seed1"
    folder.mkdir(parents=True)
    trials = [{"classes": ["cup"], "val_accuracy": 0.3}, {"classes": ["mop"], "val_accuracy": None},
              {"classes": ["rug"], "val_accuracy": 0.2, "stopped_early": True},
              {"classes": ["pan"], "val_accuracy": float("nan")}]
    (folder / "results.json").write_text(json.dumps({"benchmark": {"method": "icrl", "seed": 1}, "trials": trials}))
    assert trained_sets(str(tmp_path)) == [("icrl", 1, ["cup"], 0.3)]
