"""The dock beside the image: analysis, overlay and contrast panels in one column that scrolls only vertically."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QScrollArea, QVBoxLayout, QWidget

from app import text
from app.controller import AnalysisController
from app.state import ViewerState
from app.views.analysis_panel import AnalysisPanel
from app.views.contrast_panel import ContrastPanel
from app.views.overlay_panel import OverlayPanel


class ControlsDock(QDockWidget):
    """Holds :attr:`analysis_panel`, :attr:`overlay_panel` and :attr:`contrast_panel`, at least as wide as they are."""

    def __init__(self, state: ViewerState, controller: AnalysisController, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_CONTROLS, parent)
        self.setObjectName("controls")  # the name the saved dock layout refers to
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(4, 4, 4, 4)
        self.analysis_panel = AnalysisPanel(controller)
        self.overlay_panel = OverlayPanel(state, controller)
        self.contrast_panel = ContrastPanel(state)
        for part in (self.analysis_panel, self.overlay_panel, self.contrast_panel):
            layout.addWidget(part)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setWidget(scroll)
        self.setMinimumWidth(panel.sizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        self._panel = panel

    def panel_height(self) -> int:
        """Height the panels need without scrolling, in pixels."""
        return self._panel.sizeHint().height()
