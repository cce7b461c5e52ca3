"""The Ray Train trial: TorchTrainer with 2 CPU workers (gloo) under Tune, per-epoch metrics."""

from __future__ import annotations

import pytest

from a2o.config import config_from_dict
from a2o.errors import ResourceError


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    from a2o.data.framestore import prepare_frame_store
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import generate_synth
    from a2o.train.trial import frames_root

    root = tmp_path_factory.mktemp("trial")
    synth = generate_synth(str(root / "synth"), "tiny", seed=0)
    cfg = config_from_dict(
        {
            "data": {"dataset": "synthetic", "root": synth, "num_frames": 8, "resolution": 32},
            "model": {"tiny_hidden": 32, "tiny_layers": 1},
            "train": {"epochs": 2, "batch_size": 4, "num_workers": 2, "cpus_per_worker": 0.5, "lr": 1e-3},
            "storage": {"root": str(root / "run")},
        }
    )
    summary = prepare_frame_store(load_manifest(cfg.data), cfg.data, frames_root(cfg), use_ray=False)
    assert summary.skipped == 0
    return cfg


def test_tune_trial_reports_every_epoch(ray_local, tiny_experiment):
    from ray import tune

    from a2o.train.trial import trainable_for

    cfg = tiny_experiment
    tuner = tune.Tuner(
        trainable_for(cfg),
        param_space={"classes": ["ball", "hand", "box"]},
        tune_config=tune.TuneConfig(num_samples=1, metric="val_accuracy", mode="max"),
        run_config=tune.RunConfig(storage_path=cfg.storage.path("tune"), name="t"),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    result = results[0]
    history = result.metrics_dataframe
    assert list(history["epoch"]) == [1, 2]
    assert history["val_accuracy"].between(0, 1).all()
    # train_time_s is the running sum of the epochs' own times (no set-up, no checkpoint write).
    assert list(history["train_time_s"]) == pytest.approx(list(history["epoch_time_s"].cumsum()))
    assert result.metrics["classes"] == ["ball", "hand", "box"]
    assert set(result.metrics["classwise_accuracy"]) <= {
        "pushing ball left", "pushing ball right", "lifting box", "dropping cup"
    }
    # First trial computes every (video, class) pair of train + val (16 + 4 videos × 3 classes).
    assert result.metrics["maps_computed"] == 60
    assert result.metrics["maps_reused"] == 0


def test_cli_train_rgb_only_reuses_nothing_and_checkpoints(ray_local, tiny_experiment, tmp_path, capsys):
    import yaml

    from a2o.cli import main
    from a2o.config import config_to_dict
    from a2o.model import load_recognizer

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(tiny_experiment)))
    assert main(["train", "--config", str(path), "--classes", "", "--set", "train.num_workers=1",
                 "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "RGB-only" in out
    checkpoint = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("checkpoint")][0]
    model, meta = load_recognizer(f"{checkpoint}/model")
    assert meta["classes"] == [] and model.num_classes_in == 0


def test_over_budget_request_fails_fast(ray_local):
    from a2o.train.trial import check_resources

    with pytest.raises(ResourceError, match="train.num_workers"):
        check_resources(8, 1.0, 0.0)
    with pytest.raises(ResourceError, match="GPU"):
        check_resources(1, 0.5, 1.0)


def test_unproducible_class_set_fails_clearly(tiny_experiment):
    from a2o.errors import ClassTextError
    from a2o.train.trial import prepare_inputs

    with pytest.raises(ClassTextError):
        prepare_inputs(tiny_experiment, ["../../etc/passwd"])


def test_a_trial_stopped_mid_fit_frees_its_workers_for_the_next(ray_local, tiny_experiment):
    """Tune stopping a trial (ASHA, a stop criterion) kills the trial actor inside TorchTrainer.fit().

    The Train workers' placement group then outlives its controller (Ray Train's own cleaner needs
    the dashboard, which the local cluster does not run). With 1 CPU per worker on 2 CPUs, one
    leaked group leaves the next trial unplaceable: the search's callback must release it.
    """
    import dataclasses

    from ray import tune

    from a2o.train.trial import orphaned_group_release, trainable_for

    cfg = tiny_experiment
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, num_workers=1, cpus_per_worker=1.0, epochs=4))
    release = orphaned_group_release(interval_s=0.5)
    tuner = tune.Tuner(
        trainable_for(cfg),
        param_space={"classes": ["ball", "hand"]},
        tune_config=tune.TuneConfig(num_samples=2, max_concurrent_trials=1, metric="val_accuracy", mode="max",
                                    time_budget_s=150),
        run_config=tune.RunConfig(storage_path=cfg.storage.path("tune"), name="stopped", stop={"epoch": 1},
                                  callbacks=[release], verbose=0),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    assert [r.metrics.get("epoch") for r in results] == [1, 1], [r.metrics for r in results]
    assert release.enabled and release.removed >= 1  # at least the first trial's group was orphaned
