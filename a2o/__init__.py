"""A2O: agentic action-to-object feature search for video action recognition, on Ray.

``import a2o`` is fast and side-effect free: heavy modules (torch models, ray, transformers) are
imported by the submodules that need them.
"""

from a2o.config import ExperimentConfig, load_config
from a2o.errors import A2OError

__all__ = ["A2OError", "ExperimentConfig", "load_config", "__version__"]
__version__ = "0.1.0"
