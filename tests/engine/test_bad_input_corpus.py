"""The bad-input corpus (tests/bad_inputs.py) through the engine: each case ends in one line, never a traceback.

For every case: the error is the engine's own type with a one-line message that starts with the path and says what is
wrong, or the scan loads and a one-line warning says what was done; nothing is allocated for voxels that are not
there, nothing is written, and the input is left as it was.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from engine.errors import EngineError, ModelLoadError, VolumeError
from engine.readers import load_volume
from tests.bad_inputs import MODEL_CASES, SCAN_CASES, Case, by_name

SCANS = by_name(SCAN_CASES)
MODELS = by_name(MODEL_CASES)
PEAK_BYTES = 64 * 2**20
"""Every scan in the corpus is tiny: loading one may not allocate more than this, whatever its header claims."""


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its content (folders as ``<dir>``, pipes as ``<special>``)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_dir():
            out[key] = "<dir>"
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:  # a pipe in the corpus: reading it would block
            out[key] = "<special>"
    return out


def assert_one_line(message: str, path: Path, says: str) -> None:
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    assert "Traceback" not in message
    assert says in message.lower(), f"{says!r} not in {message!r}"


def test_the_corpus_is_large_and_covers_every_group() -> None:
    cases = [*SCAN_CASES, *MODEL_CASES]
    assert len(cases) >= 30
    assert {case.group for case in cases} >= {"loading", "geometry", "intensities", "dicom", "model"}
    assert {case.outcome for case in cases} == {"error", "warning", "loads"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(SCANS))
def test_scan_case(tmp_path: Path, name: str) -> None:
    case: Case = SCANS[name]
    path = case.build(tmp_path)
    before = snapshot(tmp_path)
    tracemalloc.start()
    try:
        if case.outcome == "error":
            with pytest.raises(VolumeError) as info:
                load_volume(path)
            assert_one_line(str(info.value), path, case.says)
        else:
            volume = load_volume(path)
            assert volume.data.ndim == 3
            if case.outcome == "warning":
                assert any(case.says in w.lower() for w in volume.warnings), volume.warnings
                for warning in volume.warnings:
                    assert_one_line(warning, path, "")
            else:
                assert volume.warnings == ()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"loading allocated {peak / 2**20:.0f} MiB"
    assert snapshot(tmp_path) == before  # nothing written beside the input, nothing changed


def test_unscaled_integers_keep_their_stored_values(tmp_path: Path) -> None:
    import numpy as np

    from tests.bad_inputs import head

    stored = np.round(head()).astype(np.int16)
    for name in ("scl_slope_zero", "scl_slope_nan", "scl_slope_nan_with_intercept"):
        volume = load_volume(SCANS[name].build(tmp_path))
        np.testing.assert_array_equal(volume.data, stored.astype(np.float32))


def test_a_disagreeing_qform_is_not_used(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    path = SCANS["sform_qform_disagree"].build(tmp_path)
    volume = load_volume(path)
    header = nib.load(path).header
    np.testing.assert_allclose(volume.affine, header.get_sform(), atol=1e-6)
    assert not np.allclose(volume.affine, header.get_qform(), atol=1.0)


def test_dicom_with_two_series_reads_the_larger_and_names_both(tmp_path: Path) -> None:
    volume = load_volume(SCANS["dicom_two_series"].build(tmp_path))
    assert volume.shape == (16, 14, 10)
    (warning,) = volume.warnings
    assert "7.100 (10 slices)" in warning
    assert "7.200 (4 slices)" in warning


def test_dicom_tie_is_broken_by_series_uid(tmp_path: Path) -> None:
    import numpy as np

    from tests.bad_inputs import AFFINE, head

    volume = load_volume(SCANS["dicom_two_equal_series"].build(tmp_path))
    # GDCM stacks the slices along the normal of the rows and columns, (0, 0, -1) here: the third axis comes back
    # reversed, with an affine that says so; each voxel is where it was.
    np.testing.assert_allclose(volume.affine @ [0, 0, 9, 1], AFFINE @ [0, 0, 0, 1], atol=1e-4)
    first = (head((16, 14, 10)) * 10).astype(np.int16).astype(np.float32)
    np.testing.assert_array_equal(volume.data, first[:, :, ::-1])
    assert "read the one with the most slices (on a tie, the first by series uid): " \
           "1.2.826.0.1.3680043.2.1125.7.300" in volume.warnings[0].lower()


def test_an_unbroken_model_folder_loads(tmp_path: Path) -> None:
    """The model cases break a folder that is otherwise valid."""
    from engine.ensemble import load_ensemble
    from tests.bad_inputs import make_model_folder

    assert load_ensemble(make_model_folder(tmp_path / "model"), device="cpu").info.folds == (0, 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_case(tmp_path: Path, name: str) -> None:
    from engine.ensemble import load_ensemble

    case = MODELS[name]
    path = case.build(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_ensemble(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert case.says in message.lower(), f"{case.says!r} not in {message!r}"
    assert snapshot(tmp_path) == before


def test_nothing_but_engine_errors_escape_for_model_json_damage(tmp_path: Path) -> None:
    """Every top-level key of a valid model.json, removed or given the wrong type, is a ModelLoadError (or loads)."""
    import json
    import shutil

    from engine.ensemble import load_ensemble
    from tests.bad_inputs import make_model_folder

    template = make_model_folder(tmp_path / "template")
    keys = json.loads((template / "model.json").read_text())
    messages = []
    for key in keys:
        for damage in ("drop", None, 7, "text", [], {}):
            model = tmp_path / f"{key}-{damage}"
            shutil.copytree(template, model)
            meta = json.loads((model / "model.json").read_text())
            if damage == "drop":
                meta.pop(key)
            else:
                meta[key] = damage
            (model / "model.json").write_text(json.dumps(meta))
            try:
                load_ensemble(model, device="cpu")
            except EngineError as error:  # anything else fails the test with its traceback
                messages.append(str(error))
            shutil.rmtree(model)
    assert messages
    assert all("\n" not in m for m in messages)
    assert all(m.startswith(str(tmp_path)) for m in messages)
