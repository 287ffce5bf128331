"""The findings table: one row per finding of the shown result, in rank order; a click jumps to the finding.

It only draws what :class:`app.findings_model.FindingsModel` announces; the smallest-size box writes to the model.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app import text
from app.findings_model import FindingsModel
from app.views.binding import set_quietly

ID_ROLE = Qt.ItemDataRole.UserRole


def cells(finding: Any) -> list[str]:
    """The table's cells for one finding, in the order of ``text.FINDINGS_COLUMNS``."""
    x, y, z = finding.centre_ras_mm
    i, j, k = finding.centre_voxel
    first, last = finding.slice_range
    return [
        str(finding.id),
        f"{finding.volume_ml:.2f}",
        f"{x:.0f}, {y:.0f}, {z:.0f}",
        f"{i:.0f}, {j:.0f}, {k:.0f}",
        f"{first}-{last}" if last > first else str(first),
        f"{finding.max_score:.3f}",
        f"{finding.mean_score:.3f}",
        f"{finding.member_agreement:.0%}",
    ]


def make_row_table(table: QTableWidget, columns: tuple[str, ...]) -> QTableWidget:
    """Set up a read-only table of whole-row selection, one row chosen at a time, columns sized to their contents
    (the findings table and the worklist)."""
    table.setColumnCount(len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    return table


class FindingsTable(QTableWidget):
    """Rows of findings; ``row``'s finding id is kept in the first cell."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(text.FINDINGS_COLUMNS), parent)
        make_row_table(self, text.FINDINGS_COLUMNS)
        for column, tip in enumerate(text.FINDINGS_COLUMN_TIPS):
            self.horizontalHeaderItem(column).setToolTip(tip)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)

    def show_findings(self, findings: Any) -> None:
        items = () if findings is None else findings.items
        self.setRowCount(len(items))
        for row, finding in enumerate(items):
            for column, value in enumerate(cells(finding)):
                item = QTableWidgetItem(value)
                item.setData(ID_ROLE, finding.id)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(row, column, item)

    def finding_id(self, row: int) -> int | None:
        item = self.item(row, 0)
        return None if item is None else int(item.data(ID_ROLE))


class FindingsDock(QDockWidget):
    """A one-line summary, the smallest size listed, and the table; bound to a :class:`FindingsModel`."""

    def __init__(self, model: FindingsModel, parent: QWidget | None = None) -> None:
        super().__init__(text.PANEL_FINDINGS, parent)
        self.setObjectName("findings")  # the name the saved dock layout refers to
        self.model = model
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        self.summary = QLabel(text.FINDINGS_NONE)
        self.summary.setWordWrap(True)
        row.addWidget(self.summary, 1)
        row.addWidget(QLabel(text.LBL_FINDINGS_MIN))
        self.min_spin = QDoubleSpinBox()
        self.min_spin.setDecimals(2)
        self.min_spin.setRange(0.0, 100.0)
        self.min_spin.setSingleStep(0.05)
        self.min_spin.setSuffix(" mL")
        self.min_spin.setKeyboardTracking(False)
        self.min_spin.setToolTip(text.TIP_FINDINGS_MIN)
        row.addWidget(self.min_spin)
        layout.addLayout(row)
        self.table = FindingsTable()
        self.table.setToolTip(text.TIP_FINDINGS)
        layout.addWidget(self.table, 1)
        self.setWidget(panel)
        set_quietly(self.min_spin, model.min_volume_ml)
        self.min_spin.valueChanged.connect(model.set_min_volume_ml)
        self.table.cellClicked.connect(self._on_clicked)
        self.table.cellActivated.connect(self._on_clicked)  # Enter on a row, for the keyboard
        model.findings_changed.connect(self._on_findings_changed)

    def _on_findings_changed(self, findings: Any) -> None:
        set_quietly(self.min_spin, self.model.min_volume_ml)
        self.table.show_findings(findings)
        if findings is None:
            self.summary.setText(text.FINDINGS_NONE)
        else:
            self.summary.setText(text.FINDINGS_SUMMARY.format(count=len(findings.items), threshold=findings.threshold,
                                                              left_out=findings.left_out))
            self.summary.setToolTip(text.TIP_FINDINGS_RULES.format(rank=findings.rank_rule,
                                                                   agreement=findings.agreement_rule))

    def _on_clicked(self, row: int, _column: int) -> None:
        finding_id = self.table.finding_id(row)
        if finding_id is not None:
            self.model.go_to(finding_id)
