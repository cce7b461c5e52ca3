"""``Runtime``: the device and numeric precision of one process or actor, decided in one place.

An entry point (a Ray Train worker, a Ray Data detection actor, a Serve replica, a CLI command)
builds one ``Runtime`` and passes it down; library code takes it and follows ``x.device``. This
module is the only place in ``a2o/`` that names an accelerator.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Runtime", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16")
"""auto: bf16 autocast on an accelerator, fp32 on CPU (bf16 matmuls on CPU are slow); fp32: never
autocast; bf16: autocast wherever the device supports it (CPU included, for tests)."""

_ACCELERATOR = "cuda"


@dataclass(frozen=True)
class Runtime:
    """Where tensors live and which autocast wraps forward passes."""

    device: Any  # torch.device (Any: importing this module must not import torch)
    """The torch device of this process or actor."""
    precision: str = "auto"
    """One of :data:`PRECISIONS`."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    # ---- constructors: the only decisions about hardware
    @classmethod
    def cpu(cls, precision: str = "auto") -> Runtime:
        import torch

        return cls(torch.device("cpu"), precision)

    @classmethod
    def best_available(cls, precision: str = "auto") -> Runtime:
        """The local accelerator when there is one, else the CPU (for entry points and tests)."""
        import torch

        return cls(torch.device(_ACCELERATOR if torch.cuda.is_available() else "cpu"), precision)

    @classmethod
    def for_ray_actor(cls, precision: str = "auto") -> Runtime:
        """Inside a Ray actor or task: the accelerator only when Ray assigned this actor one."""
        import ray
        import torch

        assigned = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        return cls(torch.device(_ACCELERATOR if assigned else "cpu"), precision)

    @classmethod
    def from_name(cls, name: str, precision: str = "auto") -> Runtime:
        """From a user's device name ('cpu', 'cuda', 'cuda:1'); 'auto' means :meth:`best_available`."""
        import torch

        if name == "auto":
            return cls.best_available(precision)
        device = torch.device(name)
        if device.type == _ACCELERATOR and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA device; use 'cpu'")
        return cls(device, precision)

    @staticmethod
    def accelerator_count() -> int:
        """Accelerators visible to this process (0 without CUDA)."""
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    # ---- use
    @property
    def accelerated(self) -> bool:
        return self.device.type == _ACCELERATOR

    @property
    def uses_bf16(self) -> bool:
        if self.precision == "fp32":
            return False
        return self.accelerated or self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when :attr:`uses_bf16`, else a no-op context."""
        import torch

        if self.uses_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __str__(self) -> str:
        return f"{self.device} ({'bf16 autocast' if self.uses_bf16 else 'fp32'})"
