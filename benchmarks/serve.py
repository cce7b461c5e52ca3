"""Latency and throughput of the served model over loopback HTTP; with ``--agreement``, whether
served predictions match the offline evaluation over a whole split (benchmarks/serve_agreement.py).

Builds a best/ directory with the tiny V-JEPA2 recognizer (random weights) in a temporary
directory, serves it with :func:`a2o.serve.app.build_app` on a free loopback port, and measures
``POST /v1/predict`` with a real mp4 clip:

- single requests, one after another (p50 / p95 latency);
- concurrent load from a bounded thread pool (fixed request count, per-request timeout) at each
  concurrency level: throughput, p50 / p95 latency, errors. Concurrent requests are what
  ``@serve.batch`` in the recognizer can group.

    python -m benchmarks.serve                         # config defaults: T=16, 64 px, 2x3 views
    python -m benchmarks.serve --size test             # the test-suite model (T=4, 32 px, 2x2)
    python -m benchmarks.serve --requests 64 --concurrency 1,4,8 --max-batch-size 8
    python -m benchmarks.serve --agreement --model runs/demo/best --split test

Runs offline on CPU; nothing is left behind (agreement mode: its per-clip JSON).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config_values(size: str, max_batch_size: int) -> dict:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from helpers_best import best_config_values

    serve = {"max_batch_size": max_batch_size, "max_ongoing_requests": max(8, 2 * max_batch_size)}
    if size == "test":
        return best_config_values(serve=serve)
    # The config defaults (data.num_frames=16, data.resolution=64, 2 segments x 3 views, the
    # 'tiny' V-JEPA2 preset) with the annotation detector.
    return {"data": {"dataset": "synthetic"}, "detect": {"detector": "annotation"}, "serve": serve}


# Latency needs no object cues: the annotation detector stands in for a real one's cost (its maps
# of an upload are empty), so the model is served with the oracle flag.
_LATENCY_APP_ARGS = {"allow_oracle_detector": True}


def _timed_post(client, video: bytes, timeout_s: float) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        response = client.post(
            "/v1/predict", content=video, headers={"Content-Type": "video/mp4"}, timeout=timeout_s
        )
        status = response.status_code
    except Exception:  # noqa: BLE001 - a timeout or a dropped connection counts as an error
        status = 0
    return time.perf_counter() - started, status


def _row(name: str, latencies: list[float], statuses: list[int], wall_s: float) -> dict:
    ok = [lat for lat, status in zip(latencies, statuses, strict=True) if status == 200]
    ms = np.array(ok) * 1000.0 if ok else np.array([np.nan])
    return {
        "run": name,
        "requests": len(latencies),
        "errors": len(latencies) - len(ok),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "req_per_s": len(ok) / wall_s if wall_s > 0 else float("nan"),
    }


def _print_table(rows: list[dict]) -> None:
    header = (
        f"{'run':<16} {'requests':>8} {'errors':>6} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'req/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['run']:<16} {r['requests']:>8d} {r['errors']:>6d} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} "
            f"{r['mean_ms']:>9.1f} {r['req_per_s']:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["default", "test"], default="default", help="model/clip geometry")
    parser.add_argument("--requests", type=int, default=32, help="requests per run")
    parser.add_argument("--concurrency", default="4,8", help="comma-separated client thread counts")
    parser.add_argument("--max-batch-size", type=int, default=4, help="serve.max_batch_size")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests first")
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs per detector / recognizer replica")
    from benchmarks.serve_agreement import add_arguments, run_agreement

    add_arguments(parser)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.requests < 1 or any(c < 1 for c in levels):
        parser.error("--requests and --concurrency levels must be >= 1")
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.agreement:
        return run_agreement(args)

    import httpx
    import ray
    from ray import serve

    from a2o.serve.app import APP_NAME, build_app

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from helpers_best import build_best_dir, write_clip

    with tempfile.TemporaryDirectory(prefix="a2o-bench-serve-") as root:
        best = build_best_dir(root, values=_config_values(args.size, args.max_batch_size))
        video = open(
            write_clip(os.path.join(root, "clip.mp4"), num_frames=48, width=96, height=72), "rb"
        ).read()
        started_ray = not ray.is_initialized()
        if started_ray:  # a private cluster, replica logs kept out of the table's way
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        port = free_port()
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            t0 = time.perf_counter()
            serve.run(
                build_app(
                    {"model": best, "detector_cpus": args.cpus, "recognizer_cpus": args.cpus, **_LATENCY_APP_ARGS}
                ),
                name=APP_NAME,
                route_prefix="/",
            )
            deploy_s = time.perf_counter() - t0
            rows = []
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=64)
            ) as client:
                info = client.get("/v1/model").json()
                for _ in range(args.warmup):
                    _timed_post(client, video, args.timeout)
                latencies, statuses = [], []
                t0 = time.perf_counter()
                for _ in range(args.requests):
                    latency, status = _timed_post(client, video, args.timeout)
                    latencies.append(latency)
                    statuses.append(status)
                rows.append(_row("sequential", latencies, statuses, time.perf_counter() - t0))
                for level in levels:
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(level) as pool:
                        results = list(
                            pool.map(lambda _: _timed_post(client, video, args.timeout), range(args.requests))
                        )
                    wall = time.perf_counter() - t0
                    rows.append(
                        _row(f"concurrency={level}", [r[0] for r in results], [r[1] for r in results], wall)
                    )
        finally:
            serve.shutdown()
            if started_ray:
                ray.shutdown()

    g = info["geometry"]
    print(
        f"\nserve benchmark: tiny V-JEPA2, {len(info['labels'])} labels, {len(info['classes'])} map classes, "
        f"T={g['num_frames']} at {g['resolution']} px, {g['segments']}x{g['views']} clips/request, "
        f"max_batch_size={args.max_batch_size}, {os.cpu_count()} CPUs; deploy {deploy_s:.1f} s\n"
    )
    _print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
