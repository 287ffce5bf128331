"""Writing an analysis to disk through the engine's writer, and checking the written mask (no Qt).

:func:`export` plans the BIDS-like names, refuses to write over the scan, asks (through a callback) before replacing
existing files, writes, and reloads the mask to confirm it sits on the scan's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from app import text


class ExportProblem(Exception):
    """Nothing (or something wrong) was written; the message is the one line to show."""


def export(backend: Any, volume: Any, result: Any, out_dir: Path, *, threshold: float, brain_mask_path: Path | None,
           confirm_overwrite: Callable[[int, Path], bool], findings: Any = None) -> dict[str, Path] | None:
    """Write mask, map, restored volume, spread, sidecar and findings to ``out_dir`` and verify the mask's grid.

    Args:
        backend: the engine API (``output_paths``, ``write_outputs``, ``findings_paths``, ``write_findings``,
            ``EngineError``).
        confirm_overwrite: called with the number of existing outputs and the folder; False cancels.
        findings: the ``engine.Findings`` at ``threshold``, written beside the mask (None: not written).

    Returns:
        The written paths, or None when the user declined to replace existing files.

    Raises:
        ExportProblem: the export was refused or failed.
    """
    try:
        planned = dict(backend.output_paths(volume, out_dir))
        if findings is not None:
            planned.update({f"findings_{k}": p for k, p in backend.findings_paths(volume, out_dir).items()})
        if volume.path is not None and any(Path(p).resolve() == Path(volume.path).resolve()
                                           for p in planned.values()):
            raise ExportProblem(text.ERR_OVERWRITE_SCAN.format(path=volume.path))
        existing = [p for p in planned.values() if Path(p).exists()]
        if existing and not confirm_overwrite(len(existing), out_dir):
            return None
        written = backend.write_outputs(volume, result, out_dir, threshold=threshold, extra={
            "BrainMask": str(brain_mask_path) if brain_mask_path is not None else None})
        if findings is not None:
            extra = {"Model": result.model_id, "Sampler": result.sampler, "SamplerSteps": result.steps,
                     "Seed": result.seed}
            for kind, path in backend.write_findings(findings, volume, out_dir, extra=extra).items():
                written[f"findings_{kind}"] = path
    except backend.EngineError as error:
        raise ExportProblem(str(error)) from error
    except OSError as error:
        raise ExportProblem(text.ERR_WRITE.format(path=out_dir, message=error.strerror or error)) from error
    problem = verify_on_grid(written.get("mask"), volume)
    if problem is not None:
        raise ExportProblem(problem)
    return written


def verify_on_grid(mask_path: str | Path | None, volume: Any) -> str | None:
    """Reload an exported mask with nibabel and compare its grid with the scan's.

    Returns:
        None if shape and affine match (and the mask is uint8), else a one-line description of the problem.
    """
    if mask_path is None:
        return None
    mask_path = Path(mask_path)
    try:
        image = nib.load(str(mask_path))
        shape = tuple(image.shape)
        affine = np.asarray(image.affine)
        dtype = image.get_data_dtype()
    except Exception as error:  # any failure to read back is a failed export
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_UNREADABLE.format(error=error))
    expected = tuple(np.shape(volume.data))
    if shape != expected:
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_SHAPE.format(shape=shape, expected=expected))
    if not np.allclose(affine, volume.affine, atol=1e-3):
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_AFFINE)
    if dtype != np.uint8:
        return text.ERR_VERIFY.format(path=mask_path, problem=text.VERIFY_DTYPE.format(dtype=dtype))
    return None


def partial_note(result: Any) -> str:
    """An extra status sentence when only some slices were analysed (the rest export as zero), else ''."""
    analysed = np.asarray(result.analysed, dtype=bool)
    if analysed.all():
        return ""
    return "  " + text.PARTIAL_EXPORT.format(done=int(analysed.sum()), total=analysed.size)
