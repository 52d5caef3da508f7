"""workbench: runs x checkpoints x layers as first-class objects for studying pretraining choices."""
from __future__ import annotations

from . import data  # light: submodules load lazily
from .version import __version__

__all__ = ["__version__", "data", "Study"]


def __getattr__(name: str):
    """``workbench.Study`` without importing torch-heavy modules at ``import workbench`` time."""
    if name == "Study":
        from .study import Study

        return Study
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
