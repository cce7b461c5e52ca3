"""Connecting to Ray from an entry point (the library never calls ``ray.init``)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def connect(address: str = "", num_cpus: int = 0) -> bool:
    """Join ``address`` / ``RAY_ADDRESS`` or start a private local cluster.

    Returns True when this call started Ray (the caller then shuts it down). Token auth is on by
    default in Ray 2.60; a local cluster and its clients need ``RAY_AUTH_MODE=disabled``.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        log.info("connecting to Ray at %s", address)
        ray.init(address=address)
    else:
        kwargs = {"num_cpus": num_cpus} if num_cpus else {}
        log.info("starting a local Ray cluster")
        start_local(**kwargs)
    return True


def start_local(**init_kwargs) -> None:
    """``ray.init`` a private local cluster (no dashboard: it costs a CPU core's share on a small box).

    Without the dashboard there is no State API, so Ray Train's own PlacementGroupCleaner cannot
    see a stopped trial's controller die; :func:`a2o.train.trial.orphaned_group_release` frees
    those placement groups instead.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", include_dashboard=False, **init_kwargs)
