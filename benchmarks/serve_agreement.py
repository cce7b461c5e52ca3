"""Do served predictions match the offline evaluation? (``python -m benchmarks.serve --agreement``)

Every clip of one split is posted, as its file's bytes, to the real Ray Serve app
(:func:`a2o.serve.app.build_app` over loopback HTTP, the path ``a2o serve`` takes) and predicted
offline by :func:`a2o.train.evaluate.predict_row`, the per-video step of the final test evaluation,
with the model and the detector built from the same best/. It prints one line::

    served top-1 X offline top-1 Y agreement Z

X and Y are accuracies against the labels, Z the share of clips whose served argmax equals the
offline argmax. Every clip's probabilities go to a JSON file (``--out``).

    python -m benchmarks.serve --agreement --model runs/demo/best --split test
    python -m benchmarks.serve --agreement          # builds its own best/ first (below)

Without ``--model`` it builds a best/ of its own in a temporary storage root (``--workdir`` keeps
it): the demo config (cluster/configs/demo.yaml: tiny frozen V-JEPA2) on an A2O-Synth world
(``--world``, default household) with ``detect.detector=learned`` and, as the class set, every
action's object plus the world's agent (``--classes``). It goes through the product's own steps:
:func:`a2o.service.prepare_data`, then :func:`a2o.service.train_and_evaluate_best`, which trains
the learned detector on the train split if needed, trains the recognizer, evaluates on test and
writes best/ with the detector in it.

A model trained with the annotation (oracle) detector is refused by serving; pass
``--allow-oracle-detector`` to measure how far its served predictions are from its offline ones
(``--detector annotation --allow-oracle-detector`` builds such a model the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.serve_agreement")

DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "cluster", "configs", "demo.yaml")
_CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agreement mode's options (on the ``benchmarks.serve`` parser)."""
    group = parser.add_argument_group("agreement mode (--agreement)")
    group.add_argument(
        "--agreement", action="store_true", help="served vs offline predictions over a whole split"
    )
    group.add_argument("--model", default=None, help="best/ directory (default: build one, see above)")
    group.add_argument("--split", default="test", choices=["train", "val", "test"])
    group.add_argument("--out", default=None, help="per-clip JSON (default: agreement_<split>.json here)")
    group.add_argument(
        "--allow-oracle-detector", action="store_true", help="serve an annotation-detector model anyway"
    )
    group.add_argument("--workdir", default=None, help="storage root of the self-built best/ (default: temp)")
    group.add_argument(
        "--world", default="household", help="self-built best/: A2O-Synth preset or world spec YAML"
    )
    group.add_argument(
        "--classes",
        default=None,
        help="self-built model's object classes, comma-separated (default: every action's object)",
    )
    group.add_argument("--final-epochs", type=int, default=15, help="self-built model's training epochs")
    group.add_argument(
        "--detector",
        default="learned",
        choices=["learned", "annotation"],
        help="self-built model's detector (annotation: the oracle, needs --allow-oracle-detector)",
    )


# ---------------------------------------------------------------------------------------------
# a best/ of our own: the demo world with the learned detector, via the search service's steps


def world_objects(data_root: str) -> list[str]:
    """Every action's object in an A2O-Synth world, then its agent (what a good class set holds)."""
    from a2o.data.synthetic import load_dataset_info

    info = load_dataset_info(data_root)
    objects = list(dict.fromkeys(info["action_objects"].values()))
    return objects + [info["world"]["agent"]]


def build_world_best(
    storage_root: str, *, world: str, classes: list[str] | None, final_epochs: int, detector: str = "learned"
) -> str:
    """Write ``storage_root/best`` with the product's own final step; returns its path."""
    from a2o.config import load_config
    from a2o.service import prepare_data, train_and_evaluate_best

    cfg = load_config(
        DEMO_CONFIG,
        [
            f"detect.detector={detector}",
            f"data.root={os.path.join(storage_root, 'synth')}",
            f"data.synth_preset={world}",
            f"storage.root={storage_root}",
            "storage.experiment_name=agreement",
            f"train.final_epochs={final_epochs}",
        ],
    )
    manifest, labels = prepare_data(cfg)
    classes = classes or world_objects(cfg.data.root)
    started = time.perf_counter()
    metrics = train_and_evaluate_best(cfg, classes, labels, manifest)
    test = (metrics.get("test") or {}).get("accuracy")
    print(
        f"built {storage_root}/best in {time.perf_counter() - started:.0f} s: classes {classes}, "
        f"val {metrics.get('val_accuracy')}, test {test}",
        file=sys.stderr,
    )
    return os.path.join(storage_root, "best")


# ---------------------------------------------------------------------------------------------
# the two sides


def split_rows(best: Any, split: str) -> list[dict[str, Any]]:
    """The manifest rows of ``split``, read as the search read them (same data config and seed)."""
    from a2o.data.manifest import load_manifest

    rows = [row for row in load_manifest(best.config.data).to_pylist() if row["split"] == split]
    if not rows:
        raise SystemExit(f"the dataset of {best.root} has no {split!r} rows")
    return rows


def offline_probabilities(best: Any, rows: list[dict[str, Any]]) -> list[np.ndarray]:
    """What the final test evaluation computes for each row (model and detector from best/)."""
    from a2o.detect.base import create_detector
    from a2o.model import load_recognizer
    from a2o.train.evaluate import predict_row

    model, _ = load_recognizer(best.model_dir, classes=best.classes)
    detector = create_detector(best.config.detect) if best.classes else None
    return [predict_row(model, detector, best.classes, best.geometry, row) for row in rows]


def _video_bytes(uri: str) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb") as fh:
        return fh.read()


def served_probabilities(
    best: Any, rows: list[dict[str, Any]], *, allow_oracle_detector: bool, cpus: float, concurrency: int, timeout_s: float
) -> list[dict[str, Any]]:
    """Post every row's file to the real Serve app; each reply's full probability vector."""
    import httpx
    from ray import serve

    from a2o.serve.app import APP_NAME, build_app
    from benchmarks.serve import free_port

    videos = [_video_bytes(row["uri"]) for row in rows]
    num_labels = len(best.labels)
    overrides = [f"serve.max_top_k={max(num_labels, best.config.serve.max_top_k)}"]
    largest_mb = max(len(v) for v in videos) / 2**20
    if largest_mb >= best.config.serve.max_upload_mb:
        overrides.append(f"serve.max_upload_mb={largest_mb * 1.5 + 1:.1f}")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app(
            {
                "model": best.root,
                "overrides": overrides,
                "allow_oracle_detector": allow_oracle_detector,
                "detector_cpus": cpus,
                "recognizer_cpus": cpus,
            }
        )
        serve.run(app, name=APP_NAME, route_prefix="/")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s) as client:

            def post(index: int) -> dict[str, Any]:
                extension = os.path.splitext(rows[index]["uri"])[1].lower()
                response = client.post(
                    "/v1/predict",
                    content=videos[index],
                    headers={"Content-Type": _CONTENT_TYPES.get(extension, "application/octet-stream")},
                    params={"top_k": num_labels},
                )
                payload = response.json()
                if response.status_code != 200:
                    return {"status": response.status_code, "error": payload.get("error")}
                probabilities = np.full(num_labels, np.nan)
                for item in payload["predictions"]:
                    probabilities[item["label_id"]] = item["probability"]
                return {"status": 200, "probabilities": probabilities, "warning": payload.get("warning")}

            with ThreadPoolExecutor(max(1, concurrency)) as pool:
                return list(pool.map(post, range(len(rows))))
    finally:
        serve.shutdown()


# ---------------------------------------------------------------------------------------------
# comparison


def compare(best: Any, rows: list[dict[str, Any]], served: list[dict[str, Any]], offline: list[np.ndarray]) -> dict:
    clips, served_hits, offline_hits, agreements = [], 0, 0, 0
    for row, reply, offline_probs in zip(rows, served, offline, strict=True):
        label = int(row["label_id"])
        offline_top1 = int(np.argmax(offline_probs))
        clip = {
            "video_id": row["video_id"],
            "label_id": label,
            "label": row["label"],
            "offline_top1": offline_top1,
            "offline_probabilities": [float(p) for p in offline_probs],
            "served_status": reply["status"],
            # A span (start/end) is cut offline; the upload is the whole file.
            "has_span": any(row.get(k) is not None for k in ("start_sec", "end_sec", "start_frame", "end_frame")),
        }
        offline_hits += offline_top1 == label
        if reply["status"] == 200:
            served_probs = reply["probabilities"]
            served_top1 = int(np.argmax(served_probs))
            served_hits += served_top1 == label
            agreements += served_top1 == offline_top1
            clip.update(
                served_top1=served_top1,
                served_probabilities=[float(p) for p in served_probs],
                max_abs_difference=float(np.max(np.abs(served_probs - offline_probs))),
                agree=served_top1 == offline_top1,
                warning=reply["warning"],
            )
        else:
            clip.update(served_top1=None, agree=False, error=reply["error"])
        clips.append(clip)
    n = len(rows)
    return {
        "model": best.root,
        "detector": best.config.detect.detector,
        "classes": list(best.classes),
        "labels": best.labels,
        "clips": n,
        "served_errors": sum(1 for reply in served if reply["status"] != 200),
        "served_top1": served_hits / n,
        "offline_top1": offline_hits / n,
        "agreement": agreements / n,
        "max_abs_difference": max((c.get("max_abs_difference", 0.0) for c in clips), default=0.0),
        "metrics_test_top1": (best.metrics.get("test") or {}).get("accuracy"),
        "per_clip": clips,
    }


def run_agreement(args: argparse.Namespace) -> int:
    """The agreement mode: prints exactly one line on stdout (everything else goes to stderr)."""
    with contextlib.redirect_stdout(sys.stderr):  # Ray Train / Serve chatter stays off stdout
        line = _measure(args)
    print(line)
    return 0


def _measure(args: argparse.Namespace) -> str:
    import ray

    from a2o.commands.ray_session import start_local
    from a2o.serve.best import read_best

    started_ray = not ray.is_initialized()
    if started_ray:  # a private cluster; replica logs kept out of stdout
        start_local(log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="a2o-bench-agreement-") as scratch:
            model = args.model
            if model is None:
                model = build_world_best(
                    os.path.abspath(args.workdir or scratch),
                    world=args.world,
                    classes=[c.strip() for c in (args.classes or "").split(",") if c.strip()],
                    final_epochs=args.final_epochs,
                    detector=args.detector,
                )
            best = read_best(model, allow_oracle_detector=args.allow_oracle_detector)
            rows = split_rows(best, args.split)
            t0 = time.perf_counter()
            offline = offline_probabilities(best, rows)
            offline_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            served = served_probabilities(
                best,
                rows,
                allow_oracle_detector=args.allow_oracle_detector,
                cpus=args.cpus,
                concurrency=max(int(c) for c in args.concurrency.split(",") if c.strip()),
                timeout_s=args.timeout,
            )
            served_s = time.perf_counter() - t0
            result = compare(best, rows, served, offline)
            result.update(split=args.split, offline_seconds=offline_s, served_seconds=served_s)
            out = os.path.abspath(args.out or f"agreement_{args.split}.json")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2)
    finally:
        if started_ray:
            ray.shutdown()
    print(
        f"{result['clips']} {args.split} clips of {best.root} (detector {result['detector']}, classes "
        f"{best.classes}): {result['served_errors']} served errors, largest |served - offline| "
        f"probability {result['max_abs_difference']:.2e}; per clip: {out}",
        file=sys.stderr,
    )
    return (
        f"served top-1 {result['served_top1']:.4f} offline top-1 {result['offline_top1']:.4f} "
        f"agreement {result['agreement']:.4f}"
    )
