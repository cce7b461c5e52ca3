"""The A2O exception hierarchy.

Every error A2O raises on purpose derives from :class:`A2OError`, so a caller can catch one root
class. Messages say what went wrong *and* what to do about it.
"""

from __future__ import annotations

__all__ = [
    "A2OError",
    "ConfigError",
    "DataError",
    "ManifestError",
    "VideoDecodeError",
    "DetectionError",
    "DetectorModelError",
    "CacheError",
    "ClassTextError",
    "TrainingError",
    "ResourceError",
    "LLMError",
    "LLMUnavailableError",
    "LLMReplyError",
    "MissingDependencyError",
    "SearchInterrupted",
]


class A2OError(Exception):
    """Root of every error A2O raises deliberately."""


class ConfigError(A2OError, ValueError):
    """A config key or value is wrong. The message names the key and a valid alternative."""


class DataError(A2OError):
    """A dataset cannot be read as asked."""


class ManifestError(DataError):
    """A manifest or annotation file is malformed (the message names the offending row)."""


class VideoDecodeError(DataError):
    """A video is missing, empty or undecodable. Stages skip and count these."""


class DetectionError(A2OError):
    """The detector could not produce likelihood maps."""


class DetectorModelError(DetectionError):
    """A trained detector's folder is missing, half-written or corrupt (the message names it and the fix)."""


class CacheError(A2OError):
    """A cache entry is unusable. Readers treat this as a miss and recompute."""


class ClassTextError(A2OError, ValueError):
    """An object-class text is unsafe or malformed (too long, bad characters, empty)."""


class TrainingError(A2OError):
    """A trial could not train."""


class ResourceError(A2OError):
    """A request asks for more CPUs/GPUs/workers than the cluster has."""


class SearchInterrupted(A2OError):
    """The search stopped before its budget (Ctrl-C); its state is saved for ``--resume``."""


class LLMError(A2OError):
    """Root of LLM-client errors."""


class LLMUnavailableError(LLMError):
    """The LLM endpoint cannot be reached or refused the request."""


class LLMReplyError(LLMError):
    """The LLM replied, but the reply yields no usable proposal."""


class FallbackLimitError(LLMError):
    """Too many of a search's proposals were fallbacks (``search.max_fallback_share``): the LLM is
    not steering it. The search's state is saved; fix the LLM and resume."""


class MissingDependencyError(A2OError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module: str, extra: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"'{module}' is required for this feature: pip install 'a2o[{extra}]'"
        ) from exc
