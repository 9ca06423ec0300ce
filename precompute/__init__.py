"""precompute: fine-tune, extract and analyse into versioned Parquet run folders.

Run it as ``python -m precompute --help``. This module stays torch-free: the dashboard imports
``precompute.schema`` and these error classes without loading torch.
"""

from __future__ import annotations

__all__ = ["PrecomputeError", "CacheError", "DataError", "DiskFullError", "ConfigError"]


class PrecomputeError(Exception):
    """Base of every error the command line reports as one line (exit code 2)."""


class ConfigError(PrecomputeError):
    """A command-line option or combination of options is invalid."""


class DataError(PrecomputeError):
    """Input data (GLUE files, hub datasets) is missing or does not parse."""


class CacheError(PrecomputeError):
    """A run folder file is from another schema version, corrupt, or inconsistent."""


class DiskFullError(PrecomputeError):
    """A write failed because the disk is full."""
