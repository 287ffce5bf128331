"""The centre of the window: plane bar, warnings banner, the image with its slice slider over the slice-score strip,
and the analysis progress strip. The image gets all the height the strip does not need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from app.controller import AnalysisController
from app.state import ViewerState
from app.views.navigation import PlaneBar, SliceSlider
from app.views.progress_panel import ProgressPanel
from app.views.score_plot import ScoreStrip
from app.views.slice_view import SliceView
from app.views.study_pane import StudyPane

STUDY_PANES = 3  # with the main view, a 2 x 2 grid: T1, T1ce, T2 and FLAIR at once
SCORE_STRIP_HEIGHT = 120  # pixels of the slice-score strip under the image, until the user drags the splitter


class ImageArea(QWidget):
    """The image and what sits right around it; ``key_handler(event) -> bool`` gets the view's keys."""

    def __init__(self, state: ViewerState, controller: AnalysisController, key_handler: Callable[[Any], bool],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.score_strip_wanted = True
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        self.plane_bar = PlaneBar(state)
        outer.addWidget(self.plane_bar)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#5a4500; color:#ffe9a0; padding:4px; font-weight:bold;")
        self.banner.hide()
        outer.addWidget(self.banner)
        image_row = QWidget()
        row = QHBoxLayout(image_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.view_panel = QWidget(image_row)  # what a screenshot shows: the view, the side view, the colour bar
        panel_layout = QGridLayout(self.view_panel)
        panel_layout.setContentsMargins(0, 0, 0, 0)
        panel_layout.setSpacing(2)
        self.view = SliceView(state, self.view_panel)
        self.view.key_handler = key_handler
        panel_layout.addWidget(self.view.side_widget, 0, 0)
        panel_layout.addWidget(self.view, 0, 1)
        # The study grid: the main view top left, the other sequences in linked panes (up to a 2 x 2 grid).
        self.panes = [StudyPane(state, self.view, self.view_panel) for _ in range(STUDY_PANES)]
        for pane, (r, c) in zip(self.panes, ((0, 2), (1, 1), (1, 2)), strict=True):
            panel_layout.addWidget(pane, r, c)
            pane.hide()
        self._panel_layout = panel_layout
        row.addWidget(self.view_panel, 1)
        self.slice_slider = SliceSlider(state)
        row.addWidget(self.slice_slider)
        self.score_plot = ScoreStrip(state, controller)
        self.score_plot.hide()  # until there is a result
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("image_and_scores")
        self.splitter.addWidget(image_row)
        self.splitter.addWidget(self.score_plot)
        self.splitter.setCollapsible(0, False)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setSizes([10_000, SCORE_STRIP_HEIGHT])
        outer.addWidget(self.splitter, 1)
        self.progress = ProgressPanel(controller)
        outer.addWidget(self.progress)
        state.result_changed.connect(self._update_score_strip)
        for signal in (state.study_changed, state.study_grid_changed, state.sequence_changed, state.volume_changed):
            signal.connect(self.arrange_panes)
        controller.warnings_changed.connect(self.show_warnings)

    def arrange_panes(self, *_: Any) -> None:
        """Show one pane per other sequence in the grid layout (none otherwise); equal shares of the panel."""
        names = self.state.pane_sequences(len(self.panes)) if self.state.study_grid else []
        for i, pane in enumerate(self.panes):
            pane.setVisible(i < len(names))
            pane.show_sequence(names[i] if i < len(names) else None)
        layout = self._panel_layout
        two_rows = len(names) >= 2
        layout.setRowStretch(0, 1)
        layout.setRowStretch(1, 1 if two_rows else 0)
        layout.setColumnStretch(1, 1)
        layout.setColumnStretch(2, 1 if names else 0)

    def show_warnings(self, warnings: list[str]) -> None:
        self.banner.setText("\n".join(warnings))
        self.banner.setVisible(bool(warnings))

    def set_score_strip_wanted(self, on: bool) -> None:
        """The user's choice (View menu); the strip shows only when there is also a result."""
        self.score_strip_wanted = bool(on)
        self._update_score_strip()

    def _update_score_strip(self, *_: Any) -> None:
        self.score_plot.setVisible(self.state.result is not None and self.score_strip_wanted)
