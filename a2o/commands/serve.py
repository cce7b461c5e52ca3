"""``a2o serve --model runs/x/best [--host 127.0.0.1 --port 8000]``: serve a best/ model over HTTP.

Connects to Ray like the other commands (``ray.address`` from best/config.yaml, else RAY_ADDRESS,
else a private local cluster), starts Serve's HTTP proxy on host:port (loopback by default),
deploys :func:`a2o.serve.app.build_app` and blocks until interrupted. Extra ``--set
serve.max_batch_size=8``-style overrides are applied when the parser provides ``args.overrides``.

A model trained with the annotation (oracle) detector is refused before Ray starts: uploads carry
no annotations, so its object maps would be empty. ``--allow-oracle-detector`` serves it anyway,
with a warning in the log and in every response.
"""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger(__name__)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (docker stop, kill) shuts down like Ctrl-C


def run(args) -> int:
    from ray import serve

    from a2o.commands.ray_session import connect
    from a2o.serve.app import APP_NAME, build_app
    from a2o.serve.best import read_best

    overrides = list(getattr(args, "overrides", None) or [])
    allow_oracle = bool(getattr(args, "allow_oracle_detector", False))
    # Fails fast, before Ray starts, on a wrong path or an oracle model served without the flag.
    best = read_best(args.model, allow_oracle_detector=allow_oracle)
    app = build_app({"model": best.root, "overrides": overrides, "allow_oracle_detector": allow_oracle})
    from a2o.commands.console import log_dir_for, run_log

    with run_log(log_dir_for(os.path.dirname(os.path.abspath(best.root))), "serve") as run_log_file:
        say = run_log_file.print
        started = connect(best.config.ray.address, best.config.ray.num_cpus)
        signal.signal(signal.SIGTERM, _interrupt)  # after ray.init, which installs its own handler
        try:
            serve.start(http_options={"host": args.host, "port": args.port})
            serve.run(app, name=APP_NAME, route_prefix="/")
            base = f"http://{args.host}:{args.port}"
            say(f"serving {best.root}")
            if best.warning:
                say(f"  WARNING : {best.warning}")
            say(
                f"  predict : curl -X POST -H 'Content-Type: video/mp4' --data-binary @clip.mp4 '{base}/v1/predict?top_k=5'"
            )
            say(f"  model   : {base}/v1/model")
            say(f"  openapi : {base}/openapi.json (docs: {base}/docs)")
            say("Ctrl-C stops the server.")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            say("stopping")
        finally:
            # Drain our replicas; then, for our private cluster, stop Ray, which takes Serve's
            # controller and proxy with it. (serve.shutdown() here logged "graceful_shutdown
            # failed ... infinite retries" on every stop: Ray kills its controller mid-call.)
            serve.delete(APP_NAME)
            if started:
                import ray

                ray.shutdown()
    return 0
