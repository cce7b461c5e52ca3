"""The search service: config → data → Tune search → full-budget training of the best set → best/.

Recipe (each step idempotent, so ``--resume`` repeats nothing that finished):
1. data: manifest + frame store (decoded once, reused);
2. search: ``Tuner(run_trial)`` with the chosen searcher and scheduler, one live line per trial;
3. final: train the best class set for ``train.final_epochs``, evaluate on test with clip × view
   ensembling, write ``best/``, ``results.json`` and a summary table.

The caller connects to Ray first (entry points do; this module never calls ``ray.init``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from a2o.config import ExperimentConfig, absolute_if_local, config_to_dict
from a2o.detect.classes import ClassSet
from a2o.errors import ClassTextError, SearchInterrupted, TrainingError
from a2o.records import TrialRecord, TrialRow

if TYPE_CHECKING:  # pragma: no cover
    from a2o.runtime import Runtime

log = logging.getLogger("a2o.search")


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_dir(uri: str) -> str:
    """A local folder for ``uri``: the folder itself, or a driver-side staging copy of a remote one.

    Staged files (results, best/, the LLM replay cache, server logs) are uploaded by
    :func:`publish`; manifests, frames, maps and Tune state go to remote storage directly.
    """
    if _is_remote(uri):
        import hashlib
        import tempfile

        path = os.path.join(tempfile.gettempdir(), "a2o-staging", hashlib.sha256(uri.encode()).hexdigest()[:16])
    else:
        path = uri.removeprefix("file://")
    os.makedirs(path, exist_ok=True)
    return path


def copy_tree_to_local(uri: str, local_path: str) -> None:
    """Copy a folder (local path or remote URI) to ``local_path`` on this machine."""
    if not _is_remote(uri):
        shutil.copytree(uri.removeprefix("file://"), local_path)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    os.makedirs(local_path, exist_ok=True)
    fs.get(path.rstrip("/") + "/", local_path.rstrip("/") + "/", recursive=True)


@contextlib.contextmanager
def local_checkpoint(result) -> Iterator[str]:
    """The folder of a trial's checkpoint on this machine: itself on local storage, else a
    temporary download (Ray Train uploads checkpoints to remote storage; ``checkpoint.path`` is
    then a bucket key, not a folder)."""
    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is None or not _is_remote_checkpoint(checkpoint):
        yield result.checkpoint_path
        return
    with checkpoint.as_directory() as directory:
        yield directory


def _is_remote_checkpoint(checkpoint) -> bool:
    import pyarrow.fs as pafs

    return not isinstance(checkpoint.filesystem, pafs.LocalFileSystem)


def publish(local_path: str, uri: str) -> None:
    """Upload a staged file or folder to remote storage (no-op for local storage)."""
    if not _is_remote(uri):
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if not os.path.isdir(local_path):
        fs.put_file(local_path, path)  # one PUT: readers see the old object or the new one
        log.info("uploaded %s to %s", local_path, uri)
        return
    # A folder (best/): every file is replaced in place (trailing slashes: the folder's content,
    # never a nested copy of it), then objects a previous best/ had and this one lacks are removed.
    fs.put(local_path.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
    ours = {os.path.relpath(os.path.join(d, f), local_path) for d, _, files in os.walk(local_path) for f in files}
    for key in fs.find(path):
        if os.path.relpath(key, path.rstrip("/")) not in ours:
            fs.rm_file(key)
    log.info("uploaded %s to %s (%d files)", local_path, uri, len(ours))


def fetch_staged(cfg: ExperimentConfig, names: tuple[str, ...] = ("llm_replay.jsonl",)) -> None:
    """On resume with remote storage, bring the run's staged files (the LLM replay cache) back from
    the bucket into this machine's staging folder, so a fresh working directory resumes as well."""
    if not _is_remote(cfg.storage.root):
        return
    import fsspec

    root = local_dir(cfg.storage.root)
    for name in names:
        fs, path = fsspec.core.url_to_fs(cfg.storage.path(name))
        if not os.path.exists(os.path.join(root, name)) and fs.exists(path):
            fs.get_file(path, os.path.join(root, name))
            log.info("fetched %s from %s", name, cfg.storage.path(name))


# ---------------------------------------------------------------------------------------------
# 1. data


def prepare_data(cfg: ExperimentConfig):
    """Manifest and frame store (reused when already prepared). Returns (manifest, labels)."""
    from a2o.data.framestore import prepare_frame_store
    from a2o.data.manifest import load_manifest, write_manifest
    from a2o.data.synthetic import ensure_synthetic
    from a2o.train.trial import frames_root, label_names

    ensure_synthetic(cfg.data)
    manifest = load_manifest(cfg.data)
    write_manifest(manifest, cfg.storage.path("manifest.parquet"))
    summary = prepare_frame_store(manifest, cfg.data, frames_root(cfg), use_ray=True)
    from a2o.detect import ensure_learned_detector

    ensure_learned_detector(cfg)  # the world's learned detector: trained once (train split), then reused
    log.info(
        "frame store: %d videos (%d decoded, %d reused, %d skipped)",
        summary.total, summary.decoded, summary.reused, summary.skipped,
    )
    return manifest, label_names(manifest)


# ---------------------------------------------------------------------------------------------
# 2. search


def _trial_callback_class():
    from ray.tune import Callback

    from a2o.progress import progress

    def _error_text(trial) -> str:
        """The first line of the trial's error, for a log line (a lost node has a long one)."""
        try:
            text = str(trial.get_error() or "")
        except Exception:  # noqa: BLE001 - a best-effort label in a log line
            text = ""
        return (text.strip().splitlines() or ["worker or node lost"])[0][:160]

    class LiveTrialLine(Callback):
        """The search as the console shows it: a line when a trial starts, its epochs as progress
        (a bar on a terminal, a line every 30 s elsewhere), and a line when it ends with its val
        accuracy, time and the difference to the best set so far."""

        def __init__(self, epochs: int, max_failures: int = 0) -> None:
            self.epochs = epochs
            self.max_failures = max_failures
            self.numbers: dict[str, int] = {}
            self.bars: dict[str, Any] = {}
            self.best: tuple[float, list[str]] | None = None

        def _number(self, trial, trials=None) -> int:
            """The trial's place in the search: its index in Tune's trial list (creation order,
            restored trials included), so a resumed search goes on numbering where it stopped."""
            if trial.trial_id not in self.numbers and trials is not None and trial in trials:
                self.numbers[trial.trial_id] = trials.index(trial) + 1
            return self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)

        def on_step_begin(self, iteration, trials, **info):
            for index, trial in enumerate(trials):  # restored trials keep their numbers
                self.numbers.setdefault(trial.trial_id, index + 1)

        def _seed_best(self, trials) -> None:
            """After a resume, the best so far comes from the restored finished trials."""
            if self.best is not None:
                return
            for other in trials:
                acc = (other.last_result or {}).get("val_accuracy")
                if (other.status == "TERMINATED" and isinstance(acc, (int, float)) and math.isfinite(acc)
                        and (self.best is None or acc > self.best[0])):
                    self.best = (float(acc), list(other.config.get("classes") or []))

        def on_trial_start(self, iteration, trials, trial, **info):
            self._seed_best(trials)
            number = self._number(trial, trials)
            classes = list(trial.config.get("classes") or [])
            source = str(trial.config.get("proposal_source", "-"))
            log.info("[trial %2d] started    %s (source=%s)", number,
                     ", ".join(classes) or "(no classes: RGB only)", source)
            if source.startswith("fallback"):
                log.warning("[trial %2d] FALLBACK (%s): the LLM gave no usable set, so this set is an edit of "
                            "the best one so far; the log's LLM warnings say why", number, source.split(":", 1)[-1])
            self.bars[trial.trial_id] = progress(
                self.epochs, f"[trial {number:2d}] training", log, unit="epochs", interval_s=30.0
            )

        def on_trial_result(self, iteration, trials, trial, result, **info):
            bar = self.bars.get(trial.trial_id)
            epoch = result.get("epoch")
            if bar is None or not isinstance(epoch, int) or epoch <= bar.count:
                return
            acc = result.get("val_accuracy")
            postfix = f"val_acc={acc:.3f}" if isinstance(acc, (int, float)) and math.isfinite(acc) else ""
            bar.update(epoch - bar.count, postfix=postfix)

        def _line(self, trial, status: str) -> None:
            number = self._number(trial)
            bar = self.bars.pop(trial.trial_id, None)
            if bar is not None:
                bar.close()
            classes = list(trial.config.get("classes") or [])
            result = trial.last_result or {}
            acc = result.get("val_accuracy")
            if self.best is None:
                diff = "first set: " + (", ".join(classes) or "(none)")
            else:
                best_set = set(self.best[1])
                added = sorted(set(classes) - best_set)
                removed = sorted(best_set - set(classes))
                diff = "vs best: " + (" ".join([f"+{c}" for c in added] + [f"-{c}" for c in removed]) or "(same set)")
            acc_text = f"{acc:.4f}" if isinstance(acc, (int, float)) and math.isfinite(acc) else "  n/a "
            log.info(
                "[trial %2d] %-10s val_acc=%s epoch=%s time=%5.1fs source=%s %s",
                number, status, acc_text, result.get("epoch", "-"),
                result.get("time_total_s", 0.0), trial.config.get("proposal_source", "-"), diff,
            )
            if isinstance(acc, (int, float)) and math.isfinite(acc) and (self.best is None or acc > self.best[0]):
                self.best = (float(acc), classes)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._line(trial, "done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "ERROR")

        def on_trial_recover(self, iteration, trials, trial, **info):
            # A lost worker or node: Tune retries the same set (search.trial_retries), so no set is
            # lost or proposed again; the retry reuses the maps the failed attempt wrote.
            bar = self.bars.pop(trial.trial_id, None)
            if bar is not None:
                bar.close()
            log.warning("[trial %2d] failed (%s); retrying the same set (failure %d of %d allowed)",
                        self._number(trial), _error_text(trial), trial.num_failures, self.max_failures)

    return LiveTrialLine


def _result_loggers(cfg: ExperimentConfig) -> list:
    """Tune's JSON and CSV result files (the report reads result.json); TensorBoard only when asked.

    Tune adds all three by itself unless ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1`` while it starts
    (:func:`_without_auto_loggers`): its TensorBoard logger warns on every per-action metric (names
    with spaces) and on the class list, hundreds of lines a search that nobody asked for.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    loggers = [JsonLoggerCallback(), CSVLoggerCallback()]
    if cfg.search.tensorboard:
        loggers.append(TBXLoggerCallback())
    return loggers


@contextlib.contextmanager
def _without_auto_loggers():
    """Tune reads ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` when ``fit()`` builds its callbacks; set it
    for that call only, so other Tuners in this process keep Tune's defaults."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    previous = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def build_scheduler(cfg: ExperimentConfig):
    if cfg.search.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=cfg.train.epochs,
        grace_period=min(cfg.search.asha_grace_period, cfg.train.epochs),
        reduction_factor=cfg.search.asha_reduction_factor,
    )


@dataclass
class SearchOutcome:
    trials: list[TrialRow]
    best: TrialRow | None
    searcher_stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _creation_order(results) -> list:
    """Tune's results in the order their trials were created. A ResultGrid of a resumed search
    is not in that order; a trial id ends in the search generator's counter (``…_00003``), which
    a restore continues."""
    import re

    def key(item):
        index, result = item
        trial_id = str((result.metrics or {}).get("trial_id") or "")
        match = re.search(r"_(\d+)$", trial_id)
        return (int(match.group(1)) if match else index, index)

    return [result for _, result in sorted(enumerate(results), key=key)]


def trial_rows(results, epochs_per_trial: int) -> list[TrialRow]:
    """Tune's results as rows, in the order the trials were created. A trial that ended without
    error before ``epochs_per_trial`` epochs was stopped by the scheduler (ASHA): ``early_stopped``."""
    rows = []
    for index, result in enumerate(_creation_order(results)):
        config = dict(result.config or {})
        metrics = dict(result.metrics or {})
        history = result.metrics_dataframe
        error = str(result.error).splitlines()[0][:300] if result.error else None
        try:  # Tune hands back the JSON form of what the searcher (maybe a third party's) suggested
            class_set = ClassSet.parse(config.get("classes") or [], where="trial config classes")
        except ClassTextError as exc:  # run_trial refused it too: an errored trial, not a lost search
            class_set, error = ClassSet(), error or str(exc)[:300]
        record = TrialRecord.from_result(
            class_set,
            metrics,
            error=error is not None,
            source=str(config.get("proposal_source") or ""),
            hyperparameters={k: config[k] for k in ("lr", "weight_decay") if config.get(k) is not None},
            trial_id=str(metrics.get("trial_id") or getattr(result, "path", "").rsplit("/", 1)[-1]),
        )
        if record.status == "ok" and record.epochs is not None and record.epochs < epochs_per_trial:
            record = record.with_status("early_stopped")
        screen = dict(config["screen"]) if isinstance(config.get("screen"), dict) else None
        if screen and record.wall_time_s is not None:  # a screened proposal's proxy time is the trial's too
            record = dataclasses.replace(record, wall_time_s=record.wall_time_s + float(screen.get("proxy_seconds") or 0.0))
        rows.append(
            TrialRow(
                iteration=index + 1,
                record=record,
                val_accuracy_per_epoch=(
                    tuple(float(x) for x in history["val_accuracy"])
                    if history is not None and "val_accuracy" in history else ()
                ),
                maps_computed=int(metrics.get("maps_computed") or 0),
                maps_reused=int(metrics.get("maps_reused") or 0),
                error=error,
                screen=screen,
            )
        )
    return rows


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The scored trial with the highest val accuracy (the earliest among equals), or None."""
    scored = [row for row in rows if row.record.scored]
    return max(scored, key=lambda row: (row.record.val_accuracy, -row.iteration)) if scored else None


def preflight_inputs(cfg: ExperimentConfig) -> None:
    """What can be checked without Ray, for entry points to run before ``ray.init`` (well under 1 s).

    The data root, the A2O-Synth world spec, files the config names, the detector/dataset pairing,
    and, for a private local cluster, whether one trial fits this machine's cores and GPUs.
    """
    from a2o.data.manifest import check_data_root
    from a2o.detect.learned_train import check_learned_pairing
    from a2o.errors import ConfigError
    from a2o.runtime import Runtime

    check_data_root(cfg.data)
    if cfg.data.dataset == "synthetic":
        from a2o.data.synth.spec import load_world_spec

        load_world_spec(cfg.data.synth_preset)  # a bad preset name or spec fails here, with the fix
    check_learned_pairing(cfg)
    if cfg.search.searcher == "ood" and cfg.search.ood_history and "://" not in cfg.search.ood_history:
        if not os.path.isfile(cfg.search.ood_history):
            raise ConfigError(
                f"search.ood_history: {cfg.search.ood_history} does not exist; pass the results.json "
                "of a finished run on another dataset"
            )
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):  # a private local cluster: this machine
        from a2o.train.trial import TRIAL_DRIVER_CPUS, check_resources

        t = cfg.train
        check_resources(
            t.num_workers, t.cpus_per_worker, t.gpus_per_worker, reserved_cpus=TRIAL_DRIVER_CPUS,
            capacity=(float(cfg.ray.num_cpus or os.cpu_count() or 1),
                      float(Runtime.accelerator_count() if t.gpus_per_worker else 0)),
            where="the local Ray cluster (ray.num_cpus, else this machine's cores)",
        )


def preflight_resources(cfg: ExperimentConfig) -> None:
    """A trial the cluster can never place fails now, with the numbers (Ray would wait forever)."""
    from a2o.train.trial import TRIAL_DRIVER_CPUS, check_resources

    t = cfg.train
    check_resources(t.num_workers, t.cpus_per_worker, t.gpus_per_worker, reserved_cpus=TRIAL_DRIVER_CPUS)


def preflight_llm(cfg: ExperimentConfig, llm_base_url: str | None) -> None:
    """An unreachable LLM fails at start (unless llm.on_unreachable=fallback), not trial by trial."""
    import searchers
    from a2o.errors import LLMUnavailableError

    if cfg.search.searcher not in searchers.LLM_SEARCHERS:
        return
    from searchers.llm_client import LLMClientSpec

    client = LLMClientSpec.from_config(cfg.llm, base_url=llm_base_url).build()
    try:
        model = client.ping()
        log.info("LLM endpoint %s answers (model %s)", llm_base_url or cfg.llm.base_url, model)
    except LLMUnavailableError as exc:
        if cfg.llm.on_unreachable == "fail":
            raise LLMUnavailableError(
                f"{exc} (set llm.on_unreachable=fallback to search on with logged fallback edits)"
            ) from None
        log.warning("%s; llm.on_unreachable=fallback: proposals will be fallback edits", exc)


def build_searcher(cfg: ExperimentConfig, labels: list[str], llm_base_url: str | None):
    """The searcher of ``cfg.search`` (``llm_base_url``: the embedded server's URL for 'local')."""
    import searchers

    options = {}
    if cfg.search.screen_candidates > 1:
        from a2o.train.proxy import ConfigProxy

        options["screen"] = ConfigProxy(cfg)  # detects new classes through the map cache, then scores
    return searchers.searcher_from_config(
        cfg.search,
        cfg.llm,
        action_names=[label for label in labels if not label.startswith("label_")],
        llm_base_url=llm_base_url,
        replay_cache_path=os.path.join(local_dir(cfg.storage.root), "llm_replay.jsonl"),
        epochs_per_trial=cfg.train.epochs,
        options=options,
    )


def current_llm_spec(cfg: ExperimentConfig, llm_base_url: str | None):
    """This run's LLM endpoint as a client spec, or None when the searcher uses no LLM."""
    from searchers import LLM_SEARCHERS
    from searchers.llm_client import LLMClientSpec

    if cfg.search.searcher not in LLM_SEARCHERS:
        return None
    return LLMClientSpec.from_config(cfg.llm, base_url=llm_base_url,
                                     cache_path=os.path.join(local_dir(cfg.storage.root), "llm_replay.jsonl"))


def saved_searcher(cfg: ExperimentConfig, labels: list[str], llm_base_url: str | None, experiment_dir: str):
    """A searcher restored from the state Tune saved in ``experiment_dir`` (None, logged, when it
    cannot be read): what a resumed search reports as its statistics."""
    try:
        searcher = build_searcher(cfg, labels, llm_base_url)
        if not _is_remote(experiment_dir):
            searcher.restore_from_dir(experiment_dir)
            return searcher
        # Tune's restore_from_dir globs a local folder: bring the newest saved state over first.
        import tempfile

        import fsspec

        fs, path = fsspec.core.url_to_fs(experiment_dir)
        saved = sorted(fs.glob(f"{path.rstrip('/')}/searcher-state-*.pkl"))
        if not saved:
            raise FileNotFoundError(f"no searcher-state-*.pkl in {experiment_dir}")
        with tempfile.TemporaryDirectory(prefix="a2o-searcher-") as local:
            fs.get_file(saved[-1], os.path.join(local, saved[-1].rsplit("/", 1)[-1]))
            searcher.restore_from_dir(local)
        return searcher
    except Exception as exc:  # noqa: BLE001 - the search itself finished; only its stats are missing
        log.warning("the searcher's saved state in %s could not be read (%s: %s); results.json will have no "
                    "searcher_stats", experiment_dir, type(exc).__name__, exc)
        return None


def run_search(cfg: ExperimentConfig, labels: list[str], *, resume: bool = False, llm_base_url: str | None = None) -> SearchOutcome:
    """Run (or resume) the Tune search; every trial's outcome as plain rows."""
    from ray import tune

    from a2o.train.trial import orphaned_group_release, reuse_trial_actors, trainable_for
    from searchers.llm_client import use_endpoint

    started = time.perf_counter()
    storage = absolute_if_local(cfg.storage.path("tune"))
    experiment_dir = os.path.join(storage, cfg.storage.experiment_name) if "://" not in storage else f"{storage}/{cfg.storage.experiment_name}"
    trainable = trainable_for(cfg)
    searcher = None
    if resume and tune.Tuner.can_restore(experiment_dir):
        log.info("resuming the search in %s", experiment_dir)
        tuner = tune.Tuner.restore(experiment_dir, trainable=trainable, resume_errored=True)
    else:
        if resume:
            log.warning("--resume: no search to restore at %s; starting a new one", experiment_dir)
        searcher = build_searcher(cfg, labels, llm_base_url)
        scheduler = build_scheduler(cfg)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=cfg.search.num_trials,
                max_concurrent_trials=cfg.search.max_concurrent,
                metric="val_accuracy",
                mode="max",
                reuse_actors=reuse_trial_actors(scheduler),
            ),
            run_config=tune.RunConfig(
                storage_path=storage,
                name=cfg.storage.experiment_name,
                callbacks=[_trial_callback_class()(cfg.train.epochs, cfg.search.trial_retries), orphaned_group_release(), *_result_loggers(cfg)],
                failure_config=tune.FailureConfig(max_failures=cfg.search.trial_retries),
                verbose=0,
            ),
        )
    # A restored searcher talks to THIS run's LLM endpoint (a new embedded server port, an edited
    # config), never to the URL pickled in the experiment state.
    with _without_auto_loggers(), use_endpoint(current_llm_spec(cfg, llm_base_url)):
        results = tuner.fit()
    if searcher is None:  # resumed: the searcher's state (stats, history) as Tune saved it last
        searcher = saved_searcher(cfg, labels, llm_base_url, experiment_dir)
    finished = results.num_terminated + results.num_errors
    # Tune returns normally on Ctrl-C. Every A2O searcher fills its budget, so fewer finished
    # trials than search.num_trials means the search was interrupted.
    if finished < len(results) or len(results) < cfg.search.num_trials:
        raise SearchInterrupted(
            f"the search stopped after {finished} of {cfg.search.num_trials} trials; its state is saved "
            f"in {experiment_dir}: continue with `a2o search --config … --resume`"
        )
    rows = trial_rows(results, cfg.train.epochs)
    stats = dict(getattr(searcher, "stats", {}) or {}) if searcher is not None else {}
    if searcher is not None and hasattr(searcher, "screened") and searcher.screened():
        stats["screened"] = searcher.screened()  # every candidate with its proxy score
    return SearchOutcome(rows, best_row(rows), _jsonable(stats), time.perf_counter() - started)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: repr(o)))


# ---------------------------------------------------------------------------------------------
# 3. final training, test evaluation, best/


def train_and_evaluate_best(
    cfg: ExperimentConfig, classes: ClassSet | list[str], labels: list[str], manifest, *,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Train ``classes`` for the full budget, evaluate on test (clip × view), write best/.

    ``classes`` is a ClassSet (a list of texts is parsed once); ``runtime`` is where the driver
    evaluates (the entry point picks it; None: CPU).

    best/ is self-contained: with the learned detector, its directory is copied to
    ``best/detector/`` and config.yaml says ``detect.learned_model: detector`` (relative to best/),
    so serving runs the very detector the model was trained and evaluated with. metrics.json records
    the detector's name and fingerprint.
    """
    import yaml

    from a2o.detect.base import create_detector, detector_fingerprint
    from a2o.model import load_recognizer
    from a2o.runtime import Runtime
    from a2o.train.evaluate import EvalGeometry, evaluate_videos
    from a2o.train.trial import fit_trial

    detector_dir = None
    if cfg.detect.detector == "learned":
        from a2o.detect import ensure_learned_detector

        detector_dir = ensure_learned_detector(cfg)  # trained (train split only) if the search did not
        if not detector_dir:
            raise TrainingError("the learned detector could not be found or trained; see the log above")
        cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, learned_model=detector_dir))
    classes = ClassSet.parse(classes, where="classes")
    runtime = runtime or Runtime.cpu()
    log.info("final: training %s for %d epochs", list(classes), cfg.train.final_epochs)
    final = fit_trial(cfg, classes, epochs=cfg.train.final_epochs, name="final")
    if not final.checkpoint_path:
        raise TrainingError("the final training wrote no checkpoint")
    with local_checkpoint(final) as checkpoint_dir:  # a copy on this machine when storage is remote
        model_dir = os.path.join(checkpoint_dir, "model")
        model, _meta = load_recognizer(model_dir, classes=classes)  # refuses another channel order
        detector = create_detector(cfg.detect, runtime) if classes else None
        geometry = EvalGeometry.from_config(cfg)
        test_rows = [r for r in manifest.to_pylist() if r["split"] == "test"]
        test = evaluate_videos(model, detector, classes, geometry, test_rows, labels, runtime=runtime) if test_rows else None
        if test is None:
            log.warning("the dataset has no test split: best/metrics.json holds val accuracy only")

        best_dir = os.path.join(local_dir(cfg.storage.root), "best")
        tmp = f"{best_dir}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(model_dir, os.path.join(tmp, "model"))
        best_cfg = cfg
        if detector_dir is not None:
            from a2o.serve.best import DETECTOR_DIR

            copy_tree_to_local(detector_dir, os.path.join(tmp, DETECTOR_DIR))
            best_cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, learned_model=DETECTOR_DIR))
        with open(os.path.join(tmp, "config.yaml"), "w") as fh:
            yaml.safe_dump(config_to_dict(best_cfg), fh, sort_keys=False)
        metrics = {
            "classes": list(classes),
            "labels": labels,
            "val_accuracy": final.metrics.get("val_accuracy"),
            "val_classwise_accuracy": final.metrics.get("classwise_accuracy"),
            "val_confusion_matrix": final.metrics.get("confusion"),  # the report draws it
            "final_epochs": cfg.train.final_epochs,
            "test": test,
            "detector": cfg.detect.detector,
            # Content-based for the learned detector, so it equals that of the copy in best/detector/.
            "detector_fingerprint": detector_fingerprint(cfg.detect),
        }
        with open(os.path.join(tmp, "metrics.json"), "w") as fh:
            json.dump(metrics, fh, indent=2)
        shutil.rmtree(best_dir, ignore_errors=True)
        os.replace(tmp, best_dir)
        publish(best_dir, cfg.storage.path("best"))
    log.info("best model written to %s", best_dir)
    return metrics


def summary_table(rows: list[TrialRow]) -> str:
    """A plain-text table of every trial."""
    lines = [f"{'iter':>4}  {'val_acc':>7}  {'epochs':>6}  {'source':<22}  classes"]
    for row in rows:
        record = row.record
        if record.scored:
            acc = f"{record.val_accuracy:.4f}"
        else:
            acc = "ERROR" if record.status == "error" else "n/a"
        epochs = record.epochs if record.epochs is not None else 0
        lines.append(f"{row.iteration:>4}  {acc:>7}  {epochs:>6}  {(record.source or '-')[:22]:<22}  "
                     f"{', '.join(record.class_set)}")
    return "\n".join(lines)


def write_results(cfg: ExperimentConfig, outcome: SearchOutcome, final: dict[str, Any] | None) -> str:
    root = local_dir(cfg.storage.root)
    results = {
        "config": config_to_dict(cfg),
        "searcher": cfg.search.searcher,
        "scheduler": cfg.search.scheduler,
        "trials": [row.to_dict() for row in outcome.trials],
        "best_trial": outcome.best.to_dict() if outcome.best is not None else None,
        "searcher_stats": outcome.searcher_stats,
        "search_seconds": outcome.seconds,
        "final": final,
    }
    path = os.path.join(root, "results.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(_jsonable(results), fh, indent=2)
    os.replace(path + ".tmp", path)
    with open(os.path.join(root, "trials.txt"), "w") as fh:
        fh.write(summary_table(outcome.trials) + "\n")
    for name in ("results.json", "trials.txt", "llm_replay.jsonl"):
        if os.path.exists(os.path.join(root, name)):
            publish(os.path.join(root, name), cfg.storage.path(name))
    return path


def run_service(
    cfg: ExperimentConfig, *, resume: bool = False, final_training: bool = True, eval_runtime: Runtime | None = None
) -> dict[str, Any]:
    """The whole job. Starts (and stops) the embedded LLM when ``llm.base_url`` is 'local'.

    ``eval_runtime`` is where the driver runs the final test evaluation (the entry point picks it;
    None: CPU). Returns ``results`` (the results.json path), ``best`` (a :class:`TrialRow`),
    ``final`` (best/metrics.json's content, or None) and ``num_trials``.
    """
    import searchers

    started = time.perf_counter()
    preflight_resources(cfg)
    if resume:
        fetch_staged(cfg)  # remote storage: the replay cache of the interrupted run, from the bucket
    manifest, labels = prepare_data(cfg)
    server = None
    llm_base_url = None
    if cfg.search.searcher in searchers.LLM_SEARCHERS and cfg.llm.base_url == "local":
        from searchers.local_llm import start_local_llm

        server = start_local_llm(cfg.llm, local_dir(cfg.storage.path("logs")))
        llm_base_url = server.base_url
    try:
        preflight_llm(cfg, llm_base_url)
        outcome = run_search(cfg, labels, resume=resume, llm_base_url=llm_base_url)
    finally:
        if server is not None:
            server.stop()
        # Remote storage: the replay cache goes to the bucket even when the search was interrupted,
        # so a resume from another machine replays the same LLM answers.
        replay = os.path.join(local_dir(cfg.storage.root), "llm_replay.jsonl")
        if _is_remote(cfg.storage.root) and os.path.exists(replay):
            publish(replay, cfg.storage.path("llm_replay.jsonl"))
    log.info("search finished in %.1f s:\n%s", outcome.seconds, summary_table(outcome.trials))
    final = None
    if outcome.best is None:
        write_results(cfg, outcome, None)
        raise TrainingError("every trial failed; see results.json and the Tune logs under storage/tune")
    if final_training:
        final = train_and_evaluate_best(cfg, outcome.best.record.class_set, labels, manifest, runtime=eval_runtime)
    path = write_results(cfg, outcome, final)
    log.info("results: %s (%.1f s in all)", path, time.perf_counter() - started)
    return {"results": path, "best": outcome.best, "final": final, "num_trials": len(outcome.trials),
            "searcher_stats": outcome.searcher_stats}


def proposal_summary(stats: dict[str, Any]) -> str | None:
    """'8 proposals: 6 from the LLM, 2 fallbacks (unreachable 1, unusable 1)', or None without LLM stats."""
    if not stats or "suggestions" not in stats:
        return None
    causes: dict[str, int] = {}
    for entry in stats.get("per_suggestion") or []:
        source = str(entry.get("source", ""))
        if source.startswith("fallback"):
            cause = source.split(":", 1)[-1]
            causes[cause] = causes.get(cause, 0) + 1
    fallbacks = int(stats.get("fallbacks") or 0)
    text = f"{stats['suggestions']} proposals: {stats['suggestions'] - fallbacks} from the LLM or the config, {fallbacks} fallbacks"
    if causes:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(causes.items())) + ")"
    return text
