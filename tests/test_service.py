"""The search service end to end on tiny A2O-Synth: ICRL over a scripted LLM, best/, resume."""

from __future__ import annotations

import json
import logging
import os

import pytest

from a2o.config import config_from_dict
from tests.fake_llm_server import FakeLLMServer


@pytest.fixture(scope="module")
def llm_server():
    server = FakeLLMServer(["ball\nhand\nbox", "- Cup\n- hand\n- ../../etc"], default="ball\ncup\nfloor")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service_cfg(tmp_path_factory, llm_server):
    root = tmp_path_factory.mktemp("service")
    return config_from_dict(
        {
            "data": {"dataset": "synthetic", "root": str(root / "synth"), "synth_preset": "tiny",
                     "num_frames": 8, "resolution": 32},
            "model": {"tiny_hidden": 32, "tiny_layers": 1},
            "train": {"epochs": 1, "final_epochs": 1, "batch_size": 4, "num_workers": 1,
                      "cpus_per_worker": 0.5, "lr": 1e-3, "eval_segments": 2, "eval_views": 1},
            "search": {"searcher": "icrl", "num_trials": 3, "max_classes": 4},
            "llm": {"base_url": llm_server.url, "api_key_env": "A2O_TEST_KEY", "response_format": "text"},
            "storage": {"root": str(root / "run"), "experiment_name": "svc"},
        }
    )


def test_search_writes_results_and_best(ray_local, service_cfg, llm_server, caplog, monkeypatch):
    from a2o.service import run_service

    monkeypatch.setenv("A2O_TEST_KEY", "sk-secret-do-not-log")
    caplog.set_level(logging.INFO, logger="a2o.search")
    outcome = run_service(service_cfg)

    root = service_cfg.storage.root
    results = json.load(open(os.path.join(root, "results.json")))
    assert [t["iteration"] for t in results["trials"]] == [1, 2, 3]
    assert results["trials"][0]["classes"] == ["ball", "hand", "box"]
    # The second reply is sanitised: bullets and case stripped, the path-like text dropped.
    assert results["trials"][1]["classes"] == ["cup", "hand"]
    assert all(t["val_accuracy"] is not None for t in results["trials"])
    assert "sk-secret-do-not-log" not in json.dumps(results)
    # The third trial reuses ball and cup maps computed by trials 1 and 2.
    assert results["trials"][2]["maps_reused"] > 0
    # One live line per finished trial.
    assert sum("[trial" in r.getMessage() for r in caplog.records) == 3

    best_dir = os.path.join(root, "best")
    assert sorted(os.listdir(best_dir)) == ["config.yaml", "metrics.json", "model"]
    metrics = json.load(open(os.path.join(best_dir, "metrics.json")))
    assert metrics["classes"] == outcome["best"]["classes"]
    assert metrics["test"]["num_samples"] == 4  # tiny preset: 4 test clips
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert len(llm_server.chat_requests) >= 2


def test_resume_repeats_nothing(ray_local, service_cfg, llm_server):
    from a2o.service import run_service

    before = len(llm_server.chat_requests)
    outcome = run_service(service_cfg, resume=True, final_training=False)
    results = json.load(open(os.path.join(service_cfg.storage.root, "results.json")))
    assert len(results["trials"]) == 3
    assert len(llm_server.chat_requests) == before  # no new LLM call
    assert outcome["best"]["classes"] == results["best_trial"]["classes"]
