"""Builders shared by engine and app tests: healthy IXI slices in model space and a tiny trained model folder.

Data paths come from tests/conftest.py: the tiny model trains on the bundled IXI sample, so it exists on any clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.checkpoints import init_model_folder
from engine.config import Preset, get_preset
from engine.preprocess import to_model_space
from engine.readers import load_mask, load_volume
from engine.tasks.external import ArraySource, default_external_source
from engine.training import Trainer, TrainRequest
from tests.conftest import SAMPLE_IXI, data_path


def ixi_scans(n: int, folder: str = "ixi-t1/val") -> list[Path]:
    """The first ``n`` IXI scans of a folder of the shared data (sorted); skips the test when it is missing."""
    scans = sorted(data_path(folder).glob("*_T1.nii.gz"))[:n]
    if len(scans) < n:
        import pytest  # noqa: PLC0415

        pytest.skip(f"fewer than {n} IXI scans in {data_path(folder)}")
    return scans


def healthy_source(preset: Preset, scans: list[Path]) -> ArraySource:
    """Model-space brain slices of real IXI scans, skull-stripped with their masks."""
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for path in scans:
        volume = load_volume(path)
        mask = load_mask(str(path).replace("_T1.nii.gz", "_brainmask.nii.gz"), volume)
        ms = to_model_space(volume, preset.preprocess, mask)
        images += list(ms.slices)
        masks += list(ms.brain)
    return ArraySource(images, masks)


def train_tiny_model(model_dir: Path, *, folds: tuple[int, ...] = (0, 1), steps: int = 12, seed: int = 0,
                     name: str = "tiny-test") -> Path:
    """Train a tiny-preset model with a few steps per fold on the bundled IXI sample (a few seconds on a CPU)."""
    torch.set_num_threads(1)
    preset = get_preset("tiny")
    source = healthy_source(preset, [SAMPLE_IXI])
    external = default_external_source(preset.preprocess.size)
    init_model_folder(model_dir, preset, name=name)
    for fold in folds:
        request = TrainRequest(preset=preset, fold=fold, model_dir=model_dir, max_steps=steps, seed=seed,
                               device="cpu")
        Trainer(request, source, source, external_source=external).fit()
    return model_dir
