"""Tests of engine.data: finding scans and building healthy model-space slices."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import engine.data as data_module
from engine.config import LANDMARK_PERCENTILES, PreprocessSpec
from engine.data import HealthySlices, ScanPair, find_scans, landmarks_for_training, split_scans
from engine.errors import Cancelled, DataError
from engine.preprocess import fit_landmarks, foreground_mask, to_model_space
from engine.progress import CancelToken, Progress
from engine.readers import load_mask, load_volume
from engine.tasks.base import SliceSource
from tests.conftest import SAMPLE_IXI, SAMPLE_IXI_MASK, SAMPLE_MS

SPEC = PreprocessSpec(size=64, spacing_mm=3.0)


def _copy_scans(src: Path, dst: Path, n: int) -> list[Path]:
    """Copy the first ``n`` scan/mask pairs of ``src`` into ``dst``; returns the copied scans."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for scan in find_scans(src)[:n]:
        shutil.copy2(scan.image, dst / scan.image.name)
        shutil.copy2(scan.mask, dst / scan.mask.name)
        copied.append(dst / scan.image.name)
    return copied


# ---------------------------------------------------------------------------------------------------- find_scans


def test_find_scans_on_val(require_data: Path) -> None:
    folder = require_data / "ixi-t1" / "val"
    scans = find_scans(folder)
    assert len(scans) == 10
    assert [s.image for s in scans] == sorted(s.image for s in scans)
    for scan in scans:
        assert scan.image.name.endswith("_T1.nii.gz")
        assert scan.mask == folder / scan.image.name.replace("_T1.nii.gz", "_brainmask.nii.gz")
        assert scan.mask.is_file()
    assert all(s.mask is None for s in find_scans(folder, mask_suffix=None))
    assert all(s.mask is None for s in find_scans(folder, mask_suffix=""))


def test_find_scans_errors(require_data: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        find_scans(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no scans") as info:
        find_scans(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    copied = _copy_scans(require_data / "ixi-t1" / "val", tmp_path / "two", 2)
    mask = copied[1].with_name(copied[1].name.replace("_T1.nii.gz", "_brainmask.nii.gz"))
    mask.unlink()
    with pytest.raises(DataError) as info:
        find_scans(tmp_path / "two")
    assert str(mask) in str(info.value)


def test_find_scans_other_naming(tmp_path: Path, tiny_volume: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for stem in ("b", "a"):
        shutil.copy(tiny_volume, folder / f"{stem}_t1w.nii.gz")
        shutil.copy(tiny_volume, folder / f"{stem}_mask.nii.gz")
    scans = find_scans(folder, image_pattern="*_t1w.nii.gz", mask_suffix="_mask.nii.gz")
    assert scans == [ScanPair(folder / "a_t1w.nii.gz", folder / "a_mask.nii.gz"),
                     ScanPair(folder / "b_t1w.nii.gz", folder / "b_mask.nii.gz")]
    # A pattern that also matches the masks does not return them as scans.
    assert find_scans(folder, image_pattern="*.nii.gz", mask_suffix="_mask.nii.gz",
                      image_suffix="_t1w.nii.gz") == scans


def test_split_scans_is_by_scan_and_deterministic() -> None:
    scans = [ScanPair(Path(f"s{i:03d}.nii.gz"), None) for i in range(154)]
    train, val = split_scans(scans)
    assert len(val) == 15
    assert len(train) + len(val) == 154
    assert not set(train) & set(val)
    assert split_scans(scans) == (train, val)
    assert [s for s in scans if s in set(train)] == train
    two_train, two_val = split_scans(scans[:2])
    assert len(two_train) == len(two_val) == 1
    assert set(two_train + two_val) == set(scans[:2])
    with pytest.raises(DataError):
        split_scans(scans[:1])


# ------------------------------------------------------------------------------------------------- HealthySlices


def test_healthy_slices_on_val(require_data: Path) -> None:
    scans = find_scans(require_data / "ixi-t1" / "val")
    progress: list[Progress] = []
    slices = HealthySlices(scans, SPEC, on_progress=progress.append)
    assert isinstance(slices, SliceSource)
    assert slices.images.shape == (len(slices), 64, 64)
    assert slices.images.dtype == np.float32
    assert slices.foreground.dtype == np.bool_
    # Each 2 mm IXI scan has about 60 axial slices with brain (the brain is ~120-150 mm tall).
    per_scan = slices.slices_per_scan()
    assert per_scan.shape == (10,)
    assert (per_scan >= 45).all()
    assert (per_scan <= 80).all()
    assert len(slices) == per_scan.sum()
    assert slices.images.min() >= 0.0
    assert slices.images.max() <= 1.0
    # Each scan is max-normalised within its brain: its brightest slice pixel is close to 1.
    for i in range(10):
        assert slices.images[slices.scan_index == i].max() > 0.6
    # Images are zero outside the brain, so the foreground (brain & image > 0) is exactly image > 0.
    np.testing.assert_array_equal(slices.foreground, slices.images > 0)
    assert progress[-1].done == progress[-1].total == 10
    image, fg = slices.get(3)
    assert image.shape == (64, 64)
    assert fg.shape == (64, 64)
    image[:] = -1.0
    assert slices.images[3].min() >= 0.0  # get() hands out copies


def test_healthy_slices_match_preprocess(require_data: Path) -> None:
    scan = find_scans(require_data / "ixi-t1" / "val")[2]
    slices = HealthySlices([scan], SPEC)
    volume = load_volume(scan.image)
    ms = to_model_space(volume, SPEC, load_mask(scan.mask, volume))
    np.testing.assert_array_equal(slices.images, ms.slices)
    np.testing.assert_array_equal(slices.foreground, ms.brain & (ms.slices > 0))
    np.testing.assert_array_equal(slices.native_index, ms.native_index)
    # The brain inside its own mask is almost entirely positive in a T1 scan.
    assert slices.foreground.sum() > 0.95 * ms.brain.sum()


def test_corrupt_scan_is_named(require_data: Path, tmp_path: Path) -> None:
    copied = _copy_scans(require_data / "ixi-t1" / "val", tmp_path, 2)
    raw = copied[1].read_bytes()
    copied[1].write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError) as info:
        HealthySlices(find_scans(tmp_path), SPEC)
    assert str(copied[1]) in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_inputs() -> None:
    with pytest.raises(DataError):
        HealthySlices([], SPEC)


def test_cancel(require_data: Path) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        HealthySlices(find_scans(require_data / "ixi-t1" / "val"), SPEC, cancel=token)


def test_cache_round_trip_and_staleness(require_data: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    copied = _copy_scans(require_data / "ixi-t1" / "val", tmp_path / "scans", 2)
    scans = find_scans(tmp_path / "scans")
    built = HealthySlices.cached(scans, SPEC, tmp_path / "cache")
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(data_module, "load_volume", no_loading)
        again = HealthySlices.cached(scans, SPEC, tmp_path / "cache")
    np.testing.assert_array_equal(again.images, built.images)
    np.testing.assert_array_equal(again.foreground, built.foreground)
    np.testing.assert_array_equal(again.scan_index, built.scan_index)
    assert again.scans == built.scans

    assert HealthySlices.load_cache(files[0], SPEC, scans) is not None
    assert HealthySlices.load_cache(files[0], PreprocessSpec(size=64, spacing_mm=2.5)) is None
    assert HealthySlices.load_cache(files[0], SPEC, scans[:1]) is None
    assert HealthySlices.load_cache(tmp_path / "missing.npz", SPEC) is None
    # A changed scan makes the cache stale.
    stat = copied[0].stat()
    os.utime(copied[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert HealthySlices.load_cache(files[0], SPEC, scans) is None
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    assert HealthySlices.load_cache(tmp_path / "bad.npz", SPEC) is None


# ---------------------------------------------------------------------------------------------- landmark fitting


def test_landmarks_for_training_fits_the_reference_values_on_the_scans_brains() -> None:
    """The bundled samples, one with a brain mask and one without: the spec comes back with ``"landmarks"``
    normalisation whose values are fitted on the masked voxels of the first and the foreground of the second, in units
    of the spec's percentile; nothing else in the spec changes."""
    spec = PreprocessSpec(size=64, spacing_mm=3.0, normalisation="percentile", percentile=99.0)
    fitted = landmarks_for_training(spec, [ScanPair(SAMPLE_IXI, SAMPLE_IXI_MASK), ScanPair(SAMPLE_MS, None)])

    ixi, ms = load_volume(SAMPLE_IXI), load_volume(SAMPLE_MS)
    ms_brain = ms.data[foreground_mask(ms.data)]
    expected = fit_landmarks([ixi.data[load_mask(SAMPLE_IXI_MASK, ixi)], ms_brain], LANDMARK_PERCENTILES, 99.0)
    assert fitted.landmark_values == expected
    assert fitted.landmark_percentiles == LANDMARK_PERCENTILES
    assert fitted.normalisation == "landmarks"
    assert replace(fitted, normalisation="percentile", landmark_percentiles=(), landmark_values=()) == spec
    # the mask, not the head, is what was fitted on
    head = fit_landmarks([ixi.data[foreground_mask(ixi.data)], ms_brain], LANDMARK_PERCENTILES, 99.0)
    assert fitted.landmark_values != head
