"""Draw the condiff application icon: an axial brain slice with a warm anomaly spot, on a dark rounded square.

Run ``python packaging/make_icon.py`` to (re)write ``resources/icons/condiff.png`` (256x256 RGBA). The drawing is
computed on a 4x canvas with numpy and downsampled with a box filter, so edges are antialiased; nothing random is
used, so the output is the same every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256
SUPERSAMPLE = 4
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "resources" / "icons" / "condiff.png"


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rounded_square(x: np.ndarray, y: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance to a rounded square centred at the origin (negative inside)."""
    qx = np.abs(x) - (half - radius)
    qy = np.abs(y) - (half - radius)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside - radius


def draw_icon(size: int = SIZE, supersample: int = SUPERSAMPLE) -> Image.Image:
    """Render the icon as an RGBA image of ``size x size`` pixels.

    Args:
        size: output side in pixels.
        supersample: drawing resolution factor used for antialiasing.

    Returns:
        The icon as a PIL RGBA image.
    """
    n = size * supersample
    coords = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0  # [-1, 1], y grows downwards
    x, y = np.meshgrid(coords, coords)
    px = 2.0 / n  # one drawing pixel in these units

    # Background: a dark blue-grey rounded square with a soft vertical gradient.
    tile = _rounded_square(x, y, 0.94, 0.22)
    tile_alpha = 1.0 - _smoothstep(-px, px, tile)
    top, bottom = np.array([0.13, 0.17, 0.24]), np.array([0.05, 0.07, 0.11])
    shade = ((y + 1.0) / 2.0)[..., None]
    rgb = top * (1.0 - shade) + bottom * shade

    # Brain: an ellipse, narrower at the front (top), its edge gently lobed like cortex.
    bx = x / (0.60 - 0.07 * np.clip(-y, 0.0, 1.0))  # narrower towards the frontal pole (top)
    by = (y + 0.02) / 0.74
    angle = np.arctan2(y, x)
    radius = np.hypot(bx, by) * (1.0 + 0.025 * np.sin(9.0 * angle) + 0.012 * np.sin(23.0 * angle))
    brain = 1.0 - _smoothstep(1.0 - 1.5 * px, 1.0 + 1.5 * px, radius)

    # Tissue intensity: brighter cortex rim, softer white matter, darker interhemispheric fissure and ventricles.
    tissue = 0.70 + 0.22 * _smoothstep(0.72, 0.95, radius)
    fissure = np.exp(-((x / 0.018) ** 2)) * (_smoothstep(0.45, 0.95, np.abs(y + 0.02) / 0.74) + 0.15)
    tissue = tissue - 0.55 * np.clip(fissure, 0.0, 1.0)
    for side in (-1.0, 1.0):
        vx, vy = (x - side * 0.085) / 0.05, (y + 0.04) / 0.28
        tilt = vx + 0.9 * vy * side
        ventricle = 1.0 - _smoothstep(0.85, 1.15, np.hypot(tilt, vy))
        tissue = tissue - 0.50 * ventricle
    tissue = np.clip(tissue, 0.0, 1.0)
    grey = np.stack([tissue * 0.93, tissue * 0.96, tissue], axis=-1)

    # Anomaly: a warm (yellow core, red rim) Gaussian heat spot in the right hemisphere.
    heat = np.exp(-(((x - 0.32) / 0.15) ** 2 + ((y - 0.26) / 0.14) ** 2)) * brain
    red, yellow = np.array([0.93, 0.20, 0.12]), np.array([1.00, 0.86, 0.25])
    core = _smoothstep(0.35, 0.95, heat)[..., None]
    heat_rgb = red * (1.0 - core) + yellow * core
    heat_alpha = (0.92 * _smoothstep(0.08, 0.55, heat))[..., None]
    brain_rgb = grey * (1.0 - heat_alpha) + heat_rgb * heat_alpha

    rgb = rgb * (1.0 - brain[..., None]) + brain_rgb * brain[..., None]
    rgba = np.concatenate([rgb, tile_alpha[..., None]], axis=-1)

    # Box-filter down to the output size (premultiplied, so the transparent corners do not darken the edge).
    rgba[..., :3] *= rgba[..., 3:]
    small = rgba.reshape(size, supersample, size, supersample, 4).mean(axis=(1, 3))
    alpha = small[..., 3:]
    small[..., :3] = np.divide(small[..., :3], alpha, out=np.zeros_like(small[..., :3]), where=alpha > 0)
    return Image.fromarray(np.round(np.clip(small, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGBA")


def main(argv: list[str] | None = None) -> int:
    """Write the icon PNG; returns the exit status."""
    parser = argparse.ArgumentParser(description="Draw the condiff icon.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"PNG to write (default: {DEFAULT_OUT})")
    parser.add_argument("--size", type=int, default=SIZE, help="side in pixels (default: 256)")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw_icon(args.size).save(args.out, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
