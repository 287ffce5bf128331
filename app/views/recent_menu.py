"""File > Open Recent: the last scans opened, kept in the preferences."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import QMenu, QWidget

from app import prefs, text


class RecentMenu(QMenu):
    """Lists recent scans (newest first); ``chosen(path)`` when one is picked."""

    chosen = Signal(str)

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(text.MENU_RECENT, parent)
        self.settings = settings
        self.rebuild()

    def files(self) -> list[str]:
        return prefs.RECENT_FILES.read(self.settings)

    def add(self, path: str | Path) -> None:
        """Put ``path`` on top of the list and remember its folder for the next Open dialog."""
        entry = str(Path(path).resolve())
        files = [f for f in self.files() if f != entry]
        prefs.RECENT_FILES.write(self.settings, [entry, *files][: prefs.MAX_RECENT])
        prefs.RECENT_FOLDER.write(self.settings, str(Path(entry).parent))
        self.rebuild()

    def clear_files(self) -> None:
        prefs.RECENT_FILES.write(self.settings, [])
        self.rebuild()

    def rebuild(self) -> None:
        self.clear()
        files = self.files()
        for f in files:
            action = self.addAction(f)
            action.triggered.connect(lambda _=False, p=f: self.chosen.emit(p))
        self.addSeparator()
        self.addAction(text.ACT_CLEAR_RECENT).triggered.connect(self.clear_files)
        self.setEnabled(bool(files))
