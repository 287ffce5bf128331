"""Shared test fixtures, and the one place that knows where test data live.

Two sources of real MRI:

* ``resources/samples/`` ships with the repository (an IXI scan with its brain mask, an MS scan with its lesions):
  the core real-data tests use these and run on any clone.
* the shared data folder (``../shared/data`` beside the checkout, or the folder named by ``CONDIFF_DATA_DIR``) holds
  the datasets (IXI, BraTS, MS, stroke). Tests that need it skip, naming the missing path, when it is not there;
  ``CONDIFF_DATA_DIR=/some/empty/dir make test`` shows what a fresh clone runs.

Test files take paths from here (:data:`DATA_DIR`, :data:`SAMPLES_DIR`, :func:`real_scan`, :func:`data_path`), never
compute their own.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Members exported for ONNX Runtime are cached per test session, never in the user's cache folder.
os.environ.setdefault("CONDIFF_CACHE_DIR", tempfile.mkdtemp(prefix="condiff-test-cache-"))

from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "resources" / "samples"
"""Real scans shipped with the repository (see its ATTRIBUTION.md)."""
DATA_DIR = Path(os.environ.get("CONDIFF_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
"""Real MRI datasets beside the checkout (see their README.md); never copied into the repository."""

SAMPLE_IXI = SAMPLES_DIR / "IXI056-HH-1327_T1.nii.gz"
SAMPLE_IXI_MASK = SAMPLES_DIR / "IXI056-HH-1327_brainmask.nii.gz"
SAMPLE_MS = SAMPLES_DIR / "patient07_T1.nii.gz"
SAMPLE_MS_LESION = SAMPLES_DIR / "patient07_lesion.nii.gz"
_SAMPLE_COPIES = {
    "ixi-t1/val/IXI056-HH-1327_T1.nii.gz": SAMPLE_IXI,
    "ixi-t1/val/IXI056-HH-1327_brainmask.nii.gz": SAMPLE_IXI_MASK,
    "ms-lesjak/patient07/patient07_T1.nii.gz": SAMPLE_MS,
    "ms-lesjak/patient07/patient07_lesion.nii.gz": SAMPLE_MS_LESION,
}
"""Files of the shared data that the repository ships unchanged as samples."""


def _skip_reason(path: Path) -> str:
    return (f"real MRI data not found: {path} (the shared data folder {DATA_DIR}; set CONDIFF_DATA_DIR to use "
            "another)")


def data_path(relative: str) -> Path:
    """A file or folder of the shared data; skips the calling test when it is not there."""
    path = DATA_DIR / relative
    if not path.exists():
        pytest.skip(_skip_reason(path))
    return path


def real_scan(relative: str) -> Path:
    """A real scan by its path under the shared data; the bundled sample when the repository ships it (so the test
    runs on any clone), else the shared file (or a skip naming it)."""
    sample = _SAMPLE_COPIES.get(relative)
    if sample is not None and sample.exists():
        return sample
    return data_path(relative)


@pytest.fixture(scope="session")
def require_data() -> Path:
    """The shared data folder; skips the test when it is missing or empty."""
    if not DATA_DIR.is_dir() or not any(DATA_DIR.iterdir()):
        pytest.skip(_skip_reason(DATA_DIR))
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
    """A tiny-preset model folder with two members trained for a few steps on the bundled IXI sample (seconds)."""
    from tests.model_factory import train_tiny_model  # noqa: PLC0415 - imports torch only when needed

    return train_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
