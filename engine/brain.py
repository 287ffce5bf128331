"""The brain an analysis looks at, on the scan's own grid.

:meth:`engine.Ensemble.analyse` confines its maps to a brain: the caller's brain mask when one is given, else the
scan's foreground (voxels above a small share of the robust maximum, holes filled). A caller that works on results
after the fact (filling the slices between analysed ones with :func:`engine.fill_between_slices`, measuring findings)
asks here for the same mask instead of re-implementing the rule.
"""

from __future__ import annotations

import numpy as np

from engine.errors import VolumeError
from engine.preprocess import foreground_mask
from engine.volumes import Volume


def analysis_brain(volume: Volume, brain_mask: np.ndarray | None = None) -> np.ndarray:
    """The bool brain mask an analysis of ``volume`` uses, on the volume's grid.

    Args:
        volume: the scan.
        brain_mask: the mask handed to the analysis, or None (the scan is taken as skull-stripped and its foreground
            is the brain).

    Returns:
        bool array of the volume's shape: ``brain_mask`` itself when given, else the engine's foreground.

    Raises:
        VolumeError: the mask's shape differs from the scan's.
    """
    data = np.asarray(volume.data)
    if brain_mask is not None:
        mask = np.asarray(brain_mask, dtype=bool)
        if mask.shape != data.shape:
            raise VolumeError(f"{volume.name}: brain mask shape {mask.shape} differs from the scan's {data.shape}")
        return mask
    return foreground_mask(np.asarray(data, dtype=np.float32))
