"""Typed errors raised by the engine.

Every error a user can cause (a bad file, a missing model, a cancelled run) is an :class:`EngineError` whose message is
one line naming the file and the problem, so the CLI and the viewer can show it as it is. When such an error wraps
another library's exception (an OSError, nibabel's or SimpleITK's), :func:`exception_line` shortens that exception to
one line for the message. :func:`one_line` is the rule itself (every run of whitespace, newlines included, becomes one
space); the CLI, the cohort runner, the card reader and the viewer all flatten text with it.
"""

from __future__ import annotations

import re


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


def one_line(text: object) -> str:
    """``text`` as one line: every run of whitespace, newlines included, becomes one space; ends are stripped."""
    return " ".join(str(text).split())


def exception_line(exc: BaseException, limit: int = 300) -> str:
    """``"Type: message"`` on one line; ITK's source-location preamble is dropped and long text is shortened."""
    text = one_line(exc)
    for marker in ("itk::ERROR", "ITK ERROR"):
        if marker in text:
            text = text.split(marker, 1)[1].lstrip(": ")
            text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
            break
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
