"""Experiment configuration: frozen dataclasses, loaded from YAML with ``--set`` overrides.

Each field carries its documentation in ``metadata["doc"]`` (shown by ``a2o config docs``) and is
validated in ``__post_init__``; an error names the full key (``train.lr``). Unknown keys are errors
that name the closest valid key. YAML is only read by :func:`load_config`, which entry points call.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from a2o.detect.classes import ClassSet
from a2o.errors import ClassTextError, ConfigError

__all__ = [
    "DataConfig",
    "DetectConfig",
    "ModelConfig",
    "TrainConfig",
    "SearchConfig",
    "LLMConfig",
    "ServeConfig",
    "StorageConfig",
    "RayConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "field_docs",
    "resolve_paths",
    "learned_detector_key",
    "absolute_if_local",
]

DATASETS = ("ssv2", "multisports", "k400", "csv", "synthetic")
DETECTORS = ("annotation", "grounded_sam2", "learned")
SEARCHERS = ("icrl", "static", "pool", "ood", "optuna", "random", "hybrid")
SCHEDULERS = ("fifo", "asha")
PRECISIONS = ("auto", "bf16", "fp32")


def _f(default: Any, doc: str, *, factory: bool = False):
    """A dataclass field with its documentation attached."""
    if factory:
        return field(default_factory=default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _choice(value: str, key: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}: '{value}' is not one of {list(choices)}.{hint}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _f("synthetic", f"Dataset format, one of {DATASETS}.")
    root: str = _f("", "URI (local path, s3://, gs://, memory://) of the dataset root.")
    annotations: str = _f(
        "",
        "Annotation file relative to root, when it differs from the format's standard name "
        "(ssv2: labels dir; multisports: multisports_GT.pkl; k400/csv: the csv file).",
    )
    video_dir: str = _f("", "Folder of the video files, relative to root ('' = format default).")
    num_frames: int = _f(16, "Frames sampled uniformly per clip: the fixed frame grid (T).")
    resolution: int = _f(64, "Side of the square frame grid in pixels (shorter side resize, centre crop).")
    store_resolution: int = _f(
        0,
        "Side stored in the frame store before training crops (0 = resolution). Larger keeps "
        "room for random-crop augmentation.",
    )
    val_fraction: float = _f(
        0.1, "Share of train carved (seeded, stratified) into val when a dataset has no val split."
    )
    few_shot_k: int = _f(0, "Clips per class kept in train (seeded). 0 keeps all.")
    max_videos: int = _f(0, "Cap on videos per split, for smoke runs. 0 = no cap.")
    synth_preset: str = _f(
        "household",
        "A2O-Synth world when dataset is 'synthetic': a shipped preset ('household', 'tiny') or the "
        "path of a world spec YAML (docs/WORLDS.md).",
    )
    seed: int = _f(0, "Seed for splits, few-shot sampling and synthetic data.")

    def __post_init__(self) -> None:
        _choice(self.dataset, "data.dataset", DATASETS)
        _check(self.num_frames >= 1, "data.num_frames", "must be >= 1")
        _check(self.resolution >= 8, "data.resolution", "must be >= 8 pixels")
        _check(
            self.store_resolution == 0 or self.store_resolution >= self.resolution,
            "data.store_resolution",
            "must be 0 or >= data.resolution",
        )
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", "must be in (0, 1)")
        _check(self.few_shot_k >= 0, "data.few_shot_k", "must be >= 0 (0 keeps all)")
        _check(self.max_videos >= 0, "data.max_videos", "must be >= 0 (0 = no cap)")
        if self.dataset == "synthetic" and not self.synth_preset.endswith((".yaml", ".yml")):
            from a2o.data.synth.spec import preset_names

            _choice(self.synth_preset, "data.synth_preset", preset_names())

    @property
    def grid_resolution(self) -> int:
        """Side of the stored frame grid."""
        return self.store_resolution or self.resolution


@dataclass(frozen=True)
class DetectConfig:
    detector: str = _f("annotation", f"Detector, one of {DETECTORS}.")
    grounding_dino: str = _f(
        "IDEA-Research/grounding-dino-tiny", "GroundingDINO checkpoint id or local dir."
    )
    sam2: str = _f("facebook/sam2.1-hiera-small", "SAM2 checkpoint id or local dir.")
    box_threshold: float = _f(0.3, "GroundingDINO box score threshold.")
    text_threshold: float = _f(0.25, "GroundingDINO text score threshold.")
    detect_resolution: int = _f(0, "Frame side fed to the detector (0 = the frame grid).")
    map_resolution: int = _f(0, "Side of cached likelihood maps (0 = the frame grid).")
    miss_prob: float = _f(0.0, "Annotation detector noise: probability a frame's map is dropped.")
    box_jitter: float = _f(0.0, "Annotation detector noise: box jitter as a fraction of box size.")
    noise_seed: int = _f(0, "Seed of the annotation detector's noise.")
    num_gpus_per_actor: float = _f(0.0, "GPUs per detector actor in the Ray Data stage.")
    num_cpus_per_actor: float = _f(0.5, "CPUs per detector actor in the Ray Data stage.")
    batch_size: int = _f(4, "Videos per detector batch.")
    concurrency: int = _f(1, "Detector actors in the pool.")
    learned_model: str = _f(
        "",
        "Folder of the trained 'learned' detector (detector.json + model.safetensors). '' = "
        "<storage.root>/detectors/<key>, key = a short hash of the training inputs (data.root, the "
        "frame grid, the train-split selection and every learned_* setting); `a2o data prepare` "
        "trains it there when missing.",
    )
    learned_epochs: int = _f(5, "Learned detector: training epochs over the train split's frames.")
    learned_min_steps: int = _f(
        300,
        "Learned detector: fewest optimiser steps; a small world repeats its frames for more epochs "
        "until then (0 = exactly learned_epochs).",
    )
    learned_width: int = _f(32, "Learned detector: channels of the segmentation network's context layers.")
    learned_lr: float = _f(1e-2, "Learned detector: peak AdamW learning rate (warm-up, then cosine decay).")
    learned_batch_size: int = _f(32, "Learned detector: frames per optimiser step.")
    learned_seed: int = _f(0, "Learned detector: seed of the weight init and the data order.")

    def __post_init__(self) -> None:
        _choice(self.detector, "detect.detector", DETECTORS)
        for key in ("box_threshold", "text_threshold", "miss_prob"):
            v = getattr(self, key)
            _check(0.0 <= v <= 1.0, f"detect.{key}", "must be in [0, 1]")
        _check(self.box_jitter >= 0.0, "detect.box_jitter", "must be >= 0")
        _check(self.detect_resolution >= 0, "detect.detect_resolution", "must be >= 0")
        _check(self.map_resolution >= 0, "detect.map_resolution", "must be >= 0")
        _check(self.num_gpus_per_actor >= 0, "detect.num_gpus_per_actor", "must be >= 0")
        _check(self.num_cpus_per_actor > 0, "detect.num_cpus_per_actor", "must be > 0")
        _check(self.batch_size >= 1, "detect.batch_size", "must be >= 1")
        _check(self.concurrency >= 1, "detect.concurrency", "must be >= 1")
        _check(1 <= self.learned_epochs <= 1000, "detect.learned_epochs", "must be in [1, 1000]")
        _check(0 <= self.learned_min_steps <= 1_000_000, "detect.learned_min_steps", "must be in [0, 1000000]")
        _check(4 <= self.learned_width <= 512, "detect.learned_width", "must be in [4, 512]")
        _check(0.0 < self.learned_lr <= 1.0, "detect.learned_lr", "must be in (0, 1]")
        _check(self.learned_batch_size >= 1, "detect.learned_batch_size", "must be >= 1")
        _check(self.learned_seed >= 0, "detect.learned_seed", "must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: str = _f(
        "tiny",
        "V-JEPA2 checkpoint: 'tiny' (random init, CPU tests and demo), a hub id such as "
        "'facebook/vjepa2-vitl-fpc16-256-ssv2', or a local dir.",
    )
    adapter_depth: int = _f(
        0, "Hidden 1x1 conv + ReLU layers in the adapter before the final 1x1 (0 = one linear 1x1)."
    )
    adapter_dim: int = _f(32, "Adapter output features per pixel (D).")
    freeze_backbone: bool = _f(False, "Train only adapter, projection and probe (frozen V-JEPA2).")
    tiny_hidden: int = _f(64, "Hidden size of the 'tiny' preset.")
    tiny_layers: int = _f(2, "Encoder layers of the 'tiny' preset.")
    tiny_patch: int = _f(8, "Patch size of the 'tiny' preset.")
    tiny_init_std: float = _f(
        0.0,
        "Std of the 'tiny' preset's random weights (transformers' initializer_range); 0 = auto, "
        "0.64 / sqrt(tiny_hidden): the per-layer gain of the published ViT-L (std 0.02 at width 1024).",
    )

    def __post_init__(self) -> None:
        _check(bool(self.checkpoint), "model.checkpoint", "must not be empty")
        _check(self.adapter_depth >= 0, "model.adapter_depth", "must be >= 0")
        _check(self.adapter_dim >= 1, "model.adapter_dim", "must be >= 1")
        _check(self.tiny_hidden >= 8, "model.tiny_hidden", "must be >= 8")
        _check(self.tiny_layers >= 1, "model.tiny_layers", "must be >= 1")
        _check(self.tiny_patch >= 2, "model.tiny_patch", "must be >= 2")
        _check(0.0 <= self.tiny_init_std <= 1.0, "model.tiny_init_std", "must be in [0, 1] (0 = auto)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _f(1, "Epochs per search trial (the paper tunes with a short budget).")
    final_epochs: int = _f(5, "Epochs when the best class set is trained after the search.")
    batch_size: int = _f(8, "Clips per step per worker.")
    lr: float = _f(1e-4, "Peak AdamW learning rate.")
    fusion_lr_scale: float = _f(
        1.0,
        "Learning rate of the map adapter + zero-init projection as a multiple of train.lr. The "
        "projection starts at zero, so the maps' path starts with no effect and must grow from "
        "there; a larger step lets it grow before the probe settles on RGB cues (the demo's frozen "
        "random-init encoder uses 50).",
    )
    weight_decay: float = _f(0.05, "AdamW weight decay.")
    warmup_fraction: float = _f(0.1, "Share of steps with linear warm-up before the cosine decay.")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    num_workers: int = _f(1, "Ray Train workers (DDP ranks) per trial.")
    gpus_per_worker: float = _f(0.0, "GPUs per Ray Train worker (0 = CPU).")
    cpus_per_worker: float = _f(1.0, "CPUs per Ray Train worker (fractions allowed).")
    precision: str = _f("auto", f"Autocast precision, one of {PRECISIONS} ('auto' = bf16 on GPU).")
    augment: bool = _f(True, "Random crop applied jointly to frames and maps (needs data.store_resolution > resolution).")
    flip: bool = _f(
        False,
        "Random horizontal flip of frames and maps. Off by default: it swaps direction-sensitive "
        "labels such as 'pushing ball left'.",
    )
    max_steps_per_epoch: int = _f(0, "Cap on optimiser steps per epoch, for smoke runs (0 = no cap).")
    seed: int = _f(0, "Training seed.")
    eval_segments: int = _f(2, "Temporal segments in the final test evaluation.")
    eval_views: int = _f(3, "Spatial views in the final test evaluation.")
    poll_interval_s: float = _f(
        0.5,
        "How often the Ray Train controller polls its workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, "
        "set for the trial unless already in the environment). Ray's default, 2 s, adds up to 2 s "
        "to the start and the end of every trial.",
    )

    def __post_init__(self) -> None:
        for key in ("epochs", "final_epochs", "batch_size", "grad_accum", "num_workers"):
            _check(getattr(self, key) >= 1, f"train.{key}", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(self.fusion_lr_scale > 0, "train.fusion_lr_scale", "must be > 0 (1 = same lr as the backbone)")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0.0 <= self.warmup_fraction < 1.0, "train.warmup_fraction", "must be in [0, 1)")
        _check(self.gpus_per_worker >= 0, "train.gpus_per_worker", "must be >= 0")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")
        _choice(self.precision, "train.precision", PRECISIONS)
        _check(self.eval_segments >= 1, "train.eval_segments", "must be >= 1")
        _check(0.05 <= self.poll_interval_s <= 60, "train.poll_interval_s", "must be in [0.05, 60] seconds")
        _check(self.eval_views >= 1, "train.eval_views", "must be >= 1")
        _check(self.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", "must be >= 0")


@dataclass(frozen=True)
class SearchConfig:
    searcher: str = _f("icrl", f"Searcher, one of {SEARCHERS}.")
    scheduler: str = _f("fifo", f"Trial scheduler, one of {SCHEDULERS} (ASHA on per-epoch val accuracy).")
    num_trials: int = _f(8, "Trials (search iterations T).")
    max_concurrent: int = _f(1, "Trials run at once (size it to GPUs / GPUs per trial).")
    max_classes: int = _f(12, "C_max: the most object classes in one proposal.")
    initial_classes: list = _f(list, "Optional first class set (otherwise the searcher proposes one).", factory=True)
    vocabulary: list = _f(
        list,
        "Candidate classes for vocabulary searchers (optuna, random) and the ICRL fallback; "
        "empty = the shipped generic list of 519 common nouns (searchers/vocabulary/generic_nouns.txt).",
        factory=True,
    )
    max_reasks: int = _f(2, "Re-asks of the LLM after an unusable reply before the logged fallback.")
    max_fallback_share: float = _f(
        0.5,
        "LLM searchers: stop the search with an error once 2 or more proposals, and more than this share "
        "of them, were fallbacks (the LLM is not steering it; fix it and --resume). 1.0 = never stop.",
    )
    ood_history: str = _f("", "For searcher 'ood': path of another run's results.json to inject.")
    detection_feedback: bool = _f(
        False,
        "ICRL searchers: the prompt's history also names the classes the detector found in no clip "
        "(dead inputs). Opt-in until benchmarks/searchers.py shows it helps.",
    )
    confusion_feedback: bool = _f(
        True, "ICRL searchers: the prompt's history names each trial's 3 most confused action pairs."
    )
    fill_from_uses: bool = _f(
        False,
        "ICRL searchers with the small prompt and structured output: fill each proposed set up to the "
        "target count with the objects the reply itself named per action (its 'uses' pairs) and left out. "
        "Opt-in until benchmarks/searchers.py (icrl-uses) shows it helps.",
    )
    screen_candidates: int = _f(
        1,
        "ICRL searchers: K > 1 asks the LLM for K candidate sets per iteration, scores each with the "
        "map-only proxy (a2o/train/proxy.py: a small classifier on the cached detector maps of the "
        "train split, scored on val; new classes are detected first) and trains the best; all K and "
        "their proxy scores join the LLM's history; llm.max_tokens must fit K sets (checked at start). 1 = off.",
    )
    task_description: str = _f("", "Extra dataset description for the prompt (the fixed task c).")
    trial_retries: int = _f(
        1, "Retries of a crashed trial (OOM, killed worker) before it is recorded as errored."
    )
    tensorboard: bool = _f(
        False,
        "Also write TensorBoard event files (Tune's TBXLoggerCallback) under storage/tune. Off by "
        "default: trials report per-action and list-valued metrics that TensorBoard cannot take.",
    )
    asha_grace_period: int = _f(1, "ASHA: epochs before a trial can be stopped.")
    asha_reduction_factor: int = _f(2, "ASHA: reduction factor.")
    seed: int = _f(0, "Searcher seed.")

    def __post_init__(self) -> None:
        _choice(self.searcher, "search.searcher", SEARCHERS)
        _choice(self.scheduler, "search.scheduler", SCHEDULERS)
        _check(self.num_trials >= 1, "search.num_trials", "must be >= 1")
        _check(self.max_concurrent >= 1, "search.max_concurrent", "must be >= 1")
        _check(1 <= self.max_classes <= 64, "search.max_classes", "must be in [1, 64]")
        _check(self.max_reasks >= 0, "search.max_reasks", "must be >= 0")
        _check(0.0 <= self.max_fallback_share <= 1.0, "search.max_fallback_share", "must be in [0, 1]")
        _check(isinstance(self.initial_classes, list), "search.initial_classes", "must be a list")
        if self.initial_classes:  # user text enters here: the one class-text rule, at load time
            try:
                ClassSet.parse(self.initial_classes, max_classes=self.max_classes, where="search.initial_classes")
            except ClassTextError as exc:
                raise ConfigError(str(exc)) from None
        _check(isinstance(self.vocabulary, list), "search.vocabulary", "must be a list")
        _check(1 <= self.screen_candidates <= 16, "search.screen_candidates", "must be in [1, 16] (1 = off)")
        _check(self.screen_candidates == 1 or self.searcher in ("icrl", "ood", "hybrid"), "search.screen_candidates",
               f"screening is an option of the ICRL searchers (icrl, ood, hybrid), not of '{self.searcher}'")
        _check(self.trial_retries >= 0, "search.trial_retries", "must be >= 0")
        _check(self.asha_grace_period >= 1, "search.asha_grace_period", "must be >= 1")
        _check(self.asha_reduction_factor >= 2, "search.asha_reduction_factor", "must be >= 2")


@dataclass(frozen=True)
class LLMConfig:
    base_url: str = _f(
        "local",
        "OpenAI-compatible endpoint URL, or 'local' to start the embedded local LLM server.",
    )
    model: str = _f("", "Model name sent to the endpoint ('' = the server's first model).")
    api_key_env: str = _f(
        "OPENAI_API_KEY", "Name of the environment variable holding the API key (never the key)."
    )
    temperature: float = _f(0.7, "Sampling temperature.")
    max_tokens: int = _f(256, "Most tokens in one reply.")
    timeout_s: float = _f(120.0, "Per-request timeout in seconds.")
    max_retries: int = _f(2, "Client retries on connection errors before the endpoint counts as down.")
    prompt: str = _f("paper", "Prompt variant: 'paper' (strong models) or 'small' (small local models).")
    prompt_template: str = _f("", "Path of a prompt template file overriding the variant.")
    response_format: str = _f(
        "auto", "'json_schema' (constrained), 'text' (plain parser), or 'auto' (json_schema for local)."
    )
    local_model: str = _f("qwen2.5-1.5b-instruct", "Embedded model for base_url 'local'.")
    replay_cache: bool = _f(True, "Record replies keyed by prompt so reruns and resumes replay them.")
    on_unreachable: str = _f(
        "fail",
        "An endpoint down at start: 'fail' (stop with a clear message) or 'fallback' (search goes "
        "on with logged, counted edits of the best set).",
    )

    def __post_init__(self) -> None:
        _check(bool(self.base_url), "llm.base_url", "must be a URL or 'local'")
        _check(0.0 <= self.temperature <= 2.0, "llm.temperature", "must be in [0, 2]")
        _check(self.max_tokens >= 16, "llm.max_tokens", "must be >= 16")
        _check(self.timeout_s > 0, "llm.timeout_s", "must be > 0")
        _check(self.max_retries >= 0, "llm.max_retries", "must be >= 0")
        _choice(self.prompt, "llm.prompt", ("paper", "small"))
        _choice(self.response_format, "llm.response_format", ("auto", "json_schema", "text"))
        _choice(self.on_unreachable, "llm.on_unreachable", ("fail", "fallback"))


@dataclass(frozen=True)
class ServeConfig:
    host: str = _f("127.0.0.1", "Bind address (loopback by default).")
    port: int = _f(8000, "HTTP port.")
    max_upload_mb: float = _f(64.0, "Largest accepted upload in MiB (rejected before decoding).")
    max_top_k: int = _f(20, "Largest accepted top_k.")
    max_ongoing_requests: int = _f(8, "Ray Serve max_ongoing_requests per replica.")
    min_replicas: int = _f(1, "Autoscaling: fewest replicas.")
    max_replicas: int = _f(1, "Autoscaling: most replicas.")
    max_batch_size: int = _f(4, "@serve.batch maximum batch size of the recognizer.")
    batch_wait_timeout_s: float = _f(0.01, "@serve.batch wait for a fuller batch.")
    detector_gpus: float = _f(0.0, "GPUs per detector replica.")
    recognizer_gpus: float = _f(0.0, "GPUs per recognizer replica.")

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, "serve.port", "must be in [0, 65535]")
        _check(self.max_upload_mb > 0, "serve.max_upload_mb", "must be > 0")
        _check(self.max_top_k >= 1, "serve.max_top_k", "must be >= 1")
        _check(self.max_ongoing_requests >= 1, "serve.max_ongoing_requests", "must be >= 1")
        _check(1 <= self.min_replicas <= self.max_replicas, "serve.min_replicas", "must be in [1, max_replicas]")
        _check(self.max_batch_size >= 1, "serve.max_batch_size", "must be >= 1")


@dataclass(frozen=True)
class StorageConfig:
    root: str = _f(
        "runs/default",
        "URI of the run's storage: manifests, frames, map cache, Tune results, LLM replay cache, best/.",
    )
    experiment_name: str = _f("a2o", "Tune experiment name under root/tune/.")
    maps_root: str = _f(
        "",
        "URI of the likelihood-map cache; empty = <root>/maps. Point several runs at one cache (two "
        "searches at once, or a search and a later one) and each (video, class) is detected once across "
        "them: entries are keyed by detector fingerprint, frame grid and class, and guarded by locks.",
    )

    def __post_init__(self) -> None:
        _check(bool(self.root), "storage.root", "must not be empty")
        _check(
            self.experiment_name.replace("-", "").replace("_", "").isalnum(),
            "storage.experiment_name",
            "use letters, digits, '-' and '_' only",
        )

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the storage root (URI-safe, '/' separated)."""
        return "/".join([self.root.rstrip("/"), *parts])


@dataclass(frozen=True)
class RayConfig:
    address: str = _f("", "Ray cluster address ('' = RAY_ADDRESS, else start a local cluster).")
    num_cpus: int = _f(0, "CPUs of a locally started cluster (0 = all).")

    def __post_init__(self) -> None:
        _check(self.num_cpus >= 0, "ray.num_cpus", "must be >= 0")


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = _f(DataConfig, "Dataset and frame grid.", factory=True)
    detect: DetectConfig = _f(DetectConfig, "Detector and its Ray Data stage.", factory=True)
    model: ModelConfig = _f(ModelConfig, "Adapter and V-JEPA2.", factory=True)
    train: TrainConfig = _f(TrainConfig, "Per-trial training.", factory=True)
    search: SearchConfig = _f(SearchConfig, "Searcher and scheduler.", factory=True)
    llm: LLMConfig = _f(LLMConfig, "LLM endpoint of the ICRL agent.", factory=True)
    serve: ServeConfig = _f(ServeConfig, "Ray Serve application.", factory=True)
    storage: StorageConfig = _f(StorageConfig, "Where the run lives.", factory=True)
    ray: RayConfig = _f(RayConfig, "Ray cluster connection.", factory=True)


# --------------------------------------------------------------------------------------------
# dict <-> dataclass


def _type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert a YAML scalar to the field's type; the error names the key."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is list:
        if isinstance(value, str):  # "a,b,c" from the command line
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return list(value)
    return value


def _dotted_names(cls, prefix: str) -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        full = f"{prefix}.{f.name}" if prefix else f.name
        names.append(full)
        hint = _type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            names.extend(_dotted_names(hint, full))
    return names


def closest_key(wrong: str, cls, prefix: str) -> str:
    """The valid dotted key nearest to ``wrong``: always one, from its own section when it has one.

    Compares full dotted names with difflib, so ``train.lr_typo`` finds ``train.lr`` (comparing
    only ``lr_typo`` with ``lr`` falls under any useful cutoff).
    """
    candidates = _dotted_names(cls, prefix)
    leaf_level = [c for c in candidates if c.count(".") == wrong.count(".")] or candidates
    scored = sorted(leaf_level, key=lambda c: (-difflib.SequenceMatcher(None, wrong, c).ratio(), c))
    return scored[0]


def _build(cls, values: Mapping[str, Any], prefix: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = _type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                f"unknown config key '{full}'. Did you mean '{closest_key(full, cls, prefix)}'? "
                f"Valid keys{' of ' + prefix if prefix else ''}: {', '.join(names)} "
                "(`a2o config docs` lists every key with its meaning)"
            )
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _build(hint_t, value or {}, full)
        else:
            kwargs[key] = _coerce(value, hint_t, full)
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any] | None) -> ExperimentConfig:
    """Build a validated :class:`ExperimentConfig` from nested dicts."""
    return _build(ExperimentConfig, values or {}, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config (YAML/JSON serialisable)."""
    return dataclasses.asdict(config)


def _set_nested(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(values: Mapping[str, Any] | None, overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    import copy

    import yaml

    tree = copy.deepcopy(dict(values or {}))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, for example train.lr=1e-4")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}': empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads "1e-4" as a string; let the field coercion convert numbers.
        _set_nested(tree, key, value)
    return tree


def load_config(path: str | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment config (or defaults when ``path`` is None) and apply overrides."""
    import yaml

    values: dict[str, Any] = {}
    if path:
        import fsspec

        try:
            with fsspec.open(path, "r") as fh:
                values = yaml.safe_load(fh) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
    return resolve_paths(config_from_dict(apply_overrides(values, overrides)))


def absolute_if_local(value: str, *, must_exist: bool = False) -> str:
    import os

    if not value or "://" in value or os.path.isabs(value):
        return value
    if must_exist and not os.path.exists(value):
        return value  # a hub id such as 'facebook/vjepa2-vitl-fpc64-256', not a path
    return os.path.abspath(value)


def learned_detector_key(config: ExperimentConfig) -> str:
    """Short hash of what a 'learned' detector is trained from: the folder name under detectors/.

    Covers the dataset root, the frame grid, what selects the train clips (few-shot, caps, seed)
    and every ``detect.learned_*`` training setting, so a change to any of them trains a new
    detector instead of reusing one trained on other inputs. Paths are hashed as given; call it
    on a config whose paths are already absolute (as :func:`resolve_paths` does).
    """
    import hashlib
    import json

    data, detect = config.data, config.detect
    inputs = {
        "data_root": data.root,
        "num_frames": data.num_frames,
        "grid_resolution": data.grid_resolution,
        "few_shot_k": data.few_shot_k,
        "max_videos": data.max_videos,
        "data_seed": data.seed,
        **{f.name: getattr(detect, f.name) for f in dataclasses.fields(detect)
           if f.name.startswith("learned_") and f.name != "learned_model"},
    }
    payload = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def resolve_paths(config: ExperimentConfig) -> ExperimentConfig:
    """Make relative local paths absolute, against the directory the command runs in.

    Tune trials and Ray workers run in other working directories, so a relative path that was
    right for the command would be wrong there. URIs and hub ids are left as they are. With
    ``detect.detector: learned`` and no ``detect.learned_model``, the model folder is set to
    ``<storage.root>/detectors/<learned_detector_key>``.
    """
    r = dataclasses.replace
    config = r(
        config,
        data=r(
            config.data,
            root=absolute_if_local(config.data.root),
            synth_preset=(
                absolute_if_local(config.data.synth_preset)
                if config.data.synth_preset.endswith((".yaml", ".yml"))
                else config.data.synth_preset
            ),
        ),
        storage=r(config.storage, root=absolute_if_local(config.storage.root),
                  maps_root=absolute_if_local(config.storage.maps_root) if config.storage.maps_root else ""),
    )
    learned_model = absolute_if_local(config.detect.learned_model)
    if config.detect.detector == "learned" and not learned_model:
        learned_model = config.storage.path("detectors", learned_detector_key(config))
    return r(
        config,
        detect=r(
            config.detect,
            grounding_dino=absolute_if_local(config.detect.grounding_dino, must_exist=True),
            sam2=absolute_if_local(config.detect.sam2, must_exist=True),
            learned_model=learned_model,
        ),
        model=r(config.model, checkpoint=absolute_if_local(config.model.checkpoint, must_exist=True)),
        search=r(config.search, ood_history=absolute_if_local(config.search.ood_history)),
        llm=r(config.llm, prompt_template=absolute_if_local(config.llm.prompt_template)),
    )


def field_docs(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(key, default, doc) for every leaf field, for ``a2o config docs``."""
    rows = []
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(field_docs(hints[f.name], key))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((key, default, f.metadata.get("doc", "")))
    return rows
