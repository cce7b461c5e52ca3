"""One ICRL environment step: class set → likelihood maps → a Ray Train fit → val accuracy.

``run_trial`` is a Tune *function* trainable that builds and fits a ``TorchTrainer`` with
``TuneReportCallback`` (``Tuner(TorchTrainer)`` fails under Train V2), so rank-0 metrics of every
epoch reach Tune and ASHA can stop a trial early. ``fit_trial`` is the same path without Tune, used
by ``a2o train`` and the final full-budget training of the best set.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from a2o.config import ExperimentConfig, absolute_if_local, config_from_dict, config_to_dict
from a2o.detect.classes import ClassSet
from a2o.errors import ResourceError, TrainingError
from a2o.train.loop import train_loop_per_worker
from a2o.train.spec import TrialInputs, TrialSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialResult:
    metrics: dict[str, Any]
    checkpoint_path: str | None  # a folder on local storage; a key in the bucket on remote storage
    detect_stats: dict[str, Any]
    wall_time_s: float
    checkpoint: Any = None  # the ray.train.Checkpoint (``a2o.service.local_checkpoint`` reads it anywhere)


# What the trial function itself holds while its TorchTrainer runs: bookkeeping plus in-process
# (CPU) detection. Kept small so the Train workers get the cores on a small machine.
TRIAL_DRIVER_CPUS = 0.5


def frames_root(cfg: ExperimentConfig) -> str:
    """Where ``a2o data prepare`` put the frame grid of this config."""
    return cfg.storage.path("frames", f"t{cfg.data.num_frames}_r{cfg.data.grid_resolution}")


def label_names(manifest) -> list[str]:
    """Label names indexed by label_id (every split, so ids stay stable across few-shot subsets)."""
    pairs = {int(i): str(n) for i, n in zip(manifest.column("label_id").to_pylist(), manifest.column("label").to_pylist(), strict=True)}
    if not pairs:
        raise TrainingError("the frame store holds no videos: run `a2o data prepare` first")
    return [pairs.get(i, f"label_{i}") for i in range(max(pairs) + 1)]


def check_resources(
    num_workers: int, cpus_per_worker: float, gpus_per_worker: float, *, reserved_cpus: float = 0.0,
    capacity: tuple[float, float] | None = None, where: str = "the cluster",
) -> None:
    """Fail fast when ``where`` can never place the trial (Ray would wait forever).

    ``capacity`` is (CPU, GPU); by default the connected cluster's (``ray.cluster_resources()``).
    """
    if capacity is None:
        import ray

        total = ray.cluster_resources()
        capacity = (float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)))
    have_cpu, have_gpu = capacity
    need_cpu = num_workers * cpus_per_worker + reserved_cpus
    need_gpu = num_workers * gpus_per_worker
    if need_cpu > have_cpu + 1e-9 or need_gpu > have_gpu + 1e-9:
        raise ResourceError(
            f"the trial asks for {num_workers} worker(s) × ({cpus_per_worker} CPU, {gpus_per_worker} GPU)"
            f" = {need_cpu:g} CPU, {need_gpu:g} GPU, but {where} has {have_cpu:g} CPU, {have_gpu:g} GPU."
            " Lower train.num_workers / train.cpus_per_worker / train.gpus_per_worker or grow the cluster."
        )


def ensure_trial_maps(cfg: ExperimentConfig, class_set: ClassSet, store, video_ids: Sequence[str]):
    """Fill the map cache for ``class_set`` over ``video_ids`` (train + val only: search never sees
    test). A GPU detector runs as the Ray Data actor-pool stage; a CPU one in-process."""
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import map_cache_for
    from a2o.detect.stage import RayDataRunner

    factory = ConfigDetectorFactory(cfg.detect)
    cache = map_cache_for(cfg.storage, cfg.data, cfg.detect)
    runner = RayDataRunner.from_config(cfg.detect) if cfg.detect.num_gpus_per_actor > 0 else None
    # verify="marker": entries are checksum-verified when the workers read them (and recomputed if
    # corrupt), so the driver need not read every cached file before each trial.
    reader = cache.ensure_maps(
        class_set, store, factory, runner=runner, video_ids=list(video_ids), verify="marker"
    )
    stats = reader.stats
    log.info(
        "maps for %d classes: %d (video, class) pairs computed, %d reused (hit ratio %.2f)",
        len(class_set), stats.computed_pairs, stats.reused_pairs, stats.hit_ratio,
    )
    return reader, {"computed": stats.computed_pairs, "reused": stats.reused_pairs}


def _require_class_set(class_set: Any) -> ClassSet:
    if not isinstance(class_set, ClassSet):
        raise TypeError(
            f"expected an a2o.detect.classes.ClassSet, got {type(class_set).__name__}: build it where the "
            "texts enter, with ClassSet.parse(texts, where='<config key or flag>')"
        )
    return class_set


def prepare_inputs(cfg: ExperimentConfig, class_set: ClassSet) -> tuple[TrialInputs, dict[str, Any]]:
    """Open the frame store, ensure the maps of ``class_set`` and list train/val clips."""
    from a2o.data.framestore import FrameStore

    class_set = _require_class_set(class_set)
    root = frames_root(cfg)
    store = FrameStore(root)
    manifest = store.manifest()
    labels = label_names(manifest)
    rows = manifest.select(["video_id", "label_id", "split"]).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    if not train or not val:
        raise TrainingError(f"frame store {root} needs train and val clips (has {len(train)} train, {len(val)} val)")
    reader, detect_stats = None, {"computed": 0, "reused": 0}
    if class_set:
        from a2o.detect.coverage import class_coverage

        video_ids = [r["video_id"] for r in train + val]
        reader, detect_stats = ensure_trial_maps(cfg, class_set, store, video_ids)
        # In what share of (sampled train) clips the detector found each class: the searcher's
        # history can then tell a dead channel from an unhelpful object (a2o.detect.coverage).
        detect_stats["coverage"] = class_coverage(reader, class_set, [r["video_id"] for r in train], seed=cfg.train.seed)
    inputs = TrialInputs(
        frames_root=root,
        maps=reader,
        class_set=class_set,
        labels=tuple(labels),
        train_ids=tuple(r["video_id"] for r in train),
        train_labels=tuple(int(r["label_id"]) for r in train),
        val_ids=tuple(r["video_id"] for r in val),
        val_labels=tuple(int(r["label_id"]) for r in val),
    )
    return inputs, detect_stats


def resolve_checkpoint(cfg: ExperimentConfig, num_labels: int) -> ExperimentConfig:
    """Turn ``model.checkpoint: tiny`` into a saved local dir, once, on the driver.

    Every rank then loads the same weights through ``from_pretrained(dir)``, the path a published
    checkpoint takes. (Building it inside the workers fails: transformers' ``save_pretrained``
    writes nothing on ranks other than 0 once torch.distributed is up.)
    """
    import hashlib
    import json
    import tempfile

    from a2o.model import save_tiny_checkpoint

    if cfg.model.checkpoint != "tiny":
        return cfg
    spec = json.dumps(
        [config_to_dict(cfg.model), cfg.data.num_frames, cfg.data.resolution, num_labels], sort_keys=True
    )
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    root = cfg.storage.root if "://" not in cfg.storage.root else tempfile.gettempdir()
    directory = os.path.abspath(os.path.join(root, "models", f"tiny-vjepa2-{key}"))
    if not os.path.exists(os.path.join(directory, "config.json")):
        tmp = f"{directory}.tmp-{os.getpid()}"
        save_tiny_checkpoint(tmp, num_labels, cfg.data.num_frames, cfg.data.resolution, cfg.model)
        try:
            os.replace(tmp, directory)
        except OSError:  # another trial finished first: identical weights, keep theirs
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=directory))


def apply_trial_overrides(cfg: ExperimentConfig, trial_config: dict[str, Any]) -> ExperimentConfig:
    """Hyperparameters a searcher may set besides the classes (the hybrid {lr, wd} + ICRL space)."""
    train_changes = {k: trial_config[k] for k in ("lr", "weight_decay") if k in trial_config}
    if "epochs" in trial_config:
        train_changes["epochs"] = int(trial_config["epochs"])
    if not train_changes:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_changes))


def fit_trial(
    cfg: ExperimentConfig,
    class_set: ClassSet,
    *,
    epochs: int | None = None,
    name: str | None = None,
    in_tune: bool = False,
) -> TrialResult:
    """Ensure maps, then build and fit the ``TorchTrainer`` for one class set.

    ``epochs`` overrides ``train.epochs`` (the final training passes ``train.final_epochs``).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    class_set = _require_class_set(class_set)
    tcfg = cfg.train
    check_resources(
        tcfg.num_workers, tcfg.cpus_per_worker, tcfg.gpus_per_worker,
        reserved_cpus=TRIAL_DRIVER_CPUS if in_tune else 0.0,
    )
    inputs, detect_stats = prepare_inputs(cfg, class_set)
    cfg = resolve_checkpoint(cfg, len(inputs.labels))
    spec = trial_spec(cfg, inputs, detect_stats, epochs=epochs)
    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    use_gpu = tcfg.gpus_per_worker > 0
    resources = {"CPU": tcfg.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = tcfg.gpus_per_worker
    # Ray Train's controller reads its poll interval from the environment of the process that
    # builds the TorchTrainer (and passes it on to its own actor); a user's setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", f"{tcfg.poll_interval_s:g}")
    run_name = name or f"trial-{int(time.time() * 1000)}"
    run_name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_name)[:120]
    trainer = TorchTrainer(
        functools.partial(train_loop_per_worker, spec),
        scaling_config=ScalingConfig(
            num_workers=tcfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name, storage_path=absolute_if_local(cfg.storage.path("train")), callbacks=callbacks
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; keep the cause, name the trial
        raise TrainingError(f"trial {run_name} failed: {exc}") from exc
    metrics = dict(result.metrics or {})
    checkpoint = result.checkpoint.path if result.checkpoint else None
    return TrialResult(metrics, checkpoint, detect_stats, time.perf_counter() - started, checkpoint=result.checkpoint)


def trial_spec(
    cfg: ExperimentConfig, inputs: TrialInputs, detect_stats: dict[str, Any], *, epochs: int | None = None
) -> TrialSpec:
    """The loop's spec for ``inputs`` (after :func:`resolve_checkpoint`): the map cache's counts
    ride along as per-epoch metrics."""
    extra = {"maps_computed": int(detect_stats["computed"]), "maps_reused": int(detect_stats["reused"]),
             "class_coverage": dict(detect_stats.get("coverage") or {})}
    return TrialSpec.from_config(cfg, inputs, epochs=epochs, extra_metrics=extra)


def trainable_for(cfg: ExperimentConfig):
    """``run_trial`` bound to the experiment, with the trial's own (small) resource request."""
    from ray import tune

    bound = tune.with_parameters(run_trial, experiment=config_to_dict(cfg))
    return tune.with_resources(bound, {"CPU": TRIAL_DRIVER_CPUS})


def release_orphaned_placement_groups() -> int:
    """Remove the placement groups whose creating actor is dead; return how many.

    A trial that Tune stops inside ``TorchTrainer.fit()`` (ASHA, a stop criterion, a time budget)
    dies with the Ray Train controller it owns. The controller's worker placement group is not
    detached, so Ray keeps it until the *job* ends. Ray Train's PlacementGroupCleaner removes it
    only through the State API, which needs the dashboard, and local clusters run without one. The
    GCS table marks such a group ``creator_actor_dead``: nothing can use it any more. Detached groups
    and groups made by a driver (Tune's own trial groups) never match.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    table = gcs_pb2.PlacementGroupTableData
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        info = table.FromString(raw)
        made_by_actor = bool(info.creator_actor_id) and not ray.ActorID(info.creator_actor_id).is_nil()
        # creator_actor_dead is also true for a driver's group (no actor): those are Tune's own.
        if info.is_detached or not made_by_actor or not info.creator_actor_dead or info.state == table.REMOVED:
            continue
        group_id = ray.PlacementGroupID(info.placement_group_id)
        try:
            remove_placement_group(PlacementGroup(group_id))
        except Exception as exc:  # e.g. Ray Train's own cleaner (on a cluster with a dashboard) was first
            log.info("placement group %s was not removed here: %s", group_id.hex(), exc)
            continue
        log.warning(
            "removed placement group %s: it outlived the actor that made it (a Ray Train controller of a "
            "stopped trial), and its %s are now free for the next trial",
            group_id.hex(), [dict(b.unit_resources) for b in info.bundles],
        )
        removed += 1
    return removed


def orphaned_group_release(interval_s: float = 2.0):
    """A Tune callback that runs :func:`release_orphaned_placement_groups` every ``interval_s``.

    Pass it in ``tune.RunConfig(callbacks=[...])`` of every search whose trials run a
    ``TorchTrainer``; ``a2o search`` does. If the GCS table cannot be read (another Ray version),
    it logs that once and stops trying: stopped trials may then leave their workers' resources
    reserved until the search ends.
    """
    from ray import tune

    class ReleaseOrphanedPlacementGroups(tune.Callback):
        def __init__(self) -> None:
            self.next_check = 0.0
            self.enabled = True
            self.removed = 0

        def on_step_end(self, iteration, trials, **info) -> None:
            now = time.monotonic()
            if not self.enabled or now < self.next_check:
                return
            self.next_check = now + interval_s
            try:
                self.removed += release_orphaned_placement_groups()
            except Exception as exc:  # a private Ray table: degrade loudly, never break the search
                self.enabled = False
                log.warning(
                    "cannot read Ray's placement-group table (%s): the placement groups of trials stopped "
                    "mid-fit are not released until the search ends", exc,
                )

    return ReleaseOrphanedPlacementGroups()


def reuse_trial_actors(scheduler) -> bool:
    """``TuneConfig.reuse_actors`` for a search with this scheduler (None: FIFO).

    Reusing the trial actor saves its start at every trial after the first: a new Python process
    that imports Ray Tune, Ray Train and torch (about 3 s per trial on 2 CPU cores, measured with
    ``benchmarks/trial_overhead.py``). Only without early stopping: a trial that ASHA stops is still
    inside ``TorchTrainer.fit()``, and a reused actor would keep it, and the Train controller and
    workers it owns, alive until the next trial's reset gives up on it. Without reuse, the stopped
    trial's actor ends and its Train run ends with it.
    """
    return scheduler is None


def run_trial(config: dict[str, Any], experiment: dict[str, Any] | None = None) -> None:
    """Tune function trainable: ``tune.with_parameters(run_trial, experiment=config_to_dict(cfg))``.

    ``config`` is the searcher's suggestion (any searcher's, so untrusted text): ``{"classes": [...]}``
    plus optional ``lr`` / ``weight_decay`` / ``epochs``; the class set is parsed here, its entry
    point. Per-epoch metrics (val_accuracy, classwise_accuracy, loss, epoch, classes,
    epoch_time_s, train_time_s, worker_setup_s, maps_computed, maps_reused) reach Tune through
    ``TuneReportCallback``.
    """
    import ray.tune

    if experiment is None:
        raise TrainingError("run_trial needs the experiment config: tune.with_parameters(run_trial, experiment=...)")
    if "classes" not in config:
        raise TrainingError(
            f"the trial config has no 'classes' (keys: {sorted(config)}); a searcher suggests "
            "{'classes': [...]} (an empty list for RGB only)"
        )
    class_set = ClassSet.parse(config["classes"], where="trial config 'classes'")
    cfg = apply_trial_overrides(config_from_dict(experiment), config)
    trial_name = ray.tune.get_context().get_trial_name() if ray.tune.get_context() else None
    # Nothing is returned: a returned dict would reach Tune as one more (epoch-less) result.
    fit_trial(cfg, class_set, name=trial_name, in_tune=True)
