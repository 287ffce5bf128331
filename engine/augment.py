"""Acquisition augmentation: the look of other scanners, taught to the network as healthy.

A model trained on one scanner reads any change of contrast, bias field, noise, blur or resolution as an anomaly.
:func:`acquisition_augment` draws such a change and applies it to a healthy model-space slice *before* a synthetic
anomaly is added, so the training target and its condition carry the same acquisition and the network learns to keep
it (and to remove only the anomaly).

The transforms are TorchIO's (the field's library for MRI augmentation, Pérez-García et al. 2021): random bias field,
gamma, Gaussian blur, Rician-free Gaussian noise and anisotropic resolution (a thick-slice acquisition seen along one
in-plane axis). TorchIO draws its parameters from torch's global generator; here that generator is forked and seeded
from the caller's ``numpy.random.Generator``, so a slice's augmentation depends on its seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

__all__ = ["AcquisitionAugmentation", "acquisition_augment"]


@dataclass(frozen=True)
class AcquisitionAugmentation:
    """Ranges of the acquisition changes (model-space units: pixels, intensities in [0, 1]).

    Attributes:
        probability: share of training slices that get a change at all (the rest stay as scanned).
        bias_coefficients: maximum magnitude of the bias field's polynomial coefficients (order 3, log domain).
        log_gamma: the gamma exponent is ``exp(u)``, ``u`` uniform in ``(-log_gamma, log_gamma)``.
        blur_px: maximum Gaussian blur standard deviation, in model pixels.
        noise_std: maximum standard deviation of added Gaussian noise, in model intensity units.
        anisotropy: maximum downsampling factor of the simulated thick-slice axis.
        transform_probability: each of the five changes is applied to a chosen slice with this probability.
    """

    probability: float = 0.8
    bias_coefficients: float = 0.3
    log_gamma: float = 0.3
    blur_px: float = 0.8
    noise_std: float = 0.03
    anisotropy: float = 2.5
    transform_probability: float = 0.5


@lru_cache(maxsize=4)
def _transform(params: AcquisitionAugmentation) -> Any:
    import torchio as tio  # noqa: PLC0415 - heavy import, only needed for training

    p = params.transform_probability
    return tio.Compose([
        tio.RandomBiasField(coefficients=params.bias_coefficients, order=3, p=p),
        tio.RandomGamma(log_gamma=(-params.log_gamma, params.log_gamma), p=p),
        tio.RandomAnisotropy(axes=(0, 1), downsampling=(1.1, params.anisotropy), p=p),
        tio.RandomBlur(std=(0.0, params.blur_px), p=p),
        tio.RandomNoise(mean=0.0, std=(0.0, params.noise_std), p=p),
    ])


def acquisition_augment(image: np.ndarray, foreground: np.ndarray, rng: np.random.Generator,
                        params: AcquisitionAugmentation | None = None) -> np.ndarray:
    """A healthy slice as another acquisition might have shown it.

    Args:
        image: float32 ``(H, W)`` model-space slice in [0, 1], zero outside the brain.
        foreground: bool ``(H, W)`` brain pixels; the result is zero outside them and clipped to [0, 1] inside.
        rng: the slice's generator (one draw decides whether to augment, one seeds TorchIO).
        params: the ranges; None uses :class:`AcquisitionAugmentation`'s defaults.

    Returns:
        float32 ``(H, W)``; ``image`` itself (unchanged) when the draw says no change.
    """
    params = params or AcquisitionAugmentation()
    choose = rng.random() < params.probability
    seed = int(rng.integers(0, 2**62))
    if not choose or not foreground.any():
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, :, :, None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = _transform(params)(tensor)
    changed = out[0, :, :, 0].numpy()
    return np.where(foreground, np.clip(changed, 0.0, 1.0), 0.0).astype(np.float32)
