"""``a2o llm serve [--model NAME] [--port N]``: the embedded local LLM in the foreground.

Recipe: resolve the model (``--model`` or ``llm.local_model``'s default) -> fetch and verify it on
first use -> start the OpenAI-compatible server on a loopback port -> print the base URL -> wait
until Ctrl-C (or SIGTERM) -> stop the server by its PID.

Point an experiment at it with ``llm.base_url: http://127.0.0.1:PORT/v1``, or leave
``llm.base_url: local`` and the search starts and stops its own server.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from a2o.config import LLMConfig

log = logging.getLogger(__name__)


def _logs_dir() -> Path:
    """Server logs of stand-alone runs go next to the model cache (there is no run directory)."""
    from searchers.models import model_cache_dir

    return model_cache_dir().parent / "logs"


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(args) -> int:
    from searchers.local_llm import LocalLLMServer, smoke_test
    from searchers.models import MODELS

    model_name = args.model or LLMConfig().local_model
    if model_name not in MODELS:
        print(f"error: unknown model '{model_name}'. Available models:", file=sys.stderr)
        for name, model in MODELS.items():
            print(f"  {name:24s} {model.size_bytes / 1e6:6.0f} MB  {model.license:11s} {model.description}",
                  file=sys.stderr)
        return 2
    # SIGTERM (e.g. `kill`, a process supervisor) takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    server = LocalLLMServer(model_name, log_dir=_logs_dir(), port=args.port, startup_timeout_s=600.0)
    try:
        with server:
            smoke_test(server)  # the model must run, not only load
            print(f"Local LLM '{model_name}' (pid {server.pid}) serving at {server.base_url}", flush=True)
            print(f"  set llm.base_url: {server.base_url}   log: {server.log_path}", flush=True)
            print("  press Ctrl-C to stop", flush=True)
            while True:
                server.check_alive()
                time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
