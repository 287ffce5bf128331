"""The window's small dialogs: file pickers, the one-line error box, the overwrite question, help and about."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from app import text


def pick_scan(parent: QWidget, folder: str) -> str:
    return QFileDialog.getOpenFileName(parent, text.OPEN_TITLE, folder, text.OPEN_FILTER)[0]


def pick_dicom_folder(parent: QWidget, folder: str) -> str:
    return QFileDialog.getExistingDirectory(parent, text.OPEN_DICOM_TITLE, folder)


def pick_worklist_folder(parent: QWidget, folder: str) -> str:
    return QFileDialog.getExistingDirectory(parent, text.OPEN_WORKLIST_TITLE, folder)


def pick_study_files(parent: QWidget, folder: str) -> list[str]:
    return QFileDialog.getOpenFileNames(parent, text.OPEN_STUDY_TITLE, folder, text.OPEN_FILTER)[0]


def pick_brain_mask(parent: QWidget, folder: str) -> str:
    return QFileDialog.getOpenFileName(parent, text.OPEN_BRAIN_MASK_TITLE, folder, text.OPEN_FILTER)[0]


def pick_model_folder(parent: QWidget, folder: str) -> str:
    return QFileDialog.getExistingDirectory(parent, text.MODEL_DIR_TITLE, folder)


def pick_export_folder(parent: QWidget, folder: str) -> str:
    return QFileDialog.getExistingDirectory(parent, text.EXPORT_DIR_TITLE, folder)


def pick_screenshot(parent: QWidget, default: str) -> str:
    return QFileDialog.getSaveFileName(parent, text.SCREENSHOT_TITLE, default, text.SCREENSHOT_FILTER)[0]


def confirm_overwrite(parent: QWidget, count: int, folder: Path) -> bool:
    answer = QMessageBox.question(parent, text.ERR_TITLE, text.ASK_OVERWRITE.format(count=count, folder=folder))
    return answer == QMessageBox.StandardButton.Yes


def non_modal(parent: QWidget, icon: QMessageBox.Icon, title: str, message: str, *, rich: bool = False) -> QMessageBox:
    """A message box that stays open without blocking the viewer (kept alive by its caller)."""
    box = QMessageBox(icon, title, "", QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.RichText if rich else Qt.TextFormat.PlainText)
    box.setText(message)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
    box.show()
    return box


def about(parent: QWidget, version: str) -> None:
    QMessageBox.about(parent, text.APP_NAME, text.ABOUT_TEXT.format(version=version))
