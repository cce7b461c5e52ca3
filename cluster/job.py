"""Entry point for ``ray job submit --working-dir . -- python -m cluster.job --config …``.

Same job as ``a2o search``: inside a Ray job, ``RAY_ADDRESS`` is set by Ray, so the search joins
the cluster it was submitted to.
"""

from __future__ import annotations

import sys

from a2o.cli import main


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["search", *argv])


if __name__ == "__main__":
    sys.exit(run())
