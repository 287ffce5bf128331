"""The worklist dock: the scans of a folder or a cohort, most worrying first; a click opens one.

It only draws what :class:`app.worklist.Worklist` holds and says which row the user chose.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import text
from app.views.findings_table import make_row_table
from app.worklist import Worklist, WorklistEntry


def cells(entry: WorklistEntry) -> list[str]:
    """The row of one entry, in the order of ``text.WORKLIST_COLUMNS``."""
    return [entry.id, entry.status,
            "" if entry.flagged_ml is None else f"{entry.flagged_ml:.2f}",
            "" if entry.findings is None else str(entry.findings)]


class WorklistDock(QDockWidget):
    """A one-line summary and the table of :class:`Worklist` entries."""

    chosen = Signal(int)

    def __init__(self, worklist: Worklist, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_WORKLIST, parent)
        self.setObjectName("worklist")  # the name the saved dock layout refers to
        self.worklist = worklist
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(4, 4, 4, 4)
        self.summary = QLabel(text.WORKLIST_EMPTY)
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.table = make_row_table(QTableWidget(), text.WORKLIST_COLUMNS)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the id takes what the numbers leave
        header.setMinimumSectionSize(40)
        self.table.setToolTip(text.TIP_WORKLIST)
        layout.addWidget(self.table, 1)
        self.setWidget(panel)
        self.table.cellClicked.connect(lambda row, _column: self.chosen.emit(row))
        self.table.cellActivated.connect(lambda row, _column: self.chosen.emit(row))  # Enter, for the keyboard
        worklist.changed.connect(self.refresh)
        worklist.current_changed.connect(self._select)

    def refresh(self) -> None:
        entries = self.worklist.entries
        self.table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            for column, value in enumerate(cells(entry)):
                item = QTableWidgetItem(value)
                if column >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if entry.reason:
                    item.setToolTip(entry.reason)
                self.table.setItem(row, column, item)
        done = sum(e.flagged_ml is not None for e in entries)
        folder = self.worklist.folder.name if self.worklist.folder is not None else ""
        self.summary.setText(text.WORKLIST_SUMMARY.format(count=len(entries), analysed=done, folder=folder)
                             if entries else text.WORKLIST_EMPTY)
        if self.worklist.current is not None:
            self._select(self.worklist.current)

    def _select(self, row: int) -> None:
        self.table.blockSignals(True)
        self.table.selectRow(row)
        self.table.blockSignals(False)
