"""Writing an analysis to disk: BIDS-like derivative names, on the scan's own grid, atomically.

For a scan ``<base>_<suffix>.nii.gz`` (``suffix`` a contrast such as ``T1w``, ``T1`` or ``t1``) the outputs are::

    <base>_desc-anomaly_mask.nii.gz          uint8, 1 where the anomaly map >= threshold
    <base>_desc-anomalyscore_map.nii.gz      float32, the ensemble-mean anomaly map (units: see the sidecar)
    <base>_desc-memberspread_map.nii.gz      float32, standard deviation of the members' maps
    <base>_desc-pseudohealthy_<suffix>.nii.gz float32, the restoration in the scan's intensity units
    <base>_desc-anomaly_mask.json            sidecar: source, model, sampler, steps, seed, threshold and units

Each file is written to a temporary name in the output folder and renamed into place; if any file of a call fails,
the files that call already wrote are removed again, so a folder never holds half a result. The scan itself is never
overwritten.

This module decides which files an analysis becomes (their names, contents and sidecar) and reads them back
(:func:`read_outputs`, through :mod:`engine.readers`). It sits above :mod:`engine.writers`, which does the writing
itself (atomic files, arrays on the scan's grid) and imports nothing from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import OutputError
from engine.results import AnomalyResult, flagged
from engine.volumes import SCAN_SUFFIXES, Volume
from engine.writers import atomic_write_json, save_like

OUTPUT_KINDS = ("mask", "map", "spread", "restored", "sidecar")
_CONTRAST = re.compile(r"^(t1w?|t1ce|t1c|t1gd|t2w?|flair|pd|pdw|dwi|swi|t2star|mprage)$", re.IGNORECASE)
_OTHER_CONTRASTS = {
    "t2": "T2", "t2w": "T2", "flair": "FLAIR", "pd": "PD", "pdw": "PD", "dwi": "diffusion", "swi": "SWI",
    "t2star": "T2*", "t1ce": "contrast-enhanced T1", "t1c": "contrast-enhanced T1", "t1gd": "contrast-enhanced T1",
}


def file_stem(path: str | Path) -> str:
    """A scan file's name without its extension (``.nii.gz`` counts as one); a folder's name as it is."""
    name = Path(path).name
    for ext in SCAN_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def scan_stem(volume: Volume) -> str:
    """The scan's file name without its extension (a DICOM folder's name)."""
    return "scan" if volume.path is None else file_stem(volume.path)


def _split_suffix(stem: str, default_suffix: str) -> tuple[str, str]:
    base, _, last = stem.rpartition("_")
    if base and _CONTRAST.match(last):
        return base, last
    return stem, default_suffix


def output_paths(volume: Volume, out_dir: str | Path | None = None, stem: str | None = None, *,
                 suffix: str = "T1w") -> dict[str, Path]:
    """The paths :func:`write_outputs` uses, keyed by ``mask``, ``map``, ``spread``, ``restored``, ``sidecar``.

    Args:
        volume: the analysed scan.
        out_dir: output folder; None writes beside the scan.
        stem: base name to use instead of the scan's.
        suffix: contrast suffix for the restoration when the scan's name has none.
    """
    if out_dir is None:
        if volume.path is None:
            raise OutputError("the scan has no file location: choose an output folder")
        folder = Path(volume.path).parent
    else:
        folder = Path(out_dir)
    base, contrast = _split_suffix(stem or scan_stem(volume), suffix)
    return {
        "mask": folder / f"{base}_desc-anomaly_mask.nii.gz",
        "map": folder / f"{base}_desc-anomalyscore_map.nii.gz",
        "spread": folder / f"{base}_desc-memberspread_map.nii.gz",
        "restored": folder / f"{base}_desc-pseudohealthy_{contrast}.nii.gz",
        "sidecar": folder / f"{base}_desc-anomaly_mask.json",
    }


def anomaly_mask(result: AnomalyResult, threshold: float) -> np.ndarray:
    """uint8 mask of the voxels whose anomaly score is at or above ``threshold``."""
    return flagged(result.anomaly_map, threshold).astype(np.uint8)


def sidecar(volume: Volume, result: AnomalyResult, threshold: float, *, units: str, files: dict[str, Path],
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON sidecar describing how the outputs were made."""
    from engine import __version__  # noqa: PLC0415

    return {
        "Description": "Anomaly detection with an image-conditioned diffusion ensemble (condiff)",
        "Sources": [str(volume.path) if volume.path else None],
        "GeneratedBy": [{"Name": "condiff", "Version": __version__}],
        "Model": result.model_id,
        "Sampler": result.sampler,
        "SamplerSteps": result.steps,
        "Seed": result.seed,
        "Threshold": float(threshold),
        "ThresholdUnits": units,
        "ThresholdCalibrated": bool(result.threshold is not None and not result.uncalibrated_for
                                    and np.float32(threshold) == np.float32(result.threshold)),
        "UncalibratedFor": list(result.uncalibrated_for),
        "SliceAxis": result.slice_axis,
        "AnalysedSlices": [int(i) for i in np.flatnonzero(result.analysed)],
        "SliceScores": [round(float(result.slice_scores[i]), 6) for i in np.flatnonzero(result.analysed)],
        "FlaggedVoxels": int(flagged(result.anomaly_map, threshold).sum()),
        "Warnings": list(result.warnings),
        "Files": {kind: path.name for kind, path in files.items() if kind != "sidecar"},
        "DateCreated": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def write_outputs(
    volume: Volume,
    result: AnomalyResult,
    out_dir: str | Path | None,
    *,
    threshold: float,
    stem: str | None = None,
    include: Iterable[str] = OUTPUT_KINDS,
    units: str = "1 - SSIM (ensemble mean)",
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the chosen outputs of ``result`` for ``volume`` (see the module docstring for names and contents).

    Returns:
        The written paths keyed by kind.

    Raises:
        OutputError: an output would overwrite the scan, or the folder cannot be written (nothing is left behind).
    """
    include = tuple(include)
    unknown = set(include) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown output kinds {sorted(unknown)}; choose from {OUTPUT_KINDS}")
    if result.anomaly_map.shape != volume.shape:
        raise OutputError(f"{volume.name}: the result does not belong to this scan (shape "
                          f"{result.anomaly_map.shape} vs {volume.shape})")
    paths = {k: v for k, v in output_paths(volume, out_dir, stem).items() if k in include}
    if volume.path is not None:
        source = Path(volume.path).resolve()
        for path in paths.values():
            if path.resolve() == source:
                raise OutputError(f"{path}: refusing to overwrite the input scan")
    written: list[Path] = []
    existed = {p for p in paths.values() if p.exists()}
    try:
        if "mask" in paths:
            written.append(save_like(anomaly_mask(result, threshold), volume, paths["mask"], is_mask=True))
        if "map" in paths:
            written.append(save_like(result.anomaly_map, volume, paths["map"], dtype=np.float32))
        if "spread" in paths:
            written.append(save_like(result.member_spread, volume, paths["spread"], dtype=np.float32))
        if "restored" in paths:
            written.append(save_like(result.restored, volume, paths["restored"], dtype=np.float32))
        if "sidecar" in paths:
            written.append(atomic_write_json(paths["sidecar"], sidecar(volume, result, threshold, units=units,
                                                                        files=paths, extra=extra)))
    except BaseException:
        for path in written:
            if path not in existed:
                path.unlink(missing_ok=True)
        raise
    return paths


def modality_warning(volume: Volume, expected_modality: str) -> str | None:
    """A one-line warning when the scan's file name or header says it is not ``expected_modality``, else None."""
    expected = expected_modality.lower()
    tokens = re.split(r"[_\-.\s]+", scan_stem(volume).lower())
    descrip = ""
    try:
        descrip = volume.header["descrip"].item().decode("latin-1", "ignore").lower()
    except (KeyError, AttributeError, ValueError):
        descrip = ""
    tokens += re.split(r"[_\-.\s]+", descrip)
    for token in tokens:
        contrast = _OTHER_CONTRASTS.get(token)
        if contrast is not None and token.rstrip("w") != expected.rstrip("w"):
            return (f"{volume.name}: this looks like a {contrast} scan ('{token}' in its name or header) but the model "
                    f"was trained on {expected_modality.upper()}; results are not meaningful")
    return None


def read_outputs(volume: Volume, sidecar_path: str | Path) -> AnomalyResult:
    """An analysis of ``volume`` read back from the files :func:`write_outputs` wrote (a cohort's results open in
    the viewer without running the model again).

    The maps and the restoration must lie on the scan's grid. Slices between analysed ones that hold a map count as
    covered; slice scores come from the sidecar (NaN where it has none).

    Raises:
        VolumeError: a file is missing, unreadable or not on the scan's grid.
        OutputError: the sidecar is not one condiff wrote.
    """
    import json  # noqa: PLC0415

    from engine.errors import VolumeError  # noqa: PLC0415
    from engine.readers import load_volume  # noqa: PLC0415

    sidecar_path = Path(sidecar_path)
    try:
        side = json.loads(sidecar_path.read_text())
        files, axis, analysed_list = side["Files"], int(side["SliceAxis"]), side["AnalysedSlices"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{sidecar_path}: not a condiff sidecar ({type(exc).__name__}: {exc})") from exc

    def on_grid(kind: str) -> np.ndarray:
        path = sidecar_path.parent / files[kind]
        other = load_volume(path)
        if other.shape != volume.shape or not np.allclose(other.affine, volume.affine, atol=1e-3):
            raise VolumeError(f"{path}: does not lie on the grid of {volume.name}")
        return np.asarray(other.data, dtype=np.float32)

    if not {"map", "spread", "restored"} <= set(files):
        raise OutputError(f"{sidecar_path}: names no map, spread and restoration")
    anomaly_map = on_grid("map")
    n = volume.shape[axis]
    analysed = np.zeros(n, dtype=bool)
    analysed[[int(i) for i in analysed_list]] = True
    scores = np.full(n, np.nan, dtype=np.float32)
    for index, score in zip(analysed_list, side.get("SliceScores") or [], strict=False):
        scores[int(index)] = score
    has_map = (anomaly_map != 0).any(axis=tuple(a for a in range(3) if a != axis))
    return AnomalyResult(
        anomaly_map=anomaly_map, member_spread=on_grid("spread"), restored=on_grid("restored"),
        slice_scores=scores, analysed=analysed, covered=analysed | has_map, slice_axis=axis,
        seed=int(side.get("Seed", 0)), sampler=str(side.get("Sampler", "")), steps=int(side.get("SamplerSteps", 0)),
        model_id=str(side.get("Model", "")), threshold=float(side["Threshold"]) if "Threshold" in side else None,
        warnings=tuple(side.get("Warnings", ())), uncalibrated_for=tuple(side.get("UncalibratedFor", ())))
