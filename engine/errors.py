"""Typed errors raised by the engine.

Every error a user can cause (a bad file, a missing model, a cancelled run) is an :class:`EngineError` whose message is
one line naming the file and the problem, so the CLI and the viewer can show it as it is.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class VolumeError(EngineError, ValueError):
    """A scan or mask cannot be read or used (unreadable, wrong dimensionality, empty, mismatched grid)."""


class DataError(EngineError, ValueError):
    """A training or evaluation data folder is unusable (no scans, no brain slices)."""


class ConfigError(EngineError, ValueError):
    """A setting is out of its range or unknown (a preset field, an analysis setting, a sampler's step count)."""


class ModelLoadError(EngineError):
    """A model folder is missing, incomplete, or altered (hash mismatch)."""


class OutputError(EngineError, OSError):
    """An output cannot be written (unwritable folder, would overwrite an input)."""


class Cancelled(EngineError):
    """A long-running call was stopped through its cancel token."""
