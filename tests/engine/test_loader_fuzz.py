"""Property: whatever a NIfTI header says, only the engine's own errors leave the loader.

Hypothesis writes small single-file NIfTI images whose header fields (dims, pixdim, datatype and bitpix, vox_offset,
scaling, sform and qform with their codes, intent) are drawn from valid, odd and impossible values, over voxel bytes
that may be too few, and reads each with ``load_volume``. Every read ends in a float32 3-D :class:`Volume` with a
finite affine and finite voxels, or in an :class:`~engine.errors.EngineError` whose message is one line starting with
the path; never another exception, and never an allocation beyond what the small file can hold.

Bounded: 500 examples from a fixed seed (``derandomize``) so CI sees the same cases each run, in under 10 seconds on
two cores. ``CONDIFF_FUZZ_EXAMPLES=20000`` runs a longer, randomised search locally (about two minutes).
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.readers import load_volume
from engine.volumes import Volume

LONG_RUN = int(os.environ.get("CONDIFF_FUZZ_EXAMPLES", "0"))
EXAMPLES = LONG_RUN or 500
PEAK_BYTES = 64 * 2**20

ODD_FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, 3.4e38, -3.4e38, float("nan"), float("inf"),
                     float("-inf")]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
SIZES = st.one_of(st.integers(-3, 12), st.sampled_from([0, 1, 32767, -32768]))
DATATYPES = st.one_of(st.sampled_from(sorted(nib.nifti1.data_type_codes.code.keys() - {"none"}, key=str)).map(
    lambda key: int(nib.nifti1.data_type_codes.code[key])), st.integers(-5, 5000))
XFORM_CODES = st.integers(-2, 6)


@st.composite
def headers(draw: st.DrawFn) -> dict:
    """Header fields to overwrite (absent fields keep the valid image's values)."""
    fields: dict = {}
    if draw(st.booleans()):
        ndim = draw(st.integers(-1, 8))
        fields["dim"] = [ndim, *draw(st.lists(SIZES, min_size=7, max_size=7))]
    if draw(st.booleans()):
        fields["pixdim"] = draw(st.lists(ODD_FLOATS, min_size=8, max_size=8))
    if draw(st.booleans()):
        fields["datatype"] = draw(DATATYPES)
        fields["bitpix"] = draw(st.sampled_from([0, 1, 8, 16, 24, 32, 64, 128, 256, 7]))
    if draw(st.booleans()):
        fields["vox_offset"] = draw(st.one_of(st.sampled_from([0.0, 100.0, 348.0, 352.0, 353.0, 1e9]), ODD_FLOATS))
    if draw(st.booleans()):
        fields["scl_slope"] = draw(ODD_FLOATS)
        fields["scl_inter"] = draw(ODD_FLOATS)
    if draw(st.booleans()):
        fields["sform_code"] = draw(XFORM_CODES)
        for row in ("srow_x", "srow_y", "srow_z"):
            fields[row] = draw(st.lists(ODD_FLOATS, min_size=4, max_size=4))
    if draw(st.booleans()):
        fields["qform_code"] = draw(XFORM_CODES)
        for name in ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
            fields[name] = draw(ODD_FLOATS)
    if draw(st.booleans()):
        fields["intent_code"] = draw(st.sampled_from([0, 1002, 1007, 2001, 32767]))
    return fields


def _write(folder: Path, fields: dict, payload: str, compressed: bool, seed: int) -> Path:
    """A valid 6 x 5 x 4 float32 image, its header fields overwritten byte for byte, its voxel bytes kept, cut short
    or replaced with random bytes."""
    data = np.random.default_rng(seed).normal(100, 20, (6, 5, 4)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([-1.5, 1.5, 2.0, 1.0]))
    raw = img.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=False)
    for name, value in fields.items():
        with np.errstate(all="ignore"):
            header[name] = value
    block = header.binaryblock
    body = raw[len(block):]
    if payload == "short":
        body = body[: len(body) // 3]
    elif payload == "random":
        body = np.random.default_rng(seed).bytes(len(body))
    elif payload == "none":
        body = body[:4]  # the extension flag only
    content = block + body
    path = folder / ("fuzz.nii.gz" if compressed else "fuzz.nii")
    path.write_bytes(gzip.compress(content) if compressed else content)
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(fields=headers(), payload=st.sampled_from(["valid", "short", "random", "none"]), compressed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_only_engine_errors_leave_the_loader(scratch: Path, fields: dict, payload: str, compressed: bool,
                                             seed: int) -> None:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    path = _write(folder, fields, payload, compressed, seed)
    tracemalloc.start()
    try:
        volume = load_volume(path)
    except EngineError as error:  # the only kind allowed out; anything else fails the test with its traceback
        message = str(error)
        assert "\n" not in message
        assert message.startswith(str(path))
    else:
        assert isinstance(volume, Volume)
        assert volume.data.ndim == 3
        assert volume.data.dtype == np.float32
        assert np.isfinite(volume.data).all()
        assert np.isfinite(volume.affine).all()
        assert abs(np.linalg.det(volume.affine[:3, :3])) > 0
        assert all("\n" not in w and w.startswith(str(path)) for w in volume.warnings)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"{peak / 2**20:.0f} MiB for a {path.stat().st_size}-byte file"


def test_the_unmodified_image_loads(scratch: Path) -> None:
    """The fuzzed image is valid before its header is changed (so errors come from the changes)."""
    folder = Path(tempfile.mkdtemp(dir=scratch))
    for compressed in (False, True):
        volume = load_volume(_write(folder, {}, "valid", compressed, 0))
        assert volume.shape == (6, 5, 4)
        assert volume.axcodes == ("L", "A", "S")
