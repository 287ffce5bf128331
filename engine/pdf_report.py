"""A one-page PDF report of an analysis, for a referring colleague.

The page holds: the disclaimer; the scan's and the model's identity and the settings; the findings table (see
:mod:`engine.findings`); the axial slices through the three findings with the highest scores, with the anomaly map
above the threshold, the findings' outlines and a colour bar; and the slice-score plot with those slices marked.
Slices are drawn in the radiological convention (the patient's right on the left of the image, anterior up), derived
from the scan's affine; the data are not resampled. Drawn with matplotlib's Agg/PDF backends (no GUI), written
atomically; :func:`write_report` can also write a PNG twin of the page.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from engine.errors import OutputError
from engine.findings import Findings
from engine.outputs import output_paths
from engine.results import AnomalyResult, ModelInfo
from engine.volumes import Volume
from engine.writers import atomic_write_bytes

DISCLAIMER = "Research software, not a medical device. Not for diagnosis or treatment decisions."
PAGE_INCHES = (8.27, 11.69)  # A4 portrait
TABLE_ROWS = 10
PANELS = 3
REPORT_WARNINGS = 3
"""Warnings written on the report page; the rest are counted (the sidecar lists them all)."""


def report_path(volume: Volume, out_dir: str | Path | None = None, stem: str | None = None) -> Path:
    """Where :func:`write_report` writes: ``<stem>_desc-anomaly_report.pdf`` beside the mask."""
    mask = output_paths(volume, out_dir, stem)["mask"]
    return mask.with_name(mask.name[: -len("_mask.nii.gz")] + "_report.pdf")


def report_slices(findings: Findings, count: int = PANELS) -> list[tuple[int, int]]:
    """Up to ``count`` (slice index, finding id) pairs: the slices through the peaks of the findings with the highest
    maximum score, one per slice."""
    chosen: list[tuple[int, int]] = []
    for finding in sorted(findings.items, key=lambda f: (-f.max_score, f.id)):
        index = finding.peak_voxel[findings.slice_axis]
        if all(index != s for s, _ in chosen):
            chosen.append((index, finding.id))
        if len(chosen) == count:
            break
    return chosen


def write_report(volume: Volume, result: AnomalyResult, findings: Findings, path: str | Path, *,
                 model: ModelInfo | None = None, display_max: float | None = None, brain_mask: str | None = None,
                 png_path: str | Path | None = None, underlay: tuple[str, np.ndarray] | None = None,
                 reference: tuple[str, np.ndarray] | None = None,
                 notes: Sequence[tuple[str, str]] = ()) -> Path:
    """Draw the one-page report and write it as a PDF (and a PNG of the same page when ``png_path`` is given).

    Args:
        volume: the scan.
        result: its analysis (on the scan's grid).
        findings: the findings of ``result`` (their threshold is the one reported).
        path: the PDF to write.
        model: the model's description (name, members, calibration); None prints only ``result.model_id``.
        display_max: top of the colour scale (default: the calibration's, else the map's 99.9th percentile).
        brain_mask: how the brain was given (a file name), or None (the scan's foreground).
        png_path: also write the page as a 150 dpi PNG here.
        underlay: ``(name, image)``: draw the slices on another image of the scan's grid (e.g. the subject's FLAIR
            the viewer shows) instead of the scan; the page names it.
        reference: ``(name, mask)``: a reference segmentation on the scan's grid, outlined in the slices and named.
        notes: more ``(label, text)`` lines for the page's settings block (e.g. scores against the reference).

    Returns:
        The PDF's path.

    Raises:
        OutputError: a file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - drawing only when asked

    for what, given in (("underlay", underlay), ("reference", reference)):
        if given is not None and tuple(np.shape(given[1])) != tuple(volume.shape):
            raise OutputError(f"{path}: the {what} {given[0]} has shape {np.shape(given[1])}, not the scan's "
                              f"{tuple(volume.shape)}")
    figure = _draw(volume, result, findings, model=model, display_max=display_max, brain_mask=brain_mask,
                   underlay=underlay, reference=reference, notes=notes)
    FigureCanvasAgg(figure)
    pdf = io.BytesIO()
    figure.savefig(pdf, format="pdf", metadata={"Title": f"condiff report: {volume.name}", "Creator": "condiff"})
    path = atomic_write_bytes(path, pdf.getvalue())
    if png_path is not None:
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=150)
        atomic_write_bytes(png_path, png.getvalue())
    return path


# ------------------------------------------------------------------------------------------------------ drawing
def _draw(volume: Volume, result: AnomalyResult, findings: Findings, *, model: ModelInfo | None,
          display_max: float | None, brain_mask: str | None, underlay: tuple[str, np.ndarray] | None = None,
          reference: tuple[str, np.ndarray] | None = None, notes: Sequence[tuple[str, str]] = ()) -> Any:
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=PAGE_INCHES)
    figure.text(0.07, 0.968, "condiff anomaly report", fontsize=15, weight="bold", va="center")
    figure.text(0.07, 0.94, DISCLAIMER, fontsize=8.5, color="#a00000", weight="bold", va="center",
                bbox={"boxstyle": "round,pad=0.35", "facecolor": "#fff0f0", "edgecolor": "#a00000", "linewidth": 0.8})
    extra = list(notes)
    if underlay is not None:
        extra.insert(0, ("Shown on", f"{underlay[0]} (the slices below; the map comes from the scan)"))
    if reference is not None and not any(label == "Reference" for label, _ in extra):
        extra.append(("Reference", f"{reference[0]} (outlined in green)"))
    _identity(figure.add_axes((0.07, 0.79, 0.86, 0.125)), volume, result, findings, model, brain_mask, extra)
    _table(figure.add_axes((0.07, 0.545, 0.86, 0.185)), findings)
    top = display_max
    if top is None and model is not None and model.calibration is not None:
        top = model.calibration.display_max
    if top is None or top <= findings.threshold:
        values = result.anomaly_map[result.anomaly_map > 0]
        top = max(float(np.percentile(values, 99.9)) if values.size else 0.0, findings.threshold * 1.5, 1e-6)
    chosen = report_slices(findings)
    image = None
    for column in range(PANELS):
        axes = figure.add_axes((0.07 + column * 0.27, 0.265, 0.26, 0.245))
        if column < len(chosen):
            image = _slice_panel(axes, volume, result, findings, *chosen[column], top=top,
                                 underlay=None if underlay is None else underlay[1],
                                 reference=None if reference is None else reference[1])
        else:
            axes.set_axis_off()
            if column == len(chosen):
                axes.text(0.5, 0.5, "no further finding" if chosen else "no finding above the threshold",
                          ha="center", va="center", fontsize=8, color="#555555", transform=axes.transAxes)
    if image is not None:
        bar = figure.colorbar(image, cax=figure.add_axes((0.895, 0.285, 0.013, 0.2)))
        bar.set_label("anomaly (1 - SSIM)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        bar.ax.axhline(findings.threshold, color="#00c060", linewidth=1.5)
        bar.ax.text(1.2, findings.threshold, "thr", color="#00a050", fontsize=6, va="center",
                    transform=bar.ax.get_yaxis_transform())
    _score_plot(figure.add_axes((0.09, 0.075, 0.84, 0.135)), result, [s for s, _ in chosen])
    figure.text(0.07, 0.02, f"{DISCLAIMER}  Made {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by condiff "
                f"{_version()}.", fontsize=6.5, color="#555555")
    return figure


def _version() -> str:
    from engine import __version__  # noqa: PLC0415

    return __version__


def _identity(axes: Any, volume: Volume, result: AnomalyResult, findings: Findings, model: ModelInfo | None,
              brain_mask: str | None, extra: Sequence[tuple[str, str]] = ()) -> None:
    axes.set_axis_off()
    zooms = " x ".join(f"{z:.3g}" for z in volume.zooms)
    shape = " x ".join(str(n) for n in volume.shape)
    scan_lines = [
        ("Scan", Path(str(volume.path)).name if volume.path is not None else "(in memory)"),
        ("Source", f"{volume.source_format}, {shape} voxels of {zooms} mm, {''.join(volume.axcodes)}"),
        ("Brain", brain_mask or "the scan's foreground (taken as skull-stripped)"),
        ("Slices", f"{int(result.analysed.sum())} analysed, {int(np.asarray(result.covered).sum())} with a map "
                   f"(the rest of the brain filled between analysed slices)"),
    ]
    if model is not None:
        calibration = model.calibration
        model_line = (f"{model.model_id} ({model.preset} preset, {model.members} members, {model.modality.upper()}, "
                      f"run on {model.runs_on})")
        calibrated = (f"calibrated {calibration.threshold:.4g} ({calibration.healthy_fpr:.1%} of healthy brain)"
                      if calibration is not None else "uncalibrated model")
    else:
        model_line, calibrated = result.model_id, "calibration unknown"
    settings_lines = [
        ("Model", model_line),
        ("Sampler", f"{result.sampler}, {result.steps} steps, seed {result.seed}"),
        ("Threshold", f"{findings.threshold:.4g} (1 - SSIM, ensemble mean); {calibrated}"),
        ("Findings", f"26-connected regions of at least {findings.min_volume_ml:g} mL; {findings.left_out} smaller "
                     "region(s) not listed"),
    ]
    scan_lines += list(extra)  # what the viewer adds: the image shown, a reference and the scores against it
    for column, lines in enumerate((scan_lines, settings_lines)):
        step = 1.0 / max(4, len(lines))
        for row, (key, value) in enumerate(lines):
            y = 1.0 - row * step
            x = 0.0 if column == 0 else 0.5
            axes.text(x, y, key, fontsize=7.5, weight="bold", va="top", transform=axes.transAxes)
            axes.text(x + 0.095, y, textwrap.fill(value, 60), fontsize=7, va="top", transform=axes.transAxes)
    # The scan is named above, so a warning about it is shown without its path.
    prefix = f"{volume.path}: " if volume.path is not None else "\0"
    shown = [textwrap.shorten(f"Warning: {warning.removeprefix(prefix)}", 150)
             for warning in result.warnings[:REPORT_WARNINGS]]
    if len(result.warnings) > REPORT_WARNINGS:
        shown.append(f"... and {len(result.warnings) - REPORT_WARNINGS} more warning(s), listed in the sidecar JSON")
    for warning_row, line in enumerate(shown):
        axes.text(0.0, -0.05 - 0.08 * warning_row, line, fontsize=6.5, color="#a05000", va="top",
                  transform=axes.transAxes)


def _table(axes: Any, findings: Findings) -> None:
    axes.set_axis_off()
    axes.set_title(f"Findings ({len(findings.items)}), sorted by {findings.rank_rule}", fontsize=8.5, loc="left",
                   pad=3)
    if not findings.items:
        axes.text(0.0, 0.8, f"No region of at least {findings.min_volume_ml:g} mL above the threshold.", fontsize=8,
                  transform=axes.transAxes)
        return
    header = ["#", "Volume\n(mL)", "Centre R, A, S\n(mm)", "Centre voxel\n(i, j, k)", "Axial\nslices", "Max\nscore",
              "Mean\nscore", "Members\nagree*"]
    rows = []
    for f in findings.items[:TABLE_ROWS]:
        x, y, z = f.centre_ras_mm
        i, j, k = f.centre_voxel
        first, last = f.slice_range
        rows.append([str(f.id), f"{f.volume_ml:.2f}", f"{x:.0f}, {y:.0f}, {z:.0f}", f"{i:.0f}, {j:.0f}, {k:.0f}",
                     f"{first}-{last}", f"{f.max_score:.3f}", f"{f.mean_score:.3f}", f"{f.member_agreement:.0%}"])
    height = min(1.0, (len(rows) + 1.7) * 0.08)  # of the axes: header (two lines) and one line per finding
    table = axes.table(cellText=rows, colLabels=header, cellLoc="center", bbox=(0.0, 1.0 - height, 1.0, height),
                       colWidths=[0.05, 0.1, 0.19, 0.17, 0.1, 0.1, 0.1, 0.12])
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (row, _), cell in table.get_celld().items():
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_facecolor("#e8e8e8")
    more = len(findings.items) - TABLE_ROWS
    note = "* estimated share of members whose map exceeds the threshold, from the members' spread"
    if more > 0:
        note = f"... and {more} more finding(s) in the findings TSV.   " + note
    axes.text(0.0, 0.97 - height, note, fontsize=6.5, color="#555555", va="top", transform=axes.transAxes)


def _display_slice(volume: Volume, array: np.ndarray, axis: int, index: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """One native slice turned for display (radiological: patient's right on the left, anterior up) and its extent
    in mm (left, right, bottom, top)."""
    plane = np.take(array, index, axis=axis)
    in_plane = [a for a in range(3) if a != axis]
    ornt = nib.io_orientation(np.asarray(volume.affine, dtype=np.float64))
    ras_axis = {a: int(ornt[a, 0]) for a in in_plane}
    sign = {a: float(ornt[a, 1]) for a in in_plane}
    # rows along the in-plane axis nearest anterior-posterior, columns along the one nearest right-left
    row_axis = min(in_plane, key=lambda a: abs(ras_axis[a] - 1))
    column_axis = next(a for a in in_plane if a != row_axis)
    image = plane if in_plane.index(row_axis) == 0 else plane.T
    if sign[row_axis] > 0:  # increases towards anterior: flip so anterior is at the top
        image = image[::-1, :]
    if sign[column_axis] > 0:  # increases towards the patient's right: flip so right is on the left
        image = image[:, ::-1]
    zooms = volume.zooms
    return image, (0.0, image.shape[1] * zooms[column_axis], 0.0, image.shape[0] * zooms[row_axis])


def _slice_panel(axes: Any, volume: Volume, result: AnomalyResult, findings: Findings, index: int, finding_id: int,
                 *, top: float, underlay: np.ndarray | None = None, reference: np.ndarray | None = None) -> Any:
    from matplotlib import colormaps  # noqa: PLC0415

    axis = findings.slice_axis
    base = volume.data if underlay is None else underlay
    scan, extent = _display_slice(volume, np.asarray(base, dtype=np.float32), axis, index)
    heat, _ = _display_slice(volume, result.anomaly_map, axis, index)
    labels, _ = _display_slice(volume, findings.labels, axis, index)
    rows, columns = _crop(_display_slice(volume, np.asarray(volume.data).max(axis=axis, keepdims=True) > 0, axis,
                                         0)[0])  # the head's extent over all slices: the same frame in every panel
    width, height = extent[1] / scan.shape[1], extent[3] / scan.shape[0]  # mm per column and per row
    extent = (columns.start * width, columns.stop * width, (scan.shape[0] - rows.stop) * height,
              (scan.shape[0] - rows.start) * height)
    scan, heat, labels = scan[rows, columns], heat[rows, columns], labels[rows, columns]
    outline = None if reference is None else _display_slice(volume, np.asarray(reference) > 0, axis,
                                                             index)[0][rows, columns]
    positive = scan[scan > 0]
    low, high = (np.percentile(positive, [1, 99.5]) if positive.size else (0.0, 1.0))
    axes.set_facecolor("black")
    axes.imshow(scan, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="nearest")
    shown = np.ma.masked_less(heat, findings.threshold)
    image = axes.imshow(shown, cmap=colormaps["hot"], vmin=0.0, vmax=top, alpha=0.75, extent=extent,
                        interpolation="nearest")
    if (labels > 0).any():
        axes.contour(labels > 0, levels=[0.5], colors="#00e5ff", linewidths=0.6, extent=extent, origin="upper")
    if outline is not None and outline.any():
        axes.contour(outline, levels=[0.5], colors="#60ff60", linewidths=0.6, extent=extent, origin="upper")
    finding = next(f for f in findings.items if f.id == finding_id)
    axes.set_title(f"Finding {finding_id}: axial slice {index}\nmax {finding.max_score:.3f}, "
                   f"{finding.volume_ml:.2f} mL", fontsize=7.5)
    for text, x, y in (("R", 0.02, 0.5), ("L", 0.98, 0.5), ("A", 0.5, 0.97), ("P", 0.5, 0.03)):
        axes.text(x, y, text, color="#ffd400", fontsize=7, weight="bold", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])
    return image


def _crop(inside: np.ndarray, margin: int = 6) -> tuple[slice, slice]:
    """Row and column ranges around the True pixels (the whole image when there are none)."""
    if not inside.any():
        return slice(0, inside.shape[0]), slice(0, inside.shape[1])
    ranges = []
    for axis in (1, 0):
        present = np.flatnonzero(inside.any(axis=axis))
        stop = min(inside.shape[1 - axis], int(present[-1]) + margin + 1)
        ranges.append(slice(max(0, int(present[0]) - margin), stop))
    return ranges[0], ranges[1]


def _score_plot(axes: Any, result: AnomalyResult, marked: list[int]) -> None:
    scores = np.asarray(result.slice_scores, dtype=np.float64)
    x = np.arange(scores.size)
    finite = np.isfinite(scores)
    axes.plot(x[finite], scores[finite], "-o", color="#e06000", markersize=2.0, linewidth=1.0)
    for index in marked:
        axes.axvline(index, color="#0080c0", linewidth=0.8, linestyle="--")
    axes.set_xlim(0, max(1, scores.size - 1))
    axes.set_xlabel("axial slice (native index)", fontsize=7)
    axes.set_ylabel("slice score", fontsize=7)
    axes.set_title("Slice anomaly score (analysed slices; dashed: the slices shown above)", fontsize=8, loc="left")
    axes.tick_params(labelsize=6)
    axes.grid(True, linewidth=0.3, alpha=0.5)
