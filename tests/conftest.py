"""Shared fixtures. Tests run on CPU, offline, with tiny models."""

from __future__ import annotations

import os

import pytest

# Offline by default: nothing in the default tier may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray cluster for the tests that need one (started once per session)."""
    import ray

    from a2o.commands.ray_session import start_local

    if not ray.is_initialized():
        start_local(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()
