"""The Ray Train trial: TorchTrainer with 2 CPU workers (gloo) under Tune, per-epoch metrics."""

from __future__ import annotations

import pytest

from a2o.config import config_from_dict
from a2o.errors import ResourceError, TrainingError


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
    # Detection coverage rides along (the hand is in every clip; the annotation detector sees it)...
    coverage = result.metrics["class_coverage"]
    assert set(coverage) == {"ball", "hand", "box"} and coverage["hand"] == 1.0
    assert all(0.0 <= share <= 1.0 for share in coverage.values())
    # ... and the confusion matrix's label order, which the ICRL prompt reads.
    labels = result.metrics["confusion_labels"]
    assert len(labels) == len(result.metrics["confusion"]) == 4
    assert set(result.metrics["classwise_accuracy"]) <= set(labels)


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
    """The trainable is where a searcher's text enters: it parses, before any Ray call; the library
    functions below it take a ClassSet only."""
    from a2o.config import config_to_dict
    from a2o.errors import ClassTextError
    from a2o.train.trial import prepare_inputs, run_trial

    with pytest.raises(ClassTextError, match="trial config 'classes'"):
        run_trial({"classes": ["../../etc/passwd"]}, experiment=config_to_dict(tiny_experiment))
    with pytest.raises(TrainingError, match="no 'classes'"):
        run_trial({"lr": 1e-3}, experiment=config_to_dict(tiny_experiment))
    with pytest.raises(TypeError, match="ClassSet.parse"):
        prepare_inputs(tiny_experiment, ["ball"])


def test_trial_spec_from_config_resolves_epochs_and_carries_the_class_set(tiny_experiment):
    import pickle

    from a2o.config import config_to_dict
    from a2o.detect.classes import ClassSet
    from a2o.train.spec import TrialInputs, TrialSpec

    class_set = ClassSet.parse(["ball", "hand"])
    inputs = TrialInputs("frames", None, class_set, ("a", "b"), ("v1",), (0,), ("v2",), (1,))
    spec = TrialSpec.from_config(tiny_experiment, inputs, epochs=5, extra_metrics={"maps_reused": 3})
    assert spec.epochs == spec.train.epochs == 5 and tiny_experiment.train.epochs == 2
    assert spec.train.lr == tiny_experiment.train.lr and spec.model == tiny_experiment.model
    assert (spec.num_frames, spec.resolution) == (8, 32)
    assert spec.class_set is class_set and spec.extra_metrics == {"maps_reused": 3}
    assert spec.experiment == config_to_dict(tiny_experiment)  # the checkpoint's extra, as before
    assert TrialSpec.from_config(tiny_experiment, inputs).epochs == 2
    assert pickle.loads(pickle.dumps(spec)) == spec  # it travels to every Ray Train worker


class _Frames:
    """In-memory frame source: (T, H, W, 3) uint8 per video, the label drawn into the pixels."""

    def __init__(self, labels: dict[str, int]):
        import numpy as np

        rng = np.random.default_rng(0)
        self.records = {}
        for vid, label in labels.items():
            frames = rng.integers(0, 64, (4, 16, 16, 3), dtype=np.uint8)
            frames[:, :, :, label] = 255  # one colour channel per label
            self.records[vid] = type("Record", (), {"frames": frames})()

    def read(self, video_id: str):
        return self.records[video_id]


class _Maps:
    def read(self, video_id: str):
        import numpy as np

        return np.full((4, 2, 8, 8), 128 if video_id.endswith("1") else 0, dtype=np.uint8)  # (T, C, h, w)


def _tiny_spec(cfg, *, max_steps_per_epoch: int = 0):
    import dataclasses

    from a2o.detect.classes import ClassSet
    from a2o.train.spec import TrialInputs, TrialSpec

    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, num_frames=4, resolution=16, store_resolution=16),
        model=dataclasses.replace(cfg.model, tiny_patch=8, tiny_hidden=32, tiny_layers=1),
        train=dataclasses.replace(cfg.train, batch_size=2, augment=False, lr=1e-2, seed=3,
                                  max_steps_per_epoch=max_steps_per_epoch),
    )
    ids = tuple(f"v{i}{i % 2}" for i in range(6))
    labels = tuple(i % 2 for i in range(6))
    inputs = TrialInputs("memory", _Maps(), ClassSet.parse(["ball", "hand"]), ("left", "right"),
                         ids, labels, ids[:4], labels[:4])
    return TrialSpec.from_config(cfg, inputs, epochs=2), dict(zip(ids, labels, strict=True))


def _run_epochs(spec, frames):
    import torch

    from a2o.runtime import Runtime
    from a2o.train.epoch import build_training, evaluate, train_one_epoch

    runtime = Runtime.cpu()
    torch.manual_seed(spec.train.seed)
    training = build_training(spec, frames, spec.inputs.maps, wrap=lambda m: m.to(runtime.device))
    history = []
    for epoch in range(1, spec.epochs + 1):
        training.train_set.set_epoch(epoch)
        loss = train_one_epoch(training.model, training.train_loader, training.optimizer, training.scheduler,
                               runtime, grad_accum=spec.train.grad_accum, max_steps=training.steps_per_epoch)
        confusion = evaluate(training.model, training.val_loader, len(spec.inputs.labels), runtime)
        history.append((loss, confusion.tolist(), training.scheduler.last_epoch))
    return training, history


def test_the_shared_epoch_steps_are_deterministic_and_respect_the_step_cap(tiny_experiment):
    """build_training + train_one_epoch + evaluate: what the Ray Train loop and the benchmarks run.
    Same spec and seed: the same losses and confusions (the benchmarks' figures rely on it)."""
    spec, labels = _tiny_spec(tiny_experiment)
    frames = _Frames(labels)
    training, first = _run_epochs(spec, frames)
    _, second = _run_epochs(spec, frames)
    assert first == second
    assert training.core.classes == ("ball", "hand")  # the adapter knows its channels
    assert training.steps_per_epoch == 3  # 6 clips, batches of 2
    for epoch, (loss, confusion, scheduler_steps) in enumerate(first, start=1):
        assert loss.clips == 6 and loss.mean > 0
        assert sum(map(sum, confusion)) == 4  # every val clip counted once
        assert scheduler_steps == 3 * epoch

    capped, _ = _tiny_spec(tiny_experiment, max_steps_per_epoch=1)
    _, history = _run_epochs(capped, frames)
    assert [(loss.clips, steps) for loss, _, steps in history] == [(2, 1), (2, 2)]


def test_in_process_loop_reports_per_the_spec(tiny_experiment):
    """The product loop in Ray Train's local mode (what the benchmarks run and time): one epoch as
    asked, the class set in channel order, the driver's map counts."""
    import dataclasses

    from benchmarks._common import train_in_process

    cfg = dataclasses.replace(tiny_experiment, train=dataclasses.replace(tiny_experiment.train, num_workers=1))
    metrics = train_in_process(cfg, ["hand", "ball"], epochs=1).metrics
    assert metrics["epoch"] == 1 and metrics["classes"] == ["hand", "ball"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and sum(map(sum, metrics["confusion"])) == 4
    assert metrics["maps_computed"] + metrics["maps_reused"] == 40  # (16 train + 4 val) x 2 classes


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
