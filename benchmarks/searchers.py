"""Searcher comparison on A2O-Synth: the same trial budget for every searcher, over several seeds.

    python -m benchmarks.searchers [--seeds 3] [--trials 6] [--jobs 2] [--quick] [--out DIR] [--llm local|fake|none]

Searchers: ICRL, Static prompts, Prompt pool, OOD-history (ICRL with the history of *another
seed's* ICRL run injected), Optuna TPE over vocabulary flags, random subsets, and the hybrid
{lr, wd} + ICRL space; ICRL, random, Optuna and hybrid also run under ASHA (``--asha``).

How trials run (said again in the printout): each trial runs **in a benchmark process**, not
through Ray Train or Tune, so a few hundred trials fit on 2 CPU cores; ``--jobs`` searches run at
once in spawned processes. The trial runs the product's own training steps
(:func:`a2o.train.epoch.build_training`, ``train_one_epoch``, ``evaluate``: what every Ray Train
worker runs) under the recipe of ``benchmarks/maps_matter.py`` (:func:`benchmarks._common.build_experiment`):
the world's learned detector fills the real map cache, a frozen tiny V-JEPA2 (the same saved weights for
every trial) with a fresh adapter, zero-init projection and probe is trained for ``--epochs``
epochs, and per-epoch val accuracy is the reward. Searchers are driven through their Ray Tune
``Searcher`` API (``suggest`` / ``on_trial_result`` / ``on_trial_complete``), one trial at a time
per search; ASHA is Ray's ``ASHAScheduler`` called with the same per-epoch results. Test accuracy is
that of the best-val trial's model on the test split (one centre clip per video), so the search
never sees test.

LLM (``--llm``): ``local`` (default) starts the embedded llama.cpp server (needs
``make install-llm``; the benchmark stops with that message otherwise); ``fake`` is a *scripted*
client that answers every prompt with a seeded random subset of the vocabulary -- it exercises
the LLM searchers' machinery but is **not a language model**, and every table says so; ``none``
skips the LLM searchers. When ``A2O_LLM_BASE_URL`` is set, the LLM searchers also run against
that endpoint (model ``A2O_LLM_MODEL``, key in the env var named by ``A2O_LLM_API_KEY_ENV``,
default ``OPENAI_API_KEY``).

Output (``--out``, default ``runs/bench-searchers``): ``runs/<method>_seed<k>/results.json``
(readable by ``a2o report``), ``trials.parquet``, ``runs.parquet`` and ``summary.md``; the shared
storage (frames, maps, tiny weights) is ``storage/``. Then ``a2o report <out>`` draws it all.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from a2o.detect.classes import ClassSet
from benchmarks._common import Geometry
from searchers.llm_client import public_url
from searchers.vocabulary import generic_vocabulary

log = logging.getLogger("benchmarks.searchers")

# What a real user passes: the shipped generic list of common nouns (the world's names sit among
# hundreds of others), and a setting description that names no object of the world.
VOCABULARY = generic_vocabulary()
TASK = ("A2O-Synth household: short, low-resolution, top-down clips of someone doing everyday chores "
        "and kitchen tasks in a cluttered room; several household items stand around in every clip.")
LLM_SEARCHERS = ("icrl", "static", "pool", "ood", "hybrid")
BASELINES = ("optuna", "optuna-slots", "random")  # LLM-free: the longer budget (--baseline-trials)
ALL_SEARCHERS = (*LLM_SEARCHERS, *BASELINES)
OPTIONAL_SEARCHERS = ("icrl-df", "icrl-cold", "icrl-noconf", "icrl-uses", "icrl-k4", "icrl-k8")  # run when asked for
DEFAULT_ASHA = ("icrl", "random")
# ICRL variants tried when ICRL misses a bar (opt-in: --searchers icrl-df,icrl-cold,icrl-noconf):
# name -> (registered searcher, search-config changes, llm-config changes)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "optuna-slots": ("optuna", {}, {}),
    "icrl-df": ("icrl", {"detection_feedback": True}, {}),  # names the classes the detector never found
    "icrl-cold": ("icrl", {}, {"temperature": 0.2}),  # benchmarks/llm_agent.py: best first-proposal recall
    "icrl-noconf": ("icrl", {"confusion_feedback": False}, {}),  # the paper's history: is the feedback worth it?
    # benchmarks/proposal_audit.py: the model names the objects in its uses pairs, then proposes category words
    "icrl-uses": ("icrl", {"fill_from_uses": True}, {}),
    # screened ICRL (issue: K candidates per iteration, the map-only proxy picks the one to train)
    # (a K-set reply is longer: llm.max_tokens must fit it, searchers.screening.tokens_needed)
    "icrl-k4": ("icrl", {"screen_candidates": 4}, {"max_tokens": 768}),
    "icrl-k8": ("icrl", {"screen_candidates": 8}, {"max_tokens": 1024}),
}
CHECKPOINTS = (8,)  # budgets at which a longer run's best-so-far model is also tested (best@8)
# OOD-history: the history of an ICRL search on another world, as the paper injects Kinetics
# history into MultiSports. The label is what the prompt calls that dataset.
OOD_WORLD = "tiny"
OOD_LABEL = "another dataset (A2O-Synth tiny: a hand moving simple objects around a room)"
TASKS = {  # the setting description a user would write; it names no object of the world
    "household": TASK,
    "tiny": "A2O-Synth tiny: short, low-resolution clips of a hand moving simple things around a room.",
}


# ---------------------------------------------------------------------------------------------
# the fixed experiment


@dataclass
class Bench:
    """The dataset, frame store, map cache and geometry every trial shares."""

    cfg: Any  # a2o.config.ExperimentConfig with model.checkpoint resolved to the saved tiny weights
    store: Any  # in-memory frame source over the frame store
    cache: Any  # a2o.detect.cache.MapCache
    factory: Any  # ConfigDetectorFactory (the learned detector)
    labels: list[str]
    splits: dict[str, tuple[list[str], list[int]]]
    action_names: list[str]
    map_memo: dict = field(default_factory=dict)
    store_for_cache: Any = None  # the frame-store view MapCache.ensure_maps reads (set by setup)
    frames_root: str = ""  # the frame store on disk (a TrialInputs field; trials read self.store)
    world: str = ""  # the A2O-Synth preset (or spec path)


class MemoryFrames:
    """The frame store read once into memory (the A2O-Synth grid is a few MB)."""

    def __init__(self, store, video_ids: Sequence[str]):
        self.records = {vid: store.read(vid) for vid in video_ids}

    def read(self, video_id: str):
        return self.records[video_id]


class MemoMaps:
    """``read(video_id) -> (T, C, h, w) uint8`` from verified map-cache entries, memoised per (class, video)."""

    def __init__(self, cache, class_set: ClassSet, memo: dict):
        self.cache, self.classes, self.memo = cache, list(class_set), memo

    def read(self, video_id: str) -> np.ndarray:
        planes = []
        for text in self.classes:
            key = (text, video_id)
            if key not in self.memo:
                self.memo[key] = self.cache.read_entry(text, video_id)
            planes.append(self.memo[key])
        return np.stack(planes, axis=1)


def task_for(preset: str) -> str:
    """The setting description a user would write for ``preset`` (a spec path: the spec's own)."""
    if preset in TASKS:
        return TASKS[preset]
    from a2o.data.synth.spec import load_world_spec

    return load_world_spec(preset).description


def setup(out_dir: str, *, preset: str, geometry: Geometry, epochs: int) -> Bench:
    """Generate A2O-Synth, decode it once into the frame store, save the tiny V-JEPA2 weights.

    Idempotent (each parallel job calls it; only the first writes). ``geometry`` is the model and
    optimiser recipe of ``benchmarks/maps_matter.py``, under which maps of the right objects help.
    """
    from a2o.data.framestore import FrameStore
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import load_dataset_info
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import map_cache_for
    from a2o.train.trial import frames_root, label_names, resolve_checkpoint
    from benchmarks._common import build_experiment

    # The maps_matter recipe (learned detector, trained once: a lock keeps parallel jobs from
    # training it twice), plus what a search and its final evaluation read.
    cfg = build_experiment(
        out_dir, preset=preset, detector="learned", geometry=geometry, epochs=epochs,
        storage_root=os.path.abspath(os.path.join(out_dir, "storage")),
        overrides={
            "train": {"final_epochs": epochs, "weight_decay": 0.05, "eval_segments": 1, "eval_views": 1},
            "search": {"max_classes": 8, "vocabulary": VOCABULARY, "task_description": task_for(preset)},
            "llm": {"prompt": "small"},
            "storage": {"experiment_name": "bench"},
        },
    )
    synth = cfg.data.root
    manifest = load_manifest(cfg.data)
    store = FrameStore(frames_root(cfg))
    rows = store.manifest().select(["video_id", "label_id", "split"]).to_pylist()
    splits = {s: ([r["video_id"] for r in rows if r["split"] == s], [int(r["label_id"]) for r in rows if r["split"] == s])
              for s in ("train", "val", "test")}
    labels = label_names(manifest)
    cfg = resolve_checkpoint(cfg, len(labels))
    bench = Bench(
        cfg=cfg, store=MemoryFrames(store, [r["video_id"] for r in rows]),
        cache=map_cache_for(cfg.storage, cfg.data, cfg.detect), factory=ConfigDetectorFactory(cfg.detect),
        labels=labels, splits=splits, action_names=list(load_dataset_info(synth)["actions"]),
    )
    bench.store_for_cache = _StoreForCache(store, bench.store)
    bench.frames_root = frames_root(cfg)
    bench.world = preset
    return bench


# ---------------------------------------------------------------------------------------------
# one trial, in process


@dataclass
class TrialRun:
    metrics: list[dict[str, Any]]  # one per epoch reached
    model: Any
    wall_s: float
    maps_computed: int
    maps_reused: int
    stopped_early: bool


def _maps_for(bench: Bench, class_set: ClassSet, split_names: Sequence[str]):
    if not class_set:
        return None, 0, 0
    video_ids = [vid for s in split_names for vid in bench.splits[s][0]]
    reader = bench.cache.ensure_maps(class_set, bench.store_for_cache, bench.factory, video_ids=video_ids)
    return MemoMaps(bench.cache, class_set, bench.map_memo), reader.stats.computed_pairs, reader.stats.reused_pairs


def trial_spec(bench: Bench, class_set: ClassSet, maps, *, lr: float, weight_decay: float, seed: int,
               extra_metrics: dict[str, Any] | None = None):
    """The product's :class:`~a2o.train.spec.TrialSpec` of one benchmark trial: the bench's config
    with the trial's lr / weight decay and the search seed as the training seed."""
    from a2o.train.spec import TrialInputs, TrialSpec

    cfg = bench.cfg
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=lr, weight_decay=weight_decay, seed=seed))
    (train_ids, train_labels), (val_ids, val_labels) = bench.splits["train"], bench.splits["val"]
    inputs = TrialInputs(
        frames_root=bench.frames_root, maps=maps, class_set=class_set, labels=tuple(bench.labels),
        train_ids=tuple(train_ids), train_labels=tuple(train_labels),
        val_ids=tuple(val_ids), val_labels=tuple(val_labels),
    )
    return TrialSpec.from_config(cfg, inputs, extra_metrics=extra_metrics)


def run_trial(bench: Bench, class_set: ClassSet, *, lr: float, weight_decay: float, seed: int,
              on_epoch: Callable[[dict[str, Any]], bool]) -> TrialRun:
    """Train ``class_set`` for ``train.epochs``; ``on_epoch(metrics)`` returns True to stop early (ASHA).

    The product's trial loop (:func:`a2o.train.epoch.build_training` then
    :func:`a2o.train.epoch.run_epochs`, what every Ray Train worker runs) on one CPU rank,
    configured with the in-memory frames, the memoised maps and val batches of 64.
    """
    import torch

    from a2o.detect.coverage import class_coverage
    from a2o.runtime import Runtime
    from a2o.train.epoch import build_training, run_epochs

    started = time.perf_counter()
    maps, computed, reused = _maps_for(bench, class_set, ("train", "val"))
    # as a2o.train.trial.prepare_inputs: the classes' detection coverage rides along as a metric
    coverage = class_coverage(maps, class_set, bench.splits["train"][0], seed=seed) if maps is not None else {}
    spec = trial_spec(bench, class_set, maps, lr=lr, weight_decay=weight_decay, seed=seed,
                      extra_metrics={"class_coverage": coverage})
    runtime = Runtime.cpu(spec.train.precision)
    torch.manual_seed(seed)  # the adapter's and probe's initial weights
    training = build_training(spec, bench.store, maps, wrap=lambda model: model.to(runtime.device), eval_batch_size=64)
    reports: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any]) -> bool:
        metrics = {**metrics, "training_iteration": metrics["epoch"], "time_total_s": time.perf_counter() - started}
        reports.append(metrics)
        return on_epoch(metrics)

    epochs = run_epochs(training, spec, runtime, on_epoch=report, setup_time_s=0.0)
    return TrialRun(reports, training.core, time.perf_counter() - started, computed, reused,
                    stopped_early=epochs < spec.train.epochs)


def evaluate_test(bench: Bench, class_set: ClassSet, model) -> dict[str, Any]:
    """Accuracy of ``model`` on the test split (one centre clip per video)."""
    import torch

    from a2o.runtime import Runtime
    from a2o.train.data import ClipDataset
    from a2o.train.epoch import evaluate
    from a2o.train.metrics import classwise_from_confusion

    maps, _, _ = _maps_for(bench, class_set, ("test",))
    ids, labels = bench.splits["test"]
    loader = torch.utils.data.DataLoader(
        ClipDataset(ids, labels, bench.store, maps, size=bench.cfg.data.resolution, train=False), batch_size=64)
    confusion = evaluate(model, loader, len(bench.labels), Runtime.cpu(bench.cfg.train.precision)).cpu().numpy()
    return {"accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
            "classwise_accuracy": classwise_from_confusion(confusion, bench.labels),
            "confusion_matrix": confusion.tolist(), "num_samples": int(confusion.sum()),
            "segments": 1, "views": 1}


# ---------------------------------------------------------------------------------------------
# LLMs


class ScriptedLLM:
    """``--llm fake``: answers every prompt with a seeded random subset of the vocabulary.

    Not a language model: it ignores the prompt. It lets the LLM searchers' prompting, parsing,
    re-asks, history and fallback run end to end where no LLM is installed.
    """

    def __init__(self, vocabulary: Sequence[str], seed: int, max_classes: int = 8):
        self.vocabulary, self.max_classes = list(vocabulary), max_classes
        self.rng = random.Random(seed)

    def complete(self, messages, *, response_format=None, seed=None):
        from searchers.llm_client import LLMReply

        count = self.rng.randint(2, self.max_classes)
        words = self.rng.sample(self.vocabulary, min(count, len(self.vocabulary)))
        text = json.dumps({"classes": words}) if response_format else "\n".join(words)
        return LLMReply(text=text, prompt_tokens=0, completion_tokens=0, latency_s=0.0)


@dataclass(frozen=True)
class LLMChoice:
    """One LLM endpoint of the LLM searchers; plain values, so it pickles into spawned jobs."""

    label: str  # "local" | "fake" | "remote"
    llm: Any = None  # a2o.config.LLMConfig (None for "fake")
    base_url: str = ""  # the endpoint the client talks to ("" for "fake")

    @property
    def model(self) -> str:
        """The model that answers: the embedded model's name, the endpoint's --llm-model, or 'scripted'."""
        if self.llm is None:
            return "scripted stand-in (not a language model)" if self.label == "fake" else "see each run's results.json"
        return self.llm.local_model if self.llm.base_url == "local" else (self.llm.model or "(server default)")

    def describe(self) -> dict[str, str]:
        """What the results record about the LLM (no key: only the NAME of its env var)."""
        return {"label": self.label, "model": self.model, "url": public_url(self.base_url),
                "api_key_env": self.llm.api_key_env if self.llm is not None and self.label == "remote" else ""}


def llm_choices(mode: str, out_dir: str, stack: list, *, model: str = "", api_key_env: str = "OPENAI_API_KEY",
                temperature: float = 0.7, llm_threads: int | None = None) -> list[LLMChoice]:
    """The LLM endpoint of the LLM searchers: ``local`` (starts the embedded server), ``fake``,
    ``none``, or the URL of any OpenAI-compatible endpoint (``model`` and the key's env var name)."""
    from a2o.config import LLMConfig

    if mode == "none":
        return []
    if mode == "fake":
        return [LLMChoice("fake")]
    if mode == "local":
        if importlib.util.find_spec("llama_cpp") is None:
            raise SystemExit(
                "benchmarks: the embedded LLM is not installed (llama-cpp-python). Run `make install-llm` "
                "(pip install 'a2o[local-llm]', ~8 min build), or pass --llm URL for an OpenAI-compatible "
                "endpoint, --llm fake for a scripted stand-in (not a language model), or --llm none."
            )
        from searchers.local_llm import start_local_llm

        # timeout: the embedded server answers one request at a time, and llama.cpp slows many-fold
        # while trials share its cores; a 120 s timeout then retried (re-generated) queued requests.
        llm = LLMConfig(base_url="local", prompt="small", temperature=temperature, timeout_s=900.0,
                        **({"local_model": model} if model else {}))
        server = start_local_llm(llm, os.path.join(out_dir, "logs"), n_threads=llm_threads)
        stack.append(server)
        return [LLMChoice("local", llm, server.base_url)]
    if not mode.startswith(("http://", "https://")):
        raise SystemExit(f"--llm {mode!r}: use local, fake, none, or the http(s) URL of an OpenAI-compatible endpoint")
    llm = LLMConfig(base_url=mode, model=model, api_key_env=api_key_env, prompt="small", temperature=temperature)
    return [LLMChoice("remote", llm, mode)]


# ---------------------------------------------------------------------------------------------
# one search


@dataclass(frozen=True)
class Method:
    searcher: str
    scheduler: str  # "fifo" | "asha"
    llm: LLMChoice | None

    @property
    def name(self) -> str:
        name = self.searcher + ("+asha" if self.scheduler == "asha" else "")
        return f"{name}[{self.llm.label}]" if self.llm and self.llm.label != "local" else name

    @property
    def slug(self) -> str:
        return self.name.replace("+", "_").replace("[", "_").replace("]", "")


class _TrialRef:  # what Ray's ASHAScheduler needs of a trial
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def is_llm_method(name: str) -> bool:
    """An LLM searcher or a variant of one."""
    return VARIANTS.get(name, (name,))[0] in LLM_SEARCHERS


def method_config(bench: Bench, method: Method, *, seed: int, trials: int):
    """The bench config's ``search``/``llm`` sections for ``method``: what a user's config would say."""
    searcher, search_options, llm_options = VARIANTS.get(method.searcher, (method.searcher, {}, {}))
    # A comparison records its fallbacks (the table's share), it never stops on them.
    search = dataclasses.replace(bench.cfg.search, searcher=searcher, scheduler=method.scheduler,
                                 num_trials=trials, seed=seed, max_fallback_share=1.0, **search_options)
    llm = method.llm.llm if method.llm is not None and method.llm.llm is not None else bench.cfg.llm
    return search, dataclasses.replace(llm, **llm_options)


def make_searcher(bench: Bench, method: Method, *, seed: int, trials: int, ood_history: str | None,
                  cache_dir: str):
    """The searcher of ``method``, built the way ``a2o search`` builds it (``searcher_from_config``).

    Benchmark-only options: Optuna's practitioner space (``optuna-slots``), hybrid's lr range, and
    the label of the injected OOD history.
    """
    import searchers

    search, llm = method_config(bench, method, seed=seed, trials=trials)
    options: dict[str, Any] = {}
    if method.searcher == "optuna-slots":
        options["space"] = "slots"
    if method.llm is not None and method.llm.llm is None and search.searcher != "pool":  # scripted: built below
        options.update(detection_feedback=search.detection_feedback, confusion_feedback=search.confusion_feedback)
        if search.screen_candidates > 1:
            options["screen_candidates"] = search.screen_candidates
    if method.searcher == "ood":
        search = dataclasses.replace(search, ood_history=ood_history or "")
        options["ood_label"] = OOD_LABEL
    if search.screen_candidates > 1:
        # The map-only proxy over this bench's map cache, one per search (its feature memo starts
        # cold, so each search pays for reading its own candidates' maps; the map cache is shared,
        # as a user's is). Train and val only.
        from a2o.train.proxy import MapProxy

        options["screen"] = MapProxy(lambda class_set: _maps_for(bench, class_set, ("train", "val"))[0],
                                     bench.splits["train"], bench.splits["val"], len(bench.labels), seed=seed)
    if method.searcher == "hybrid":
        # {lr, wd} around the recipe's lr. The searcher's default range, 1e-5..1e-3, is a fine-tune
        # range for a pretrained V-JEPA2; with it, this frozen tiny model stayed at chance on 2 of
        # 3 seeds (measured: the map path does not take off within the budget at those rates).
        options["lr_range"] = (bench.cfg.train.lr / 10.0, bench.cfg.train.lr * 3.0)
    if method.llm is not None and method.llm.llm is None:  # the scripted stand-in: no endpoint
        kwargs = dict(max_classes=search.max_classes, num_trials=trials, seed=seed, vocabulary=VOCABULARY,
                      action_names=bench.action_names, task_description=search.task_description,
                      llm=ScriptedLLM(VOCABULARY, seed), response_format="text",
                      epochs_per_trial=bench.cfg.train.epochs, **options)
        if search.searcher != "pool":
            kwargs["prompt"] = "small"
        if search.searcher == "ood":
            kwargs["ood_history"] = ood_history
        return searchers.create_searcher(search.searcher, **kwargs)
    base_url = method.llm.base_url if method.llm is not None else None
    cache = os.path.join(cache_dir, f"{method.slug}_seed{seed}.jsonl")
    return searchers.searcher_from_config(search, llm, action_names=bench.action_names, llm_base_url=base_url,
                                          replay_cache_path=cache, epochs_per_trial=bench.cfg.train.epochs,
                                          options=options)


@dataclass
class ProgressEntry:
    """One finished trial of an interrupted search: its results row, its epochs' metrics as the
    searcher saw them, and its test figure if it was the best so far."""

    row: dict[str, Any]
    metrics: list[dict[str, Any]]
    best_final: dict | None = None

    def matches(self, config: dict) -> bool:
        """The searcher proposed the same trial again (same set, same lr / wd)."""
        return (list(config.get("classes") or []) == self.row["classes"]
                and config.get("lr") == self.row["lr"] and config.get("weight_decay") == self.row["weight_decay"])


@dataclass
class SearchProgress:
    """A search's checkpoint: its finished trials, rewritten (atomically) after each one.

    Resuming drives a fresh searcher from the start: its proposals repeat (seeded searchers, and
    the LLM replay cache returns the same replies to the same prompts), and each one that matches
    a checkpointed trial gets that trial's recorded epochs instead of a retrain. The first proposal
    that differs is logged and trained, and the rest of the checkpoint is dropped: a resumed
    search is never a mix of two histories.
    """

    path: str | None
    key: dict[str, Any]
    entries: list[ProgressEntry] = field(default_factory=list)
    search_seconds: float = 0.0
    replayed: int = 0  # checkpointed trials this run replayed
    trained: int = 0  # trials this run trained
    # --keep: a second copy of the checkpoint and of the LLM replay cache (a folder in git), so a
    # search interrupted by a session's end resumes in the next session from a fresh checkout.
    mirror: str | None = None
    replay_mirror: tuple[str, str] | None = None  # (replay cache folder, its copy)

    VERSION = 1

    @classmethod
    def load(cls, path: str | None, **key: Any) -> SearchProgress:
        progress = cls(path, key)
        saved = _load_json_lenient(path) if path else None
        if not saved:
            return progress
        if saved.get("version") != cls.VERSION or saved.get("key") != key:
            log.warning("ignoring the search checkpoint %s: it belongs to %s, not %s", path, saved.get("key"), key)
            return progress
        progress.entries = [ProgressEntry(e["row"], e["metrics"], e.get("best_final")) for e in saved["entries"]]
        progress.search_seconds = float(saved.get("search_seconds", 0.0))
        log.info("%s seed %s: resuming after %d checkpointed trial(s) (%s)", key.get("method"), key.get("seed"),
                 len(progress.entries), path)
        return progress

    def append(self, row: dict, metrics: list[dict], best_final: dict | None, *, search_seconds: float) -> None:
        """Record a trial just trained after the ``replayed`` ones (a dropped rest is overwritten)."""
        if self.path is None:
            return
        self.entries = self.entries[:self.replayed + self.trained] + [ProgressEntry(row, list(metrics), best_final)]
        self.trained += 1
        self.search_seconds = search_seconds
        document = {"version": self.VERSION, "key": self.key, "search_seconds": search_seconds,
                    "entries": [dataclasses.asdict(e) for e in self.entries]}
        _write_json(self.path, document)
        if self.replay_mirror is not None and os.path.isdir(self.replay_mirror[0]):
            shutil.copytree(*self.replay_mirror, dirs_exist_ok=True)  # before the checkpoint that needs it
        if self.mirror is not None:
            _write_json(self.mirror, document)


def run_search(bench: Bench, method: Method, *, seed: int, trials: int, ood_history: str | None = None,
               cache_dir: str = "", progress_path: str | None = None, keep_dir: str | None = None) -> dict:
    """Drive one searcher for ``trials`` trials; return a results.json-shaped dict.

    ``ood_history``: for OOD-history, the results.json of the search on the other world.
    ``cache_dir``: where the run's LLM replay cache lives (a rerun replays the same replies).
    ``progress_path``: the search's checkpoint, rewritten after every trial. A search interrupted
    mid-way (Ctrl-C, a session's end) and started again with the same file continues after its
    last finished trial: see :class:`SearchProgress`.
    ``keep_dir``: ``--keep``'s copy of the run folder; the checkpoint and the replay cache are
    mirrored there after every trial.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler
    from ray.tune.search import Searcher

    from a2o.config import config_to_dict

    epochs = bench.cfg.train.epochs
    searcher = make_searcher(bench, method, seed=seed, trials=trials, ood_history=ood_history,
                             cache_dir=cache_dir or os.path.join(os.path.dirname(bench.frames_root), "llm_replay"))
    scheduler = (ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=epochs,
                               grace_period=1, reduction_factor=2) if method.scheduler == "asha" else None)
    progress = SearchProgress.load(progress_path, method=method.name, seed=seed, trials=trials)
    if keep_dir and progress_path:
        replay_dir = cache_dir or os.path.join(os.path.dirname(bench.frames_root), "llm_replay")
        work_dir = os.path.dirname(replay_dir)  # keep_dir is its kept copy
        progress.mirror = os.path.join(keep_dir, os.path.relpath(progress_path, work_dir))
        progress.replay_mirror = (replay_dir, os.path.join(keep_dir, "llm_replay"))
    started = time.perf_counter() - progress.search_seconds
    rows: list[dict[str, Any]] = []
    best_row, best_final = None, None
    final_at: dict[str, dict] = {}
    replay = list(progress.entries)
    for index in range(trials):
        trial_id = f"{method.slug}_s{seed}_{index + 1:03d}"
        config = searcher.suggest(trial_id)
        while config is None:  # an LLM searcher answers from its background thread
            time.sleep(0.02)
            config = searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            break
        ref = _TrialRef(trial_id)
        if scheduler is not None:
            scheduler.on_trial_add(None, ref)

        def on_epoch(metrics, trial_id=trial_id, ref=ref) -> bool:
            searcher.on_trial_result(trial_id, metrics)
            return scheduler is not None and scheduler.on_trial_result(None, ref, metrics) == TrialScheduler.STOP

        classes = list(config.get("classes") or [])
        lr = float(config.get("lr", bench.cfg.train.lr))
        weight_decay = float(config.get("weight_decay", bench.cfg.train.weight_decay))
        entry = replay.pop(0) if replay else None
        if entry is not None and not entry.matches(config):
            log.warning("%s seed %d: trial %d's proposal differs from the interrupted run's (%s, was %s): "
                        "training from here, %d checkpointed trial(s) dropped", method.name, seed, index + 1,
                        ", ".join(classes), ", ".join(entry.row["classes"]), len(replay) + 1)
            entry, replay = None, []
        error, run, epoch_metrics = None, None, []
        if entry is not None:
            # Checkpointed: the searcher and scheduler see the recorded epochs; nothing is retrained.
            epoch_metrics, error = list(entry.metrics), entry.row["error"]
            for metrics in epoch_metrics:
                if on_epoch(metrics):
                    break
            progress.replayed += 1
        else:
            try:
                # The searcher's texts enter here (as in a2o.train.trial.run_trial): a bad set is a failed trial.
                class_set = ClassSet.parse(classes, where="trial config 'classes'")
                run = run_trial(bench, class_set, lr=lr, weight_decay=weight_decay, seed=seed, on_epoch=on_epoch)
                epoch_metrics = run.metrics
            except Exception as exc:  # noqa: BLE001 - a failed trial is a result, as in Tune
                log.warning("trial %s failed: %s", trial_id, exc)
                error = f"{type(exc).__name__}: {exc}"[:300]
        last = epoch_metrics[-1] if epoch_metrics else None
        searcher.on_trial_complete(trial_id, result=last, error=error is not None)
        if scheduler is not None:
            scheduler.on_trial_complete(None, ref, last) if last else scheduler.on_trial_remove(None, ref)
        row = entry.row if entry is not None else {
            "iteration": index + 1, "trial_id": trial_id, "classes": classes,
            "proposal_source": config.get("proposal_source", method.searcher),
            "lr": config.get("lr"), "weight_decay": config.get("weight_decay"),
            "val_accuracy": last["val_accuracy"] if last else None,
            "classwise_accuracy": last["classwise_accuracy"] if last else {},
            "confusion": last["confusion"] if last else None,
            "confusion_labels": last["confusion_labels"] if last else [],
            "epochs": last["epoch"] if last else 0,
            "val_accuracy_per_epoch": [m["val_accuracy"] for m in run.metrics] if run else [],
            "maps_computed": run.maps_computed if run else 0, "maps_reused": run.maps_reused if run else 0,
            # a screened proposal's proxy seconds (its candidates' detection and scoring) count as the trial's
            "time_s": (run.wall_s if run else 0.0) + float((config.get("screen") or {}).get("proxy_seconds") or 0.0),
            "error": error, "stopped_early": bool(run and run.stopped_early),
            **({"screen": config["screen"]} if config.get("screen") else {}),
        }
        rows.append(row)
        if last and (best_row is None or last["val_accuracy"] > best_row["val_accuracy"]):
            # The new best's test figure, taken now so that no model is kept (nor checkpointed). The
            # searcher never sees it; it is read only at T = 8 and at the end.
            best_row = row
            best_final = entry.best_final if entry is not None else _final(bench, row, run.model)
        value = f"{row['val_accuracy']:.3f}" if row["val_accuracy"] is not None else "ERROR"
        log.info("%-14s seed %d trial %d/%d: val %s [%s] %s%s", method.name, seed, index + 1, trials, value,
                 row["proposal_source"], ", ".join(classes), " (checkpointed)" if entry is not None else "")
        if index + 1 in CHECKPOINTS and index + 1 < trials and best_row is not None:
            # A budget-8 search of this method is this run's first 8 trials: keep its test figure.
            final_at[str(index + 1)] = best_final
        if entry is None:
            progress.append(row, epoch_metrics, best_final if best_row is row else None,
                            search_seconds=time.perf_counter() - started)
    search_seconds = time.perf_counter() - started
    final = best_final
    stats = dict(getattr(searcher, "stats", {}) or {})
    stats.pop("per_suggestion", None)
    screened = searcher.screened() if hasattr(searcher, "screened") else []
    config = config_to_dict(bench.cfg)
    search, _ = method_config(bench, method, seed=seed, trials=trials)  # a config a2o reads back ('optuna', not 'optuna-slots')
    config["search"].update(searcher=search.searcher, scheduler=search.scheduler, num_trials=trials, seed=seed)
    return {
        "config": config, "searcher": method.searcher, "scheduler": method.scheduler, "trials": rows,
        "best_trial": best_row, "searcher_stats": stats, "search_seconds": search_seconds, "final": final,
        "final_at": final_at, **({"screened": screened} if screened else {}),
        "benchmark": {"method": method.name, "seed": seed, "llm": method.llm.label if method.llm else None,
                      "llm_endpoint": method.llm.describe() if method.llm else None, "world": bench.world,
                      "driver": "in-process trials (a2o.train.epoch.run_epochs), Searcher API driven directly",
                      "checkpointed_trials": progress.replayed},
    }


def _final(bench: Bench, best_row: dict, best_model) -> dict:
    """The best-val trial's model on the test split (no retraining)."""
    return {"classes": best_row["classes"], "labels": bench.labels, "val_accuracy": best_row["val_accuracy"],
            "test": evaluate_test(bench, ClassSet.parse(best_row["classes"]), best_model),
            "detector_fingerprint": bench.factory.fingerprint, "source": "best search trial (no retraining)"}


# ---------------------------------------------------------------------------------------------
# summary


def write_parquet(runs: list[dict], out_dir: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    trial_rows, run_rows = [], []
    for run in runs:
        bench = run["benchmark"]
        elapsed = 0.0
        for t in run["trials"]:
            elapsed += t["time_s"]
            trial_rows.append({
                "method": bench["method"], "searcher": run["searcher"], "scheduler": run["scheduler"],
                "llm": bench["llm"], "seed": bench["seed"], "iteration": t["iteration"], "classes": t["classes"],
                "proposal_source": str(t["proposal_source"]), "lr": t["lr"], "weight_decay": t["weight_decay"],
                "val_accuracy": t["val_accuracy"], "epochs": t["epochs"], "stopped_early": t["stopped_early"],
                "time_s": t["time_s"], "cumulative_trial_s": elapsed, "error": t["error"],
            })
        stats = run["searcher_stats"]
        run_rows.append({
            "method": bench["method"], "searcher": run["searcher"], "scheduler": run["scheduler"],
            "llm": bench["llm"], "seed": bench["seed"], "trials": len(run["trials"]),
            "best_val_accuracy": run["best_trial"]["val_accuracy"] if run["best_trial"] else None,
            "best_classes": run["best_trial"]["classes"] if run["best_trial"] else [],
            "test_accuracy": run["final"]["test"]["accuracy"] if run["final"] else None,
            "search_seconds": run["search_seconds"], "trial_seconds": sum(t["time_s"] for t in run["trials"]),
            "llm_calls": stats.get("llm_calls"), "prompt_tokens": stats.get("prompt_tokens"),
            "completion_tokens": stats.get("completion_tokens"), "llm_time_s": stats.get("llm_time_s"),
            "fallbacks": stats.get("fallbacks"),
        })
    pq.write_table(pa.Table.from_pylist(trial_rows), os.path.join(out_dir, "trials.parquet"))
    pq.write_table(pa.Table.from_pylist(run_rows), os.path.join(out_dir, "runs.parquet"))


# ---------------------------------------------------------------------------------------------
# entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.searchers", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per method (paired across methods)")
    parser.add_argument("--trials", type=int, default=8, help="trial budget T of the LLM searchers (and hybrid)")
    parser.add_argument("--baseline-trials", type=int, default=20,
                        help="trial budget of Optuna and random search (their best@8 is reported too)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny preset, 2 seeds, 3 / 4 trials, 3 epochs")
    parser.add_argument("--out", default="runs/bench-searchers", help="output folder")
    parser.add_argument("--llm", default="local",
                        help="LLM of the LLM searchers: 'local' (embedded llama.cpp), the URL of any "
                             "OpenAI-compatible endpoint, 'fake' (scripted stand-in, not an LLM) or 'none'")
    parser.add_argument("--llm-model", default="", help="model name: sent to a --llm URL, or the embedded model")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="NAME of the env var holding a --llm URL's key")
    parser.add_argument("--temperature", type=float, default=0.7, help="LLM sampling temperature")
    parser.add_argument("--llm-threads", type=int, default=1,
                        help="threads of the embedded LLM server (0 = every CPU). 1 by default: with --jobs "
                             "trainings on the same cores, llama.cpp's spinning threads slow it; measured on 2 "
                             "busy cores, a 254-token prompt took 23-24 s on 1 thread, 32-34 s on 2")
    parser.add_argument("--searchers", default=",".join(ALL_SEARCHERS), help="comma-separated subset")
    parser.add_argument("--asha", default=",".join(DEFAULT_ASHA), help="searchers also run under ASHA ('' = none)")
    parser.add_argument("--preset", default=None, help="A2O-Synth world: preset or spec path (default household)")
    parser.add_argument("--ood-world", default=OOD_WORLD, help="the other world whose ICRL history OOD-history injects")
    parser.add_argument("--epochs", type=int, default=15,
                        help="epochs per trial (the maps_matter recipe; ASHA may stop a trial after 1)")
    parser.add_argument("--table8-seeds", type=int, default=5,
                        help="training seeds of the Table-8 block (best ICRL set vs RGB only; 0 = skip)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (spawned processes)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the finished runs and retrains of an earlier invocation with the same --out")
    parser.add_argument("--readme", default="", help="rewrite this README's searchers Results section")
    parser.add_argument("--keep", default="",
                        help="also keep every finished result under this folder (e.g. one tracked by git) and "
                             "read it back with --resume: the run resumes on another machine or session")
    parser.add_argument("--summarize", action="store_true",
                        help="only print the tables of the runs finished so far in --out (no LLM, no training)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--target", type=float, default=None,
                        help="val accuracy for 'trials to reach' (default: median of the runs' best val)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials, args.baseline_trials = min(args.seeds, 2), min(args.trials, 3), min(args.baseline_trials, 4)
        args.epochs, args.table8_seeds = min(args.epochs, 3), min(args.table8_seeds, 2)
        args.preset = args.preset or "tiny"
    args.preset = args.preset or "household"
    return args


def _quiet_logging() -> None:
    """benchmarks._common.quiet_logs, plus the searchers' own and Optuna's loggers."""
    from benchmarks._common import quiet_logs

    quiet_logs()
    for name in ("searchers", "optuna", "httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if importlib.util.find_spec("optuna") is not None:  # optuna sets its own level when first imported
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


_JOB: dict[str, Any] = {}  # a spawned job's settings (set by _init_job)
_BENCHES: dict[tuple[str, str], Bench] = {}  # (work dir, preset) -> Bench, built on first use in a job


def _init_job(geometry: Geometry, epochs: int, threads: int) -> None:
    """Initialiser of a spawned job: logging, torch threads; Benches are built on first use."""
    from searchers.local_llm import die_with_parent

    die_with_parent()  # a killed benchmark takes its jobs with it
    _quiet_logging()
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    _JOB.update(geometry=geometry, epochs=epochs)


def _bench(work_dir: str, preset: str) -> Bench:
    key = (work_dir, preset)
    if key not in _BENCHES:
        _BENCHES[key] = setup(work_dir, preset=preset, geometry=_JOB["geometry"], epochs=_JOB["epochs"])
    return _BENCHES[key]


def _search_job(work_dir: str, preset: str, method: Method, seed: int, trials: int, ood_history: str | None,
                progress_path: str | None = None, keep_dir: str | None = None) -> dict:
    return run_search(_bench(work_dir, preset), method, seed=seed, trials=trials, ood_history=ood_history,
                      cache_dir=os.path.join(work_dir, "llm_replay"), progress_path=progress_path, keep_dir=keep_dir)


def _retrain_job(work_dir: str, preset: str, name: str, classes: list[str], seed: int) -> dict:
    """Table-8: train ``classes`` with a fresh training seed; val and test accuracy of its model."""
    bench = _bench(work_dir, preset)
    class_set = ClassSet.parse(classes, where="table8 classes")
    run = run_trial(bench, class_set, lr=bench.cfg.train.lr, weight_decay=bench.cfg.train.weight_decay, seed=seed,
                    on_epoch=lambda _metrics: False)
    test = evaluate_test(bench, class_set, run.model)
    return {"name": name, "classes": list(class_set), "seed": seed, "val_accuracy": run.metrics[-1]["val_accuracy"],
            "test_accuracy": test["accuracy"], "time_s": run.wall_s}


def _load_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _load_json_lenient(path: str) -> dict | None:
    """A checkpoint, or None (logged) when it is missing or unreadable: it is redone, never fatal."""
    try:
        return _load_json(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable search checkpoint %s (%s): the search starts over", path, exc)
        return None


def _write_json(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=1, default=repr)
    os.replace(path + ".tmp", path)


@dataclass
class Task:
    """One training job of the benchmark, with where its result goes (for --resume)."""

    key: str
    path: str  # results file: a finished task's result is reused by --resume
    fn: Callable[..., dict]
    args: tuple
    after: str = ""  # key of a task that must finish first (OOD-history waits for its source)
    uses_llm: bool = False  # it waits on the embedded LLM server between trials
    seed: int = 0


def run_tasks(tasks: list[Task], *, jobs: int, pool, resume: bool, on_done: Callable[[Task, dict, bool], None],
              keep: Callable[[str], str] | None = None) -> None:
    """Run ``tasks`` ``jobs`` at a time in list order (seed-major: early seeds finish for every method
    first), a task whose ``after`` is unfinished waiting its turn; finished files are reused with --resume.
    Without a ``pool`` (``--summarize``) only finished files are read, and the rest is skipped.
    ``keep(path)`` names a second copy of each result (``--keep``, e.g. a folder in git): it is
    written with the first and read when the first is missing, so a run resumes on another machine."""
    from concurrent.futures import FIRST_COMPLETED, wait

    done: dict[str, dict] = {}
    pending = list(tasks)
    running: dict[Any, Task] = {}

    def ready(task: Task) -> bool:
        return not task.after or task.after in done

    def reused(task: Task) -> dict | None:
        if not resume:
            return None
        result = _load_json(task.path)
        if result is None and keep is not None and (result := _load_json(keep(task.path))) is not None:
            _write_json(task.path, result)
        elif result is not None and keep is not None and not os.path.exists(keep(task.path)):
            _write_json(keep(task.path), result)  # finished before --keep was given
        return result

    while pending or running:
        # Fill the free jobs one at a time: each choice depends on what runs now (_start_order).
        while len(running) < max(1, jobs):
            task = next((t for t in _start_order(pending, running.values()) if ready(t)), None)
            if task is None:
                break
            pending.remove(task)
            result = reused(task)
            if result is not None:
                done[task.key] = result
                on_done(task, result, True)
            elif pool is None:
                print(f"  not finished yet: {task.key}", flush=True)
            else:
                running[pool.submit(task.fn, *task.args)] = task
        # A task whose prerequisite is neither done, pending nor running never will be.
        alive = {t.key for t in pending} | {t.key for t in running.values()}
        for task in [t for t in pending if t.after and t.after not in done and t.after not in alive]:
            print(f"  skipped {task.key}: {task.after} did not finish", flush=True)
            pending.remove(task)
        if not running:
            continue
        finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in finished:
            task = running.pop(future)
            result = future.result()
            _write_json(task.path, result)
            if keep is not None:
                _write_json(keep(task.path), result)
            done[task.key] = result
            on_done(task, result, False)


def interleaved(methods: Sequence[Method]) -> list[Method]:
    """LLM and LLM-free methods alternated: with two jobs, one trains at full speed while the other
    waits for the one embedded LLM server, instead of both queueing on it."""
    with_llm = [m for m in methods if m.llm is not None]
    without = [m for m in methods if m.llm is None]
    out: list[Method] = []
    for i in range(max(len(with_llm), len(without))):
        out += with_llm[i:i + 1] + without[i:i + 1]
    return out


def _start_order(pending: list[Task], running: Iterable[Task]) -> list[Task]:
    """``pending`` with, among the tasks of the earliest pending seed, those of the other kind than the
    running ones first: an LLM search beside an LLM-free one keeps both cores busy, two LLM searches
    queue on the one embedded server."""
    if not pending:
        return []
    kinds = {t.uses_llm for t in running}
    if len(kinds) != 1:
        return list(pending)
    busy = kinds.pop()
    seed = pending[0].seed
    preferred = [t for t in pending if t.seed == seed and t.uses_llm != busy]
    return preferred + [t for t in pending if t not in preferred]


def scene_classes(preset: str) -> set[str]:
    """The world's scene elements (regions and their synonyms): known to the analysis, never to a searcher."""
    from a2o.data.synth.spec import load_world_spec, normalise_name

    spec = load_world_spec(preset)
    return {normalise_name(n) for r in spec.regions for n in (r.name, *r.synonyms)}


def best_icrl_set(runs: list[dict]) -> list[str] | None:
    """The best val set over every ICRL run (FIFO, the embedded or given LLM); ties: the earlier seed."""
    best = None
    for run in sorted((r for r in runs if r["searcher"] == "icrl" and r["scheduler"] == "fifo" and r["best_trial"]),
                      key=lambda r: r["benchmark"]["seed"]):
        if best is None or run["best_trial"]["val_accuracy"] > best["val_accuracy"]:
            best = run["best_trial"]
    return list(best["classes"]) if best else None


def table8_sets(runs: list[dict], preset: str) -> dict[str, list[str]]:
    """RGB only, the best ICRL set, and that set without its scene classes (when it has some)."""
    best = best_icrl_set(runs)
    if not best:
        return {}
    sets = {"rgb": [], "best icrl": best}
    scene = scene_classes(preset)
    without = [c for c in best if c not in scene]
    if without and len(without) < len(best):
        sets["best icrl without scene"] = without
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks.comparison import (
        METHOD_HEADERS,
        SCREENED_TRIAL_HEADERS,
        SCREENING_HEADERS,
        TABLE8_HEADERS,
        bar_checks,
        common_target,
        markdown_table,
        method_rows,
        screened_trial_rows,
        screening_bar,
        screening_rows,
        table8_rows,
    )

    args = parse_args(argv)
    _quiet_logging()
    wall_started = time.perf_counter()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    wanted = [s.strip() for s in args.searchers.split(",") if s.strip()]
    asha = {s.strip() for s in args.asha.split(",") if s.strip()}
    unknown = sorted((set(wanted) | asha) - set(ALL_SEARCHERS) - set(OPTIONAL_SEARCHERS))
    if unknown:
        raise SystemExit(f"unknown searcher(s) {unknown}; valid: {list(ALL_SEARCHERS) + list(OPTIONAL_SEARCHERS)}")
    geometry = Geometry()
    servers: list = []
    runs: list[dict] = []
    retrains: dict[str, dict[int, dict]] = {}
    reused = {"runs": 0}
    try:
        needs_llm = any(is_llm_method(name) for name in wanted)
        if args.summarize:  # names only: nothing is started
            args.resume = True
            label = args.llm if args.llm in ("local", "fake") else "remote"
            llms = [] if args.llm == "none" or not needs_llm else [LLMChoice(label)]
        else:
            llms = llm_choices(args.llm, out_dir, servers, model=args.llm_model, api_key_env=args.api_key_env,
                           temperature=args.temperature, llm_threads=args.llm_threads or None) if needs_llm else []
        if needs_llm and not llms:
            print("note: --llm none: the LLM searchers are skipped")
        methods: list[Method] = []
        for name in wanted:
            for scheduler in ("fifo", "asha") if name in asha else ("fifo",):
                for llm in (llms if is_llm_method(name) else [None]):
                    methods.append(Method(name, scheduler, llm))
        budget = {m.name: (args.baseline_trials if m.searcher in BASELINES else args.trials) for m in methods}
        bench = (setup(out_dir, preset=args.preset, geometry=geometry, epochs=args.epochs)  # generate once, here
                 if not args.summarize else None)
        llm_text = ", ".join(f"{c.label} ({c.model})" for c in llms) or "none"
        if bench is not None:
            print(f"A2O-Synth '{args.preset}': {len(bench.labels)} actions, "
                  + ", ".join(f"{len(ids)} {s}" for s, (ids, _) in bench.splits.items())
                  + f" clips; {len(methods)} methods x {args.seeds} seeds; T = {args.trials} (LLM searchers, hybrid), "
                  f"{args.baseline_trials} (Optuna, random); {args.jobs} jobs x {args.threads} torch thread(s); "
                  f"LLM: {llm_text}"
                  + (" (SCRIPTED STAND-IN, NOT A LANGUAGE MODEL)" if any(c.label == "fake" for c in llms) else ""))
            print("trials: the product's loop (a2o.train.epoch.run_epochs) in-process: tiny V-JEPA2 frozen + adapter + "
                  f"zero-init projection + probe, AdamW + cosine, fusion lr x{geometry.fusion_lr_scale:g}, {args.epochs} "
                  f"epochs, T={geometry.num_frames}, {geometry.resolution}px; searchers driven through the Ray Tune "
                  "Searcher API; ASHA = Ray's ASHAScheduler", flush=True)

        def keep_of(path: str) -> str:
            return os.path.join(os.path.abspath(args.keep), os.path.relpath(path, out_dir))

        def progress(results_path: str) -> str:
            """A search's checkpoint beside its results; a run without --resume starts afresh.
            With --resume and --keep, a checkpoint (and replay cache) found only in the kept copy,
            i.e. from an earlier session's checkout, is brought back first."""
            path = os.path.join(os.path.dirname(results_path), "progress.json")
            if not args.resume and not args.summarize and os.path.exists(path):
                os.remove(path)
            if args.resume and args.keep and not os.path.exists(path) and os.path.exists(keep_of(path)):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                shutil.copyfile(keep_of(path), path)
                log.info("resuming %s from the kept checkpoint %s", path, keep_of(path))
            return path

        if args.resume and args.keep:
            for work_dir in (out_dir, os.path.join(out_dir, "ood_source")):
                kept = keep_of(os.path.join(work_dir, "llm_replay"))
                if os.path.isdir(kept):  # entries this checkout lacks; its own are newer
                    for folder, _, files in os.walk(kept):
                        for name in files:
                            target = os.path.join(work_dir, "llm_replay", os.path.relpath(os.path.join(folder, name), kept))
                            if not os.path.exists(target):
                                os.makedirs(os.path.dirname(target), exist_ok=True)
                                shutil.copyfile(os.path.join(folder, name), target)
        keep_dir = os.path.abspath(args.keep) if args.keep else None

        tasks: list[Task] = []
        ood_dir = os.path.join(out_dir, "ood_source")
        ood_methods = [m for m in methods if m.searcher == "ood"]
        for llm in {m.llm for m in ood_methods}:
            # The other world's ICRL search whose history OOD-history injects (one, like the paper's Kinetics run).
            source = Method("icrl", "fifo", llm)
            source_path = os.path.join(ood_dir, "runs", f"{source.slug}_seed0", "results.json")
            tasks.append(Task(f"ood-source:{source.name}", source_path, _search_job,
                              (ood_dir, args.ood_world, source, 0, args.trials, None, progress(source_path),
                               keep_of(ood_dir) if keep_dir else None),
                              uses_llm=True))
        for seed in range(args.seeds):
            for m in interleaved(methods):
                path = os.path.join(out_dir, "runs", f"{m.slug}_seed{seed}", "results.json")
                if m.searcher == "ood":
                    source_key = f"ood-source:{Method('icrl', 'fifo', m.llm).name}"
                    source_path = os.path.join(ood_dir, "runs", f"{Method('icrl', 'fifo', m.llm).slug}_seed0", "results.json")
                    tasks.append(Task(f"{m.name}:{seed}", path, _search_job,
                                      (out_dir, args.preset, m, seed, budget[m.name], source_path, progress(path), keep_dir),
                                      after=source_key,
                                      uses_llm=True, seed=seed))
                else:
                    tasks.append(Task(f"{m.name}:{seed}", path, _search_job,
                                      (out_dir, args.preset, m, seed, budget[m.name], None, progress(path), keep_dir),
                                      uses_llm=m.llm is not None, seed=seed))
        methods_by_key = {f"{m.name}:{seed}": m for m in methods for seed in range(args.seeds)}

        def collect(task: Task, result: dict, was_reused: bool) -> None:
            for server in servers:  # a dead embedded server turns every proposal into a fallback: stop
                server.check_alive()
            reused["runs"] += was_reused
            tag = " (reused)" if was_reused else ""
            if "name" in result and "test_accuracy" in result:  # a Table-8 retrain
                retrains.setdefault(result["name"], {})[result["seed"]] = result
                print(f"  table8 {result['name']:<26} seed {result['seed']}: val {result['val_accuracy']:.3f}, "
                      f"test {result['test_accuracy']:.3f}{tag}", flush=True)
                return
            if task.key in methods_by_key:
                runs.append(result)
            best = result["best_trial"]
            print(f"  {task.key:<24} best val {best['val_accuracy'] if best else float('nan'):.3f}, test "
                  f"{result['final']['test']['accuracy'] if result['final'] else float('nan'):.3f}, "
                  f"{result['search_seconds']:.0f} s{tag}  ({len(runs)} runs done)", flush=True)

        context = multiprocessing.get_context("spawn")
        pool = None if args.summarize else ProcessPoolExecutor(
            max_workers=max(1, args.jobs), mp_context=context, initializer=_init_job,
            initargs=(geometry, args.epochs, args.threads))
        try:
            keep = keep_of if args.keep else None
            run_tasks(tasks, jobs=args.jobs, pool=pool, resume=args.resume, on_done=collect, keep=keep)
            sets = table8_sets(runs, args.preset) if args.table8_seeds else {}
            if sets:
                described = "; ".join(f"{k} = [{', '.join(v)}]" for k, v in sets.items())
                print(f"Table 8: {'reading' if pool is None else 'retraining'} {described} "
                      f"with training seeds {TABLE8_SEED0}..{TABLE8_SEED0 + args.table8_seeds - 1}", flush=True)
            table8_tasks = [
                Task(f"table8:{name}:{seed}",
                     os.path.join(out_dir, "table8", f"{slug(name)}_{slug(','.join(classes))}_seed{seed}.json"),
                     _retrain_job, (out_dir, args.preset, name, classes, seed))
                for seed in range(TABLE8_SEED0, TABLE8_SEED0 + args.table8_seeds) for name, classes in sets.items()
            ]
            run_tasks(table8_tasks, jobs=args.jobs, pool=pool, resume=args.resume, on_done=collect, keep=keep)
        except BaseException:
            # Ctrl-C / SIGTERM: finished runs are on disk (--resume reuses them); stop the jobs now.
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
            raise
        if pool is not None:
            pool.shutdown()
    finally:
        for server in servers:
            server.stop()

    order = {m.name: i for i, m in enumerate(methods)}
    runs.sort(key=lambda r: (order.get(r["benchmark"]["method"], 0), r["benchmark"]["seed"]))
    target = args.target if args.target is not None else common_target(runs)
    rows = method_rows(runs, [m.name for m in methods], target)
    table = markdown_table(METHOD_HEADERS, [r.cells() for r in rows])
    llm_tag = next((f"[{c.label}]" for c in llms if c.label != "local"), "")  # the method names' LLM suffix
    bars = bar_checks(rows, runs, llm_tag=llm_tag)
    screened_methods = sorted({r["benchmark"]["method"] for r in runs if r.get("screened")})
    bars += [screening_bar(runs, m, target, reference="icrl" + llm_tag) for m in screened_methods]
    bar_lines = [f"- {b.verdict(args.seeds)}: {b.claim}: {b.figures}" for b in bars]
    screen_rows = screening_rows(runs, target) if screened_methods else []
    screen_note = ("Screened ICRL: K candidate sets per LLM request, each scored by the map-only proxy "
                   "(a2o/train/proxy.py: logistic regression on pooled detector maps, train split, scored on val "
                   "as the mean true-class probability); the best is trained. Spearman over the screened "
                   "candidates that got a trial. Trial-seconds include the proxy's seconds (its detection "
                   "and map reading); LLM seconds are in the per-method table.")
    screen_text = ["", "Screening (proxy vs full trial):", markdown_table(SCREENING_HEADERS, screen_rows), "",
                   screen_note] if screen_rows else []
    t8_rows = table8_rows(retrains) if retrains else []
    t8 = markdown_table(TABLE8_HEADERS, t8_rows) if t8_rows else (
        "(no Table-8 block: no ICRL run, --table8-seeds 0, or its retrains have not run yet: they start "
        "when every search has finished)")
    write_parquet(runs, out_dir)
    wall = time.perf_counter() - wall_started
    command = "python -m benchmarks.searchers " + " ".join(sys.argv[1:] if argv is None else argv)
    notes = (f"target = {target:.3f} (median of all runs' final best val unless --target); 'trials to reach': "
             "mean first trial at or above it, an unreached run counting as its budget + 1; 'trial-s': training "
             "seconds. best val @8 of a T=20 method = best of its first 8 trials (a T=8 search of it). p: two-sided "
             "paired t-test of best val @8 over seeds. test = the best-val trial's model on the test split.")
    t8_note = (f"Table 8: each set retrained with training seeds {TABLE8_SEED0}..{TABLE8_SEED0 + args.table8_seeds - 1} "
               "(not the search seeds); 95% CI: t interval of the test mean; p: paired t-test against RGB only. "
               "Scene classes (the world's regions) are known to this analysis only, never to a searcher.")
    footer = (f"\ncommand: {command}\nwall time: {wall:.0f} s for this invocation ({reused['runs']} results reused "
              f"by --resume) on {os.cpu_count()} CPU cores, no GPU; {args.jobs} jobs; LLM: {llm_text}\n{notes}\n")
    text = "\n".join([table, "", "Bars:", *bar_lines, *screen_text, "", "Table 8 (best ICRL set vs RGB only):", t8,
                      "", t8_note, footer])
    print("\n" + text)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    _write_json(os.path.join(out_dir, "comparison.json"), {
        "title": f"Searcher comparison on A2O-Synth {args.preset}", "note": notes,
        "tables": [
            {"title": "Per method", "headers": METHOD_HEADERS, "rows": [r.cells() for r in rows], "note": notes},
            {"title": "Bars", "headers": ["claim", "figures", "met"],
             "rows": [[b.claim, b.figures, b.verdict(args.seeds)] for b in bars],
             "note": ""},
            {"title": "Table 8: best ICRL set vs RGB only, and without its scene classes", "headers": TABLE8_HEADERS,
             "rows": t8_rows, "note": t8_note},
            *([{"title": "Screening: proxy vs full trial", "headers": SCREENING_HEADERS, "rows": screen_rows,
                "note": screen_note},
               {"title": "Screened trials: proxy score against full val accuracy", "headers": SCREENED_TRIAL_HEADERS,
                "rows": screened_trial_rows(runs), "note": ""}] if screen_rows else []),
        ],
        "llm": [c.describe() for c in llms], "command": command, "wall_s": wall,
    })
    if args.readme:
        from benchmarks._common import machine_line, update_readme_section

        when = (f"PARTIAL: the {len(runs)} of {len(methods) * args.seeds} searches finished by "
                f"{time.strftime('%Y-%m-%d %H:%M')} (--summarize); searches ran on {machine_line()}"
                if args.summarize else f"Ran on {machine_line()}; {wall / 60:.0f} min wall for this invocation "
                f"({reused['runs']} results reused by --resume)")
        update_readme_section(args.readme, "searchers", "\n".join([
            "```bash", command, "```", "", f"{when}; LLM: {llm_text}.", "", text.split("\ncommand:")[0], ""]))
    print(f"results: {out_dir}/runs/*/results.json, comparison.json, trials.parquet, runs.parquet; "
          f"report: a2o report {out_dir}")
    return 0


TABLE8_SEED0 = 1000  # Table-8 retrains use fresh training seeds: the set was chosen on the search seeds' val


def slug(text: str) -> str:
    """A file-name-safe short form of ``text`` (class texts are checked, but a name never goes raw into a path)."""
    import hashlib

    head = "".join(c if c.isalnum() else "-" for c in text.lower())[:24].strip("-")
    return f"{head}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class _StoreForCache:
    """The frame-store view ``MapCache.ensure_maps`` needs (reads, ids, the manifest for annotations)."""

    def __init__(self, store, memory: MemoryFrames):
        self._store, self._memory = store, memory

    def video_ids(self) -> list[str]:
        return self._store.video_ids()

    def read(self, video_id: str):
        return self._memory.read(video_id)

    def manifest(self):
        return self._store.manifest()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the LLM server
    sys.exit(main())
