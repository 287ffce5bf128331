"""Shared test fixtures: where the real MRI data lives, and a tiny synthetic NIfTI volume."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
"""Real MRI data beside the checkout (see its README.md); never copied into the repository."""


@pytest.fixture(scope="session")
def require_data() -> Path:
    """The real-data folder; skips the test when it is not present."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real MRI data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Path:
    """A 16x16x8 float32 NIfTI (1 x 1 x 2.5 mm, first axis pointing left): a 12x12x6 "head" of value 10 on a zero
    background, with a bright 4x4x2 blob of value 100 inside it."""
    data = np.zeros((16, 16, 8), dtype=np.float32)
    data[2:14, 2:14, 1:7] = 10.0
    data[6:10, 4:8, 3:5] = 100.0
    img = nib.Nifti1Image(data, np.diag([-1.0, 1.0, 2.5, 1.0]))
    path = tmp_path / "tiny.nii.gz"
    nib.save(img, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-preset model folder with two members trained for a few steps on real IXI slices (a few seconds)."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real MRI data not found at {DATA_DIR}")
    from tests.model_factory import train_tiny_model  # noqa: PLC0415 - imports torch only when needed

    return train_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
