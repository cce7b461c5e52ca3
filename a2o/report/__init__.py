"""Static HTML reports of searches: plots (PNG), trial tables, class diffs, map overlays.

``build_report(run_dir)`` writes ``run_dir/report/index.html``; ``a2o report RUN_DIR`` is its
command. matplotlib is needed (``pip install 'a2o[report]'``); it is imported on first use, so
``import a2o.report`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "find_runs", "Report", "RunRecord"]


def __getattr__(name: str) -> Any:
    if name in ("build_report", "Report"):
        from a2o.report import html

        return getattr(html, name)
    if name in ("find_runs", "RunRecord"):
        from a2o.report import runs

        return getattr(runs, name)
    raise AttributeError(name)
