"""Where the networks run: the one place that turns a device name into a torch device."""

from __future__ import annotations

import torch

from engine.errors import ConfigError

DEVICE_NAMES = ("auto", "cpu", "cuda")


def available_devices() -> list[str]:
    """Device choices on this machine: ``["auto", "cpu"]`` plus ``"cuda"`` when a CUDA GPU is usable."""
    return list(DEVICE_NAMES) if torch.cuda.is_available() else ["auto", "cpu"]


def resolve_device(device: str) -> torch.device:
    """Turn ``"auto"`` (CUDA when usable, else the CPU), ``"cpu"`` or ``"cuda"`` into a torch device.

    Raises:
        ConfigError: an unknown name, or ``"cuda"`` on a machine without a usable CUDA GPU.
    """
    if device not in DEVICE_NAMES:
        raise ConfigError(f"device must be one of {', '.join(DEVICE_NAMES)}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("the CUDA device was asked for, but this machine has no usable CUDA GPU")
    return torch.device(device)
