"""The running analysis, readable at a glance: what is analysed (slices of this scan), how far, time left, Cancel.

A strip under the image, shown only while an analysis runs; bound to the analysis controller.
"""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app import text
from app.controller import AnalysisController
from app.scheduler import AnalysisProgress

ETA_AFTER = 0.05  # share of the work done before the time left is shown


def format_seconds(seconds: float) -> str:
    """``42 s`` or ``3:07``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def describe(progress: AnalysisProgress) -> str:
    """One sentence in the scan's units, e.g. "Analysing the whole scan: 63 of its 140 slices with brain have a map,
    about 31 s left"."""
    if progress.volume:
        what = (text.PROGRESS_VOLUME.format(done=progress.slices_done, total=progress.slices) if progress.slices
                else text.PROGRESS_PLANNING)
    elif progress.slices == 1:
        what = text.PROGRESS_ONE_SLICE.format(index=progress.first_slice, last=progress.n_slices - 1)
    else:
        what = text.PROGRESS_SLICES.format(done=progress.slices_done, total=progress.slices, n=progress.n_slices)
    if progress.eta_s is None or progress.fraction < ETA_AFTER:
        return what + text.PROGRESS_STARTING  # the first steps include start-up: an estimate from them misleads
    return what + text.PROGRESS_LEFT.format(eta=format_seconds(progress.eta_s))


class ProgressPanel(QFrame):
    """Label, bar (percent) and Cancel; hidden when no analysis runs."""

    def __init__(self, controller: AnalysisController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("analysis_progress")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#analysis_progress { background: #1d3a57; } QLabel { color: #ffffff; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        self.label = QLabel()
        font = self.label.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.label.setFont(font)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setFormat(text.PROGRESS_PERCENT)
        self.bar.setMinimumWidth(160)
        self.cancel_button = QPushButton(text.BTN_CANCEL_ANALYSIS)
        self.cancel_button.setToolTip(text.TIP_CANCEL_ANALYSIS)
        self.cancel_button.clicked.connect(controller.scheduler.cancel_analysis)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel_button)
        self.hide()
        self.cancel_button.setEnabled(False)
        controller.scheduler.analysis_progress.connect(self.show_progress)
        controller.scheduler.analysis_stopped.connect(self._stopped)

    def show_progress(self, progress: AnalysisProgress) -> None:
        self.label.setText(describe(progress))
        self.bar.setValue(int(round(progress.fraction * 1000)))
        self.cancel_button.setEnabled(True)
        self.show()

    def _stopped(self) -> None:
        self.cancel_button.setEnabled(False)
        self.hide()
