"""The search service end to end at tiny scale: `a2o search` (ICRL over a scripted LLM) is
interrupted with Ctrl-C after its first trial, then `--resume` finishes it; best/ and the table."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.fake_llm_server import FakeLLMServer


def tiny_service_dict(root, **search) -> dict:
    return {
        "data": {"dataset": "synthetic", "root": str(root / "synth"), "synth_preset": "tiny",
                 "num_frames": 8, "resolution": 32},
        "model": {"tiny_hidden": 32, "tiny_layers": 1},
        "train": {"epochs": 1, "final_epochs": 1, "batch_size": 4, "num_workers": 1,
                  "cpus_per_worker": 0.5, "lr": 1e-3, "eval_segments": 2, "eval_views": 1},
        "search": {"searcher": "icrl", "num_trials": 3, "max_classes": 4, **search},
        "llm": {"api_key_env": "A2O_TEST_KEY", "response_format": "text"},
        "storage": {"root": str(root / "run"), "experiment_name": "svc"},
        "ray": {"num_cpus": 2},
    }


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_search_interrupt_then_resume(ray_local, tmp_path, monkeypatch, capsys):
    from a2o.cli import main

    server = FakeLLMServer(["ball\nhand\nbox", "- Cup\n- hand\n- ../../etc"], default="ball\ncup\nfloor")
    monkeypatch.setenv("A2O_TEST_KEY", "sk-secret-do-not-log")
    config = tiny_service_dict(tmp_path)
    config["llm"]["base_url"] = server.url
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "first_run.log"

    # 1. `a2o search` in its own process (own Ray), interrupted once trial 1 has finished.
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "a2o.cli", "search", "--config", str(path)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )
        try:
            wait_for(lambda: "[trial  1]" in log_path.read_text(), 300, "the first trial")
            proc.send_signal(signal.SIGINT)
            returncode = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    first_log = log_path.read_text()
    assert returncode == 130, first_log[-3000:]
    assert "--resume" in first_log
    assert "sk-secret-do-not-log" not in first_log
    assert not os.path.exists(tmp_path / "run" / "best")
    asked_before_resume = len(server.chat_requests)

    # 2. `--resume` in this process, with the LLM on ANOTHER port (as an embedded server restarts):
    # the restored searcher must talk to this run's endpoint, not the URL pickled by the first run.
    server.stop()
    # Its first reply repeats the first server's second one: trial 2 is "cup, hand" whether it was
    # proposed before the interrupt or after (then by this server); a repeat is re-asked.
    second = FakeLLMServer(["- Cup\n- hand\n- ../../etc", "spoon\nball", "lid\nmop"], default="rug\nbowl")
    config["llm"]["base_url"] = second.url
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert main(["search", "--config", str(path), "--resume"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "best classes" in out and "test" in out
    assert "LLM          : 3 proposals: 3 from the LLM or the config, 0 fallbacks" in out

    root = tmp_path / "run"
    results = json.loads((root / "results.json").read_text())
    trials = results["trials"]
    assert len(trials) == 3
    assert trials[0]["classes"] == ["ball", "hand", "box"]
    # The second reply is sanitised: bullets and case stripped, the path-like text dropped.
    assert trials[1]["classes"] == ["cup", "hand"]
    assert all(t["val_accuracy"] is not None for t in trials)
    assert [t["classes"] for t in trials].count(["ball", "hand", "box"]) == 1  # nothing repeated
    # Trial 3 was proposed after the resume by the new endpoint: an LLM proposal, not a fallback.
    assert len(server.chat_requests) == asked_before_resume and second.chat_requests
    assert trials[2]["source"] == "llm", trials[2]
    # The searcher's counters cover both runs; the console goes on numbering at trial 3.
    stats = results["searcher_stats"]
    assert stats["suggestions"] == 3 and stats["fallbacks"] == 0 and stats["llm_calls"] >= 2
    # (with the old numbering the resumed run called its trials 1 and 2 again)
    log_text = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("search-*.log"))
    numbers = re.findall(r"\[trial +(\d+)\] started +" + re.escape(", ".join(trials[2]["classes"])), log_text)
    assert numbers == ["3"], numbers
    # ... and compares them with the best restored trial, not "first set" again
    assert log_text.count("first set:") == 1, log_text.count("first set:")
    assert "sk-secret-do-not-log" not in (root / "results.json").read_text()
    # Maps of classes seen before the interrupt are reused, not recomputed.
    assert trials[2]["maps_reused"] > 0
    # Each trial row carries its last val confusion matrix (the report draws the best one).
    labels = results["final"]["labels"]
    for t in trials:
        matrix = t["confusion"]
        assert len(matrix) == len(labels) and all(len(row) == len(labels) for row in matrix)
        correct = sum(matrix[i][i] for i in range(len(labels)))
        assert abs(correct / sum(map(sum, matrix)) - t["val_accuracy"]) < 1e-9

    table = (root / "trials.txt").read_text().splitlines()
    assert len(table) == 4 and "ball, hand, box" in table[1]
    assert sorted(os.listdir(root / "best")) == ["config.yaml", "metrics.json", "model"]
    metrics = json.loads((root / "best" / "metrics.json").read_text())
    assert metrics["classes"] == results["best_trial"]["classes"]
    assert metrics["test"]["num_samples"] == 4  # the tiny preset's test split
    second.stop()


def _train_worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::RayTrainWorker"):
            pids.append(int(entry))
    return pids


def test_killed_worker_is_retried_and_search_completes(ray_local, tmp_path):
    from a2o.config import config_from_dict
    from a2o.service import run_service

    config = tiny_service_dict(tmp_path, searcher="random", num_trials=2, trial_retries=1,
                               vocabulary=["ball", "hand", "box", "cup"])
    config["train"]["epochs"] = 2
    cfg = config_from_dict(config)
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for pid in _train_worker_pids():
                time.sleep(3)  # mid-trial: the worker is training by now
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    continue
                break
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcome = run_service(cfg, final_training=False)
    thread.join(timeout=1)
    assert killed, "no Ray Train worker was found to kill"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["trials"]) == 2
    assert all(t["val_accuracy"] is not None for t in results["trials"]), results["trials"]
    assert outcome["best"] is not None


@pytest.mark.slow
def test_screened_icrl_search_trains_the_best_proxy_candidate(ray_local, tmp_path, monkeypatch):
    """search.screen_candidates: 2 through the service: the LLM gives 2 sets per iteration, the
    map-only proxy (a2o.train.proxy.ConfigProxy, detecting new classes through the map cache) scores
    both, and the trial trains the better one; results.json keeps every candidate's proxy score."""
    from a2o.config import config_from_dict
    from a2o.service import run_service

    server = FakeLLMServer(["ball, hand\ncup, box", "ball, hand\nfloor, cup, ../etc"], default="hand, box\nball")
    monkeypatch.setenv("A2O_TEST_KEY", "sk-secret-do-not-log")
    config = tiny_service_dict(tmp_path, num_trials=2, screen_candidates=2)
    config["llm"]["base_url"] = server.url
    outcome = run_service(config_from_dict(config), final_training=False)
    server.stop()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    trials = results["trials"]
    screened = results["searcher_stats"]["screened"]
    assert [s["iteration"] for s in screened] == [1, 1, 2] and all(s["proxy_score"] is not None for s in screened)
    # iteration 2: ball+hand repeats trial 1 or is running, so it is dropped before screening;
    # floor+cup keeps its two safe classes
    assert trials[0]["classes"] in (["ball", "hand"], ["cup", "box"])
    assert trials[1]["classes"] == ["floor", "cup"]
    for trial, winner in zip(trials, [max(screened[:2], key=lambda s: s["proxy_score"]), screened[2]], strict=True):
        assert trial["classes"] == winner["classes"] and winner["sent"]
        assert trial["screen"]["candidates"] >= 1 and trial["screen"]["proxy_score"] == winner["proxy_score"]
        assert trial["wall_time_s"] > trial["screen"]["proxy_seconds"] > 0  # training + the proxy's seconds
    assert results["searcher_stats"]["screening"]["k"] == 2
    assert outcome["best"] is not None
    assert "sk-secret-do-not-log" not in (tmp_path / "run" / "results.json").read_text()


def test_unreachable_llm_fails_at_start(ray_local, tmp_path):
    from a2o.config import config_from_dict
    from a2o.errors import LLMUnavailableError
    from a2o.service import preflight_llm
    from tests.fake_llm_server import dead_url

    config = tiny_service_dict(tmp_path)
    config["llm"]["base_url"] = dead_url()
    config["llm"]["max_retries"] = 0
    cfg = config_from_dict(config)
    with pytest.raises(LLMUnavailableError, match="llm.on_unreachable=fallback"):
        preflight_llm(cfg, None)
    config["llm"]["on_unreachable"] = "fallback"
    preflight_llm(config_from_dict(config), None)  # logged, not raised


def test_over_budget_config_fails_at_once(ray_local, tmp_path):
    from a2o.config import config_from_dict
    from a2o.errors import ResourceError
    from a2o.service import run_service

    config = tiny_service_dict(tmp_path)
    config["train"]["num_workers"] = 16
    started = time.monotonic()
    with pytest.raises(ResourceError, match="16 worker"):
        run_service(config_from_dict(config))
    assert time.monotonic() - started < 10


def test_trial_actors_are_reused_only_without_early_stopping(tmp_path):
    from a2o.config import config_from_dict
    from a2o.service import build_scheduler
    from a2o.train.trial import reuse_trial_actors

    fifo = config_from_dict(tiny_service_dict(tmp_path, scheduler="fifo"))
    asha = config_from_dict(tiny_service_dict(tmp_path, scheduler="asha"))
    assert reuse_trial_actors(build_scheduler(fifo)) is True
    # An ASHA-stopped trial is still inside TorchTrainer.fit(): its actor must end, not be parked.
    assert reuse_trial_actors(build_scheduler(asha)) is False


class _FakeResult:
    """The part of ray.tune.Result that service.trial_rows reads."""

    def __init__(self, config, metrics, *, error=None, history=None, path="/tune/exp/run_trial_abc"):
        import pandas as pd

        self.config, self.metrics, self.error, self.path = config, metrics, error, path
        self.metrics_dataframe = pd.DataFrame(history) if history is not None else None


def test_trial_rows_are_records_plus_service_columns_and_the_best_is_scored():
    from a2o.records import RECORD_VERSION, TrialRecord, TrialRow
    from a2o.service import best_row, summary_table, trial_rows

    results = [
        _FakeResult({"classes": ["ball", "hand"], "proposal_source": "initial", "lr": 0.01},
                    {"val_accuracy": 0.5, "epoch": 2, "time_total_s": 3.0, "maps_computed": 6, "trial_id": "a"},
                    history={"val_accuracy": [0.25, 0.5]}),
        _FakeResult({"classes": ["cup"], "proposal_source": "llm"},  # ASHA stopped it after 1 of 2 epochs
                    {"val_accuracy": 0.75, "epoch": 1, "time_total_s": 1.0, "maps_reused": 3, "trial_id": "b"}),
        _FakeResult({"classes": ["box"], "proposal_source": "llm"},  # failed after reporting an epoch
                    {"val_accuracy": 0.9, "epoch": 1, "trial_id": "c"}, error=RuntimeError("worker died\ntrace")),
        _FakeResult({"classes": [], "proposal_source": "fallback:unusable"},
                    {"val_accuracy": float("nan"), "epoch": 2, "trial_id": "d"}),
    ]
    rows = trial_rows(results, epochs_per_trial=2)
    assert [r.record.status for r in rows] == ["ok", "early_stopped", "error", "invalid"]
    first = rows[0]
    assert first.record.class_set.texts == ("ball", "hand") and dict(first.record.hyperparameters) == {"lr": 0.01}
    assert first.val_accuracy_per_epoch == (0.25, 0.5) and first.maps_computed == 6 and first.record.wall_time_s == 3.0
    assert rows[2].error == "worker died" and rows[2].record.val_accuracy is None
    best = best_row(rows)
    assert best is rows[1]  # early-stopped trials are scored; errored ones are not
    data = best.to_dict()
    assert data["record_version"] == RECORD_VERSION and data["iteration"] == 2 and data["maps_reused"] == 3
    assert TrialRow.from_dict(data) == best and TrialRecord.from_dict(data) == best.record
    hostile = trial_rows([_FakeResult({"classes": ["ball", "$(id)"]}, {}, error=None)], epochs_per_trial=2)[0]
    # a third-party searcher's bad text: the trial is an error row, the other rows are kept
    assert hostile.record.status == "error" and hostile.record.class_set.texts == ()
    assert "safe characters" in hostile.error
    table = summary_table(rows).splitlines()
    assert len(table) == 5 and "ERROR" in table[3] and "n/a" in table[4] and "ball, hand" in table[1]
    assert best_row(rows[2:]) is None


def test_rows_follow_trial_creation_order_and_the_proposal_summary_counts_fallback_causes():
    from a2o.service import _creation_order, proposal_summary

    results = [_FakeResult({"classes": ["cup"]}, {"trial_id": f"ab12c_0000{n}", "val_accuracy": 0.1})
               for n in (3, 1, 2)]
    assert [r.metrics["trial_id"][-1] for r in _creation_order(results)] == ["1", "2", "3"]
    stats = {"suggestions": 4, "fallbacks": 2, "per_suggestion": [
        {"source": "llm"}, {"source": "fallback:unreachable"}, {"source": "fallback:unusable"}, {"source": "initial"}]}
    assert proposal_summary(stats) == "4 proposals: 2 from the LLM or the config, 2 fallbacks (unreachable 1, unusable 1)"
    assert proposal_summary({}) is None


@pytest.mark.slow
def test_two_searches_at_once_share_one_map_cache(tmp_path):
    """Two `a2o search` processes at once, each with its own storage root and Ray, one map cache
    (storage.maps_root) and overlapping vocabularies: every (video, class) entry is computed by one
    of them only, and every entry's data matches the checksum its marker vouches for."""
    import hashlib

    shared = tmp_path / "maps"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    runs = []
    for name, vocabulary, seed in (("a", ["ball", "hand", "box", "cup"], 0), ("b", ["box", "cup", "floor", "ball"], 1)):
        config = tiny_service_dict(tmp_path / name, searcher="random", num_trials=2, max_classes=4,
                                   vocabulary=vocabulary, seed=seed)
        config["storage"]["maps_root"] = str(shared)
        config["ray"]["num_cpus"] = 1
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed below
        runs.append((name, log, subprocess.Popen([sys.executable, "-m", "a2o.cli", "search", "--config", str(path)],
                                                 stdout=log, stderr=subprocess.STDOUT, env=env)))
    try:
        for name, _log, proc in runs:
            assert proc.wait(timeout=900) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for _, log, proc in runs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    trials = [t for name in ("a", "b") for t in json.loads((tmp_path / name / "run" / "results.json").read_text())["trials"]]
    markers = list(shared.rglob("*.done"))
    computed = sum(t["maps_computed"] for t in trials)
    assert markers and computed == len(markers), (computed, len(markers))  # each entry computed once
    for marker in markers:
        meta = json.loads(marker.read_text())
        data = marker.with_suffix(".npy").read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], marker  # no corrupt entry
    assert not list(shared.rglob("*.lock"))
