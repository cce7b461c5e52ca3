"""GPU smoke benchmark: do the CUDA paths run, and how fast, next to the CPU? Tiny models only.

Three workloads, each through the product's own functions, on the CPU in fp32 and (when torch
sees a CUDA device) on the GPU in fp32 and under bf16 autocast:

    train step   one call of :func:`a2o.train.epoch.train_one_epoch` capped at one optimiser step
                 (load a batch, move it to the device, forward, backward, AdamW + scheduler step)
                 of the tiny V-JEPA2 recognizer with the map adapter, set up by
                 :func:`a2o.train.epoch.build_training` as in every trial. Median ms per step.
    detector     :class:`a2o.detect.grounded_sam2.GroundedSam2Detector` (tiny random GroundingDINO
                 + SAM2 checkpoints, built the way the Ray Data stage builds it) on 256 px frames,
                 3 classes. Frames per second from the median call.
    predict      :func:`a2o.train.evaluate.predict_clip` (what a Serve recognizer replica runs for
                 one upload) on the S x V clips of one upload, model loaded by ``load_recognizer``.
                 p50 latency in ms.

Warm-up iterations are run first and excluded; the device is synchronised after every timed
iteration. Device and precision come from :class:`a2o.runtime.Runtime` only. Without CUDA the GPU
cells read "n/a (no CUDA)" and the command still succeeds (the CPU rows are measured).

    python -m benchmarks.gpu_smoke                   # ~1-2 min on a GPU machine
    python -m benchmarks.gpu_smoke --iters 10 --out runs/gpu_smoke

The table is printed and written to ``gpu_smoke.md``, the numbers (with every sample) to
``gpu_smoke.json``, in ``--out``, else ``$OUT`` when set, else ``runs/gpu_smoke/``. Needs torch,
transformers, numpy, safetensors and pyyaml; not Ray, PyAV or an LLM client (``make gpu-check``
runs it on a lent GPU machine without them).

The in-memory clip sources and the trial spec below are shared with ``tests/test_gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "SmokeGeometry",
    "MemoryFrames",
    "MemoryMaps",
    "smoke_model_config",
    "memory_trial_spec",
    "main",
]

NO_CUDA = "n/a (no CUDA)"
DETECT_SIZE = 256  # frame side the detector rows are measured at (the figure)


@dataclass(frozen=True)
class SmokeGeometry:
    """Sizes of the smoke workloads: tiny, so that a CPU row finishes in seconds."""

    num_frames: int = 8
    """T, frames per clip (a multiple of the V-JEPA2 tubelet, 2)."""
    resolution: int = 64
    """Side of the model input."""
    hidden: int = 64
    """Hidden size of the tiny V-JEPA2 (``model.tiny_hidden``)."""
    layers: int = 2
    """Encoder layers of the tiny V-JEPA2."""
    patch: int = 8
    """Patch size of the tiny V-JEPA2."""
    batch_size: int = 8
    """Clips per training step."""
    classes: tuple[str, ...] = ("person", "ball", "tennis racket")
    """Object classes: map channels of the recognizer, prompts of the detector."""
    labels: tuple[str, ...] = ("left", "right", "lift", "drop")
    """Action labels (the probe's outputs)."""
    detect_frames: int = 16
    """Frames per detector call (256 px each)."""
    segments: int = 2
    """S temporal segments of one served upload (``train.eval_segments``)."""
    views: int = 3
    """V spatial views of one served upload (``train.eval_views``)."""


# ------------------------------------------------------------------------------------------------
# in-memory clips: the trial loop's FrameSource / MapSource without a frame store or a map cache


class _FrameRecord:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames  # (T, S, S, 3) uint8


class MemoryFrames:
    """A :class:`~a2o.train.data.FrameSource` of synthetic clips: one colour channel per label.

    ``read(video_id)`` returns a record with ``.frames`` (T, S, S, 3) uint8, as the frame store does.
    """

    def __init__(self, labels_by_video: dict[str, int], num_frames: int, size: int, *, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.records: dict[str, _FrameRecord] = {}
        for video_id, label in labels_by_video.items():
            frames = rng.integers(0, 128, (num_frames, size, size, 3), dtype=np.uint8)
            frames[..., label % 3] |= 128  # a class cue the probe can pick up
            self.records[video_id] = _FrameRecord(frames)

    def read(self, video_id: str) -> _FrameRecord:
        return self.records[video_id]


class MemoryMaps:
    """A :class:`~a2o.train.data.MapSource`: per video, (T, C, h, w) uint8 maps on a coarser grid
    (the clip dataset resizes them to the frames, as it does cached maps)."""

    def __init__(self, video_ids: Sequence[str], num_frames: int, num_classes: int, size: int, *,
                 seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.maps = {
            video_id: rng.integers(0, 256, (num_frames, num_classes, size, size), dtype=np.uint8)
            for video_id in video_ids
        }

    def read(self, video_id: str) -> np.ndarray:
        return self.maps[video_id]


def smoke_model_config(geometry: SmokeGeometry, *, adapter_dim: int = 16, adapter_depth: int = 1):
    """The ``model`` section of the tiny V-JEPA2 (``checkpoint='tiny'``) with the map adapter."""
    from a2o.config import ModelConfig

    return ModelConfig(
        checkpoint="tiny",
        tiny_hidden=geometry.hidden,
        tiny_layers=geometry.layers,
        tiny_patch=geometry.patch,
        adapter_dim=adapter_dim,
        adapter_depth=adapter_depth,
    )


def memory_trial_spec(
    geometry: SmokeGeometry,
    *,
    precision: str,
    train_clips: int,
    val_clips: int,
    epochs: int = 1,
    max_steps_per_epoch: int = 1,
    lr: float = 1e-3,
    seed: int = 0,
    adapter_dim: int = 16,
    adapter_depth: int = 1,
):
    """A :class:`~a2o.train.spec.TrialSpec` over in-memory clips, and its ``(frames, maps)`` sources.

    The tiny V-JEPA2 (``checkpoint='tiny'``) with the map adapter over ``geometry.classes``; no
    augmentation (the clips are already at the model's side). ``epochs x max_steps_per_epoch`` is
    the scheduler's whole horizon, so a caller that times single steps sizes it to its step count.
    """
    from a2o.config import TrainConfig
    from a2o.detect.classes import ClassSet
    from a2o.train.spec import TrialInputs, TrialSpec

    num_labels = len(geometry.labels)
    train_ids = tuple(f"train{i:03d}" for i in range(train_clips))
    val_ids = tuple(f"val{i:03d}" for i in range(val_clips))
    train_labels = tuple(i % num_labels for i in range(train_clips))
    val_labels = tuple(i % num_labels for i in range(val_clips))
    labels_by_video = dict(zip(train_ids + val_ids, train_labels + val_labels, strict=True))
    frames = MemoryFrames(labels_by_video, geometry.num_frames, geometry.resolution, seed=seed)
    maps = MemoryMaps(list(labels_by_video), geometry.num_frames, len(geometry.classes),
                      max(1, geometry.resolution // 4), seed=seed + 1)
    inputs = TrialInputs(
        frames_root="memory",
        maps=maps,
        class_set=ClassSet.parse(list(geometry.classes), where="gpu smoke classes"),
        labels=tuple(geometry.labels),
        train_ids=train_ids,
        train_labels=train_labels,
        val_ids=val_ids,
        val_labels=val_labels,
    )
    spec = TrialSpec(
        model=smoke_model_config(geometry, adapter_dim=adapter_dim, adapter_depth=adapter_depth),
        train=TrainConfig(
            epochs=epochs,
            batch_size=geometry.batch_size,
            lr=lr,
            augment=False,
            max_steps_per_epoch=max_steps_per_epoch,
            precision=precision,
            seed=seed,
        ),
        num_frames=geometry.num_frames,
        resolution=geometry.resolution,
        inputs=inputs,
    )
    return spec, frames, maps


# ------------------------------------------------------------------------------------------------
# timing


def synchronize(runtime) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a timer sees the whole step."""
    import torch

    if runtime.accelerated:
        torch.get_device_module(runtime.device).synchronize(runtime.device)


def timed_ms(step: Callable[[], Any], runtime, *, warmup: int, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    synchronize(runtime)
    samples = []
    for _ in range(iters):
        started = time.perf_counter()
        step()
        synchronize(runtime)
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def progress(message: str) -> None:
    print(f"[gpu_smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------
# workloads


def train_step_ms(geometry: SmokeGeometry, runtime, *, warmup: int, iters: int) -> list[float]:
    """ms per optimiser step of the trial loop's own functions on ``runtime``."""
    import torch

    from a2o.train.epoch import build_training, train_one_epoch

    steps = warmup + iters
    spec, frames, maps = memory_trial_spec(
        geometry, precision=runtime.precision, train_clips=4 * geometry.batch_size, val_clips=geometry.batch_size,
        epochs=steps, max_steps_per_epoch=1,
    )
    torch.manual_seed(spec.train.seed)
    training = build_training(spec, frames, maps, wrap=lambda model: model.to(runtime.device))

    def step() -> None:
        loss = train_one_epoch(training.model, training.train_loader, training.optimizer, training.scheduler,
                               runtime, max_steps=1)
        if not np.isfinite(loss.mean):
            raise RuntimeError(f"non-finite training loss {loss.mean} on {runtime}")

    return timed_ms(step, runtime, warmup=warmup, iters=iters)


def detector_ms(detect_cfg, geometry: SmokeGeometry, runtime, *, warmup: int, iters: int) -> list[float]:
    """ms per ``detect()`` call of ``geometry.detect_frames`` frames at 256 px on ``runtime``."""
    from a2o.detect.base import ConfigDetectorFactory, VideoMeta

    detector = ConfigDetectorFactory(detect_cfg)(runtime)  # what each Ray Data detection actor builds
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (geometry.detect_frames, DETECT_SIZE, DETECT_SIZE, 3), dtype=np.uint8)
    video = VideoMeta("smoke", np.arange(geometry.detect_frames), DETECT_SIZE, DETECT_SIZE)

    def step() -> None:
        maps = detector.detect(frames, list(geometry.classes), video=video)
        if maps.shape != (geometry.detect_frames, len(geometry.classes), DETECT_SIZE, DETECT_SIZE):
            raise RuntimeError(f"detector maps have shape {maps.shape} on {runtime}")
        if not np.isfinite(maps).all():
            raise RuntimeError(f"detector maps are not finite on {runtime}")

    return timed_ms(step, runtime, warmup=warmup, iters=iters)


def predict_ms(model_dir: str, geometry: SmokeGeometry, runtime, *, warmup: int, iters: int) -> list[float]:
    """ms per :func:`predict_clip` of one upload's S x V clips on ``runtime`` (model as served)."""
    import torch

    from a2o.model import load_recognizer
    from a2o.train.evaluate import predict_clip

    model, _ = load_recognizer(model_dir, classes=list(geometry.classes))
    model = model.to(runtime.device)
    clips = geometry.segments * geometry.views
    generator = torch.Generator().manual_seed(0)
    side, frames_per_clip, channels = geometry.resolution, geometry.num_frames, len(geometry.classes)
    frames = torch.randint(0, 256, (clips, frames_per_clip, side, side, 3), dtype=torch.uint8, generator=generator)
    maps = torch.randint(0, 256, (clips, frames_per_clip, channels, side, side), dtype=torch.uint8,
                         generator=generator)

    def step() -> None:
        probabilities = predict_clip(model, frames, maps, runtime)
        if not np.isfinite(probabilities).all():
            raise RuntimeError(f"non-finite probabilities on {runtime}")

    return timed_ms(step, runtime, warmup=warmup, iters=iters)


# ------------------------------------------------------------------------------------------------
# report


def _summary(samples: list[float] | None) -> dict[str, Any] | None:
    if samples is None:
        return None
    return {"median_ms": statistics.median(samples), "p50_ms": float(np.percentile(samples, 50)),
            "p95_ms": float(np.percentile(samples, 95)), "samples_ms": [round(s, 4) for s in samples]}


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return NO_CUDA
    return f"x{numerator / denominator:.2f}"


def build_table(results: dict[str, dict[str, dict[str, Any] | None]], geometry: SmokeGeometry) -> str:
    """One markdown table: per workload, CPU fp32 | GPU fp32 | GPU bf16 and the two speed-ups.

    Speed-ups are "how many times faster": CPU time / GPU time, and GPU fp32 time / GPU bf16 time.
    """
    from benchmarks._common import format_table

    def ms(cell: dict[str, Any] | None, key: str) -> float | None:
        return None if cell is None else float(cell[key])

    rows = []
    train = results["train_step"]
    cpu, gpu32, gpu16 = (ms(train[k], "median_ms") for k in ("cpu_fp32", "gpu_fp32", "gpu_bf16"))
    rows.append([f"train step, batch {geometry.batch_size} (ms, median)", *_cells_ms(cpu, gpu32, gpu16),
                 _ratio(cpu, gpu32), _ratio(gpu32, gpu16)])
    detect = results["detector"]
    cpu, gpu32, gpu16 = (ms(detect[k], "median_ms") for k in ("cpu_fp32", "gpu_fp32", "gpu_bf16"))
    fps = [None if t is None else geometry.detect_frames / (t / 1000.0) for t in (cpu, gpu32, gpu16)]
    rows.append([f"detector at {DETECT_SIZE} px (frames/s)",
                 *(NO_CUDA if f is None else f"{f:.1f}" for f in fps),
                 _ratio(fps[1], fps[0]), _ratio(fps[2], fps[1])])
    predict = results["predict"]
    cpu, gpu32, gpu16 = (ms(predict[k], "p50_ms") for k in ("cpu_fp32", "gpu_fp32", "gpu_bf16"))
    rows.append([f"predict, {geometry.segments * geometry.views} clips (ms, p50)", *_cells_ms(cpu, gpu32, gpu16),
                 _ratio(cpu, gpu32), _ratio(gpu32, gpu16)])
    headers = ["workload", "CPU fp32", "GPU fp32", "GPU bf16 autocast", "GPU vs CPU (fp32)", "bf16 vs fp32 (GPU)"]
    return format_table(headers, rows)


def _cells_ms(*values: float | None) -> list[str]:
    return [NO_CUDA if v is None else f"{v:.2f}" for v in values]


def output_dir(explicit: str) -> str:
    """``--out``, else ``$OUT`` (the folder a lent GPU machine sends back), else runs/gpu_smoke."""
    return explicit or os.environ.get("OUT") or os.path.join("runs", "gpu_smoke")


def _quiet() -> None:
    """Offline, and no per-checkpoint progress bars from transformers between the progress lines."""
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    disable = getattr(hf_logging, "disable_progress_bar", None)
    if disable is not None:
        disable()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every workload on every runtime; returns the JSON report (table included)."""
    import torch
    import transformers

    from a2o.model import build_recognizer, save_recognizer
    from a2o.runtime import Runtime
    from benchmarks._common import machine_line

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from tiny_models import tiny_detect_config

    started = time.perf_counter()
    geometry = SmokeGeometry()
    cuda = Runtime.accelerator_count() > 0
    runtimes: dict[str, Runtime | None] = {
        "cpu_fp32": Runtime.cpu("fp32"),
        "gpu_fp32": Runtime.from_name("cuda", "fp32") if cuda else None,
        "gpu_bf16": Runtime.from_name("cuda", "bf16") if cuda else None,
    }
    progress(f"machine: {machine_line()}; torch threads {torch.get_num_threads()}")
    if not cuda:
        progress("torch sees no CUDA device: measuring the CPU rows only")
    results: dict[str, dict[str, dict[str, Any] | None]] = {"train_step": {}, "detector": {}, "predict": {}}
    with tempfile.TemporaryDirectory(prefix="a2o-gpu-smoke-") as tmp:
        progress("building the tiny Grounded SAM2 checkpoints")
        detect_cfg = tiny_detect_config(os.path.join(tmp, "detector"))
        progress("building and saving the tiny recognizer for the predict rows")
        torch.manual_seed(0)
        model = build_recognizer(
            smoke_model_config(geometry),
            classes=list(geometry.classes), labels=list(geometry.labels),
            num_frames=geometry.num_frames, resolution=geometry.resolution,
        )
        model_dir = save_recognizer(model, os.path.join(tmp, "recognizer"))
        for name, runtime in runtimes.items():
            if runtime is None:
                for workload in results.values():
                    workload[name] = None
                continue
            progress(f"{name}: train step ({args.warmup} warm-up + {args.iters} timed) on {runtime}")
            results["train_step"][name] = _summary(train_step_ms(geometry, runtime, warmup=args.warmup,
                                                                 iters=args.iters))
            progress(f"{name}: train step median {results['train_step'][name]['median_ms']:.2f} ms")
            progress(f"{name}: detector, {geometry.detect_frames} frames at {DETECT_SIZE} px "
                     f"({args.detect_warmup} warm-up + {args.detect_iters} timed calls)")
            results["detector"][name] = _summary(detector_ms(detect_cfg, geometry, runtime,
                                                             warmup=args.detect_warmup, iters=args.detect_iters))
            progress(f"{name}: detector median {results['detector'][name]['median_ms']:.1f} ms per call")
            progress(f"{name}: predict ({args.warmup} warm-up + {args.predict_iters} timed)")
            results["predict"][name] = _summary(predict_ms(model_dir, geometry, runtime, warmup=args.warmup,
                                                           iters=args.predict_iters))
            progress(f"{name}: predict p50 {results['predict'][name]['p50_ms']:.2f} ms")
    table = build_table(results, geometry)
    device_name = None
    if cuda:
        gpu = runtimes["gpu_fp32"]
        device_name = torch.get_device_module(gpu.device).get_device_name(gpu.device)
    return {
        "table_md": table,
        "machine": machine_line(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": cuda,
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "geometry": asdict(geometry),
        "detect_size": DETECT_SIZE,
        "iterations": {"warmup": args.warmup, "train": args.iters, "predict": args.predict_iters,
                       "detect_warmup": args.detect_warmup, "detect": args.detect_iters},
        "results": results,
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20, help="timed training steps per runtime")
    parser.add_argument("--predict-iters", type=int, default=30, help="timed predictions per runtime")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps / predictions first")
    parser.add_argument("--detect-iters", type=int, default=5, help="timed detector calls per runtime")
    parser.add_argument("--detect-warmup", type=int, default=1, help="untimed detector calls first")
    parser.add_argument("--out", default="", help="output folder (default: $OUT, else runs/gpu_smoke)")
    args = parser.parse_args(argv)
    if min(args.iters, args.predict_iters, args.detect_iters) < 1 or min(args.warmup, args.detect_warmup) < 0:
        parser.error("iteration counts must be >= 1 and warm-up counts >= 0")
    _quiet()
    report = run(args)
    out = output_dir(args.out)
    os.makedirs(out, exist_ok=True)
    header = (f"GPU smoke ({report['machine']}; transformers {report['transformers']}); "
              f"tiny V-JEPA2 T={report['geometry']['num_frames']} {report['geometry']['resolution']} px, "
              f"tiny Grounded SAM2; warm-up excluded")
    print()
    print(header)
    print(report["table_md"])
    with open(os.path.join(out, "gpu_smoke.md"), "w", encoding="utf-8") as fh:
        fh.write(f"{header}\n\n{report['table_md']}\n")
    with open(os.path.join(out, "gpu_smoke.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    progress(f"wrote {os.path.join(out, 'gpu_smoke.md')} and gpu_smoke.json ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
