"""Progress of the running analysis, in slices of the scan, with the time left (bound to the controller)."""

from __future__ import annotations

from PySide6.QtWidgets import QProgressBar, QWidget

from app import text
from app.controller import AnalysisController, AnalysisProgress


def format_seconds(seconds: float) -> str:
    """``42 s`` or ``3:07``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class ProgressPanel(QProgressBar):
    """Shown while an analysis runs."""

    def __init__(self, controller: AnalysisController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMaximumWidth(320)
        self.setTextVisible(True)
        self.hide()
        controller.analysis_progress.connect(self.show_progress)
        controller.analysis_stopped.connect(self.hide)

    def show_progress(self, progress: AnalysisProgress) -> None:
        self.setRange(0, max(1, progress.slices))
        self.setValue(progress.slices_done)
        if progress.eta_s is None:
            self.setFormat(text.PROGRESS_FORMAT.format(done=progress.slices_done, total=progress.slices))
        else:
            self.setFormat(text.PROGRESS_ETA.format(done=progress.slices_done, total=progress.slices,
                                                    eta=format_seconds(progress.eta_s)))
        self.show()
