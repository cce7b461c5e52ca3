"""Serving a ``best/`` model with Ray Serve: the app builder, its deployments and HTTP API.

``build_app({"model": "runs/x/best"})`` returns the Serve application (``a2o serve`` and
``serve run a2o.serve.app:build_app model=...`` both use it). Imports are lazy so that
``import a2o.serve`` does not pull in Ray Serve or FastAPI.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_app", "serve_config", "AppArgs", "read_best", "BestModel", "create_api"]

_LAZY = {
    "build_app": "a2o.serve.app",
    "serve_config": "a2o.serve.app",
    "AppArgs": "a2o.serve.app",
    "read_best": "a2o.serve.best",
    "BestModel": "a2o.serve.best",
    "create_api": "a2o.serve.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'a2o.serve' has no attribute {name!r}")
