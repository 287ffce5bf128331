"""A study: the open scan's other sequences and a reference segmentation, shown on its grid (no Qt).

:class:`StudySession` reads the files through the controller's reporter, fits them to the analysed scan's grid with
:mod:`app.study` (resampled with a notice within the same space, refused in one line across spaces), puts them in
:class:`ViewerState`, and scores the shown mask against the reference for the status line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import slicing, study, text
from app.exporter import Exports
from app.model_session import ModelSession
from app.reporting import Reporter
from app.state import ViewerState
from engine import flagged


class StudySession:
    """The sequences and reference of the open scan's study.

    Args:
        backend: the engine's public API (``load_volume``).
        state: where the study is shown.
        reporter: where errors and status lines go (and how files are read).
        models: the model, whose modality names the analysed sequence.
        exports: the whole-volume reference scores (computed once per result, reference and threshold).
    """

    def __init__(self, backend: Any, state: ViewerState, reporter: Reporter, models: ModelSession,
                 exports: Exports) -> None:
        self.backend, self.state, self.reporter, self.models, self.exports = backend, state, reporter, models, exports

    def analysed_sequence(self) -> str:
        """The sequence the model analyses (``"T1"`` for a T1 model; T1 before the model is known)."""
        modality = str(getattr(getattr(self.models.model, "info", None), "modality", "t1"))
        return study.sequence_named(modality) or "T1"

    def open_study(self, others: Sequence[str | Path], reference: str | Path | None = None) -> bool:
        """Show other sequences of the open scan's subject (and a reference segmentation) on its grid: a scan on
        another grid of the same space is resampled for display with a notice; one from another space is refused
        in one line. True when every file was taken."""
        volume = self.state.volume
        if volume is None:
            self.reporter.report_error(text.ERR_STUDY, text.ERR_NO_SCAN)
            return False
        images, notices, ok = list(self.state.sequences.values()), [], True
        for path in others:
            path = Path(path)
            image = self._fitted(path, study.sequence_of(path) or study.file_stem(path), label=False)
            if image is None:
                ok = False
                continue
            images = [i for i in images if i.name != image.name] + [image]
            if image.resampled:
                notices.append(text.STATUS_RESAMPLED.format(name=path.name))
        self.state.set_study(sorted(images, key=study.display_order), self.analysed_sequence())
        if reference is not None:
            ok = self.open_reference(reference) and ok
        if notices:
            self.reporter.status.emit(" ".join(notices))
        return ok

    def open_reference(self, path: str | Path) -> bool:
        """Outline a reference segmentation (e.g. ``*_seg.nii.gz``) and score the mask against it in the status."""
        if self.state.volume is None:
            self.reporter.report_error(text.ERR_STUDY, text.ERR_NO_SCAN)
            return False
        image = self._fitted(Path(path), "reference", label=True)
        if image is None:
            return False
        self.state.set_reference(image)
        return True

    def _fitted(self, path: Path, name: str, *, label: bool) -> Any:
        """``path`` read and fitted to the open scan's grid, or None after reporting why not."""
        other = self.reporter.read(text.ERR_STUDY, path, self.backend.load_volume)
        if other is None:
            return None
        try:
            return study.fit_to(self.state.volume, other, name, label=label)
        except study.StudyError as error:
            self.reporter.report_error(text.ERR_STUDY, str(error))
            return None

    def reference_status(self) -> str | None:
        """The status line scoring the mask at the current threshold against the reference (slice and volume), or
        None without a reference or a result."""
        reference, result = self.state.reference, self.state.result
        if reference is None or result is None:
            return None
        layout = self.state.layout()
        index = self.state.slice_index
        whole = self.exports.reference_volume_scores()
        map_cut = slicing.take_slice(result.anomaly_map, layout, index)
        cut = study.reference_scores(flagged(map_cut, self.state.threshold) & (map_cut > 0),
                                     slicing.take_slice(reference.data, layout, index))
        share = text.share
        return text.STATUS_REFERENCE.format(
            threshold=self.state.threshold, slice_dice=share(cut.dice), slice_sens=share(cut.sensitivity),
            slice_prec=share(cut.precision), dice=share(whole.dice), sens=share(whole.sensitivity),
            prec=share(whole.precision))
