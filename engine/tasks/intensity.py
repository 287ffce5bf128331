"""Task 4: smooth intensity change modulated by fractal Perlin noise (reference-method.md §2.5).

The reference's ``SmoothNoiseAdditionTask`` adds ``ramp * a * N`` to the patch under the shape, where

- ``ramp = min(dist / s, 1)``, ``dist`` the Euclidean distance transform of the shape mask and
  ``s = min(D * (0.02 + Gamma(3, 0.01)), max(dist))`` with ``D`` the shorter image side;
- ``a = +-(0.05 + Gamma(k=3, theta=0.1))``, the sign drawn with probability 1/2 (``intensity_task_scale = 0.1``);
- ``N`` is fractal Perlin noise over the bounding box, min-max normalised to [0, 1] (:mod:`engine.tasks.noise`);

and clips the patch to the current image's ``[min, max]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from engine.tasks.base import PatchTask, patch_slices
from engine.tasks.noise import NoiseLayer, fractal_noise, sample_fractal_layers
from engine.tasks.shapes import ShapeSpec

INTENSITY_SCALE = 0.1
RAMP_OFFSET = 0.02
RAMP_GAMMA_SHAPE = 3.0
RAMP_GAMMA_SCALE = 0.01


def normalised_noise(shape: tuple[int, int], layers: tuple[NoiseLayer, ...]) -> np.ndarray:
    """Fractal noise rescaled to [0, 1] (all zeros if the noise is constant)."""
    noise = fractal_noise(shape, layers)
    noise -= noise.min()
    peak = noise.max()
    return noise / peak if peak > 0 else noise


def intensity_change(
    shape_mask: np.ndarray, ramp_width: float, amplitude: float, layers: tuple[NoiseLayer, ...]
) -> np.ndarray:
    """The additive change ``ramp * amplitude * noise`` on the bounding-box grid (zero outside the shape)."""
    dist = ndimage.distance_transform_edt(shape_mask)
    width = min(ramp_width, float(dist.max()))
    ramp = np.minimum(dist / width, 1.0) if width > 0 else np.zeros_like(dist)
    return ramp * amplitude * normalised_noise(shape_mask.shape, layers)


class SmoothIntensityTask(PatchTask):
    """Smooth, noise-modulated brightening or darkening inside the shape (task 4)."""

    task_id = 4
    name = "smooth_intensity"

    def sample_params(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Ramp width, signed amplitude and the noise octaves (intervals and lattice gradients)."""
        ramp_width = float(min(image.shape) * (RAMP_OFFSET + rng.gamma(RAMP_GAMMA_SHAPE, RAMP_GAMMA_SCALE)))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        amplitude = sign * float(INTENSITY_SCALE / 2 + rng.gamma(3.0, INTENSITY_SCALE))
        layers = sample_fractal_layers(rng, (int(shape_mask.shape[0]), int(shape_mask.shape[1])))
        return {
            "ramp_width": ramp_width,
            "amplitude": amplitude,
            "noise_layers": tuple(
                {"intervals": layer.intervals, "gradients": layer.gradients, "amplitude": layer.amplitude}
                for layer in layers
            ),
        }

    def apply_patch(
        self,
        image: np.ndarray,
        spec: ShapeSpec,
        shape_mask: np.ndarray,
        corner: tuple[int, int],
        params: dict[str, Any],
    ) -> np.ndarray:
        """Add the change and clip to the current image range; the anomaly region is the shape."""
        layers = tuple(
            NoiseLayer(tuple(layer["intervals"]), np.asarray(layer["gradients"]), float(layer["amplitude"]))
            for layer in params["noise_layers"]
        )
        change = intensity_change(shape_mask, float(params["ramp_width"]), float(params["amplitude"]), layers)
        box = patch_slices(corner, shape_mask.shape)
        image[box] = np.clip(image[box] + change, image.min(), image.max())
        return shape_mask.copy()
