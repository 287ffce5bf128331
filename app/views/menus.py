"""The main window's menu bar: its actions, with every shortcut taken from the key map (:mod:`app.keymap`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtGui import QAction

from app import text
from app.keymap import Command, KeyMap
from app.scheduler import AnalysisMode
from app.views.recent_menu import RecentMenu


@dataclass(frozen=True, eq=False)
class MenuActions:
    """What the window keeps of its menus: the actions that have a key (by command), the recent-files menu and the
    score-strip toggle."""

    by_command: dict[Command, QAction]
    recent: RecentMenu
    score_strip: QAction


def build_menus(window: Any, keys: KeyMap) -> MenuActions:
    """Fill ``window``'s menu bar (File, View, Analysis, Help); its slots are the window's and its controller's."""
    by_command: dict[Command, QAction] = {}

    def action(label: str, slot: Callable[[], Any], command: Command | None = None) -> QAction:
        item = QAction(label, window)
        if command is not None:
            item.setShortcut(keys.shortcut(command))
            by_command[command] = item
        item.triggered.connect(lambda _=False: slot())
        window.addAction(item)
        return item

    c = window.controller
    menu = window.menuBar().addMenu(text.MENU_FILE)
    menu.addAction(action(text.ACT_OPEN, window.open_dialog, Command.OPEN))
    menu.addAction(action(text.ACT_OPEN_DICOM, window.open_dicom_dialog))
    menu.addAction(action(text.ACT_OPEN_WORKLIST, window.open_worklist_dialog))
    menu.addAction(action(text.ACT_SCAN_NEXT, lambda: window.step_worklist(1), Command.SCAN_NEXT))
    menu.addAction(action(text.ACT_SCAN_PREVIOUS, lambda: window.step_worklist(-1), Command.SCAN_PREVIOUS))
    menu.addAction(action(text.ACT_OPEN_STUDY, window.open_study_dialog))
    menu.addAction(action(text.ACT_OPEN_BRAIN_MASK, window.open_brain_mask_dialog))
    menu.addAction(action(text.ACT_CLEAR_BRAIN_MASK, c.scan.clear_brain_mask))
    recent = RecentMenu(window.settings, window)
    recent.chosen.connect(window.open_scan)
    menu.addMenu(recent)
    menu.addSeparator()
    menu.addAction(action(text.ACT_CHOOSE_MODEL, window.choose_model_dialog))
    menu.addSeparator()
    menu.addAction(action(text.ACT_EXPORT, lambda: window.export_results(None), Command.EXPORT))
    menu.addAction(action(text.ACT_EXPORT_TO, window.export_dialog, Command.EXPORT_TO))
    menu.addAction(action(text.ACT_EXPORT_DICOM_SEG, lambda: c.exports.export_dicom_seg(None)))
    menu.addAction(action(text.ACT_SAVE_REPORT, lambda: c.exports.save_report(None)))
    menu.addAction(action(text.ACT_SCREENSHOT, window.screenshot_dialog, Command.SCREENSHOT))
    menu.addSeparator()
    menu.addAction(action(text.ACT_QUIT, window.close, Command.QUIT))
    menu = window.menuBar().addMenu(text.MENU_VIEW)
    menu.addAction(action(text.ACT_RESET_VIEW, window.reset_view))
    menu.addAction(window.controls_dock.toggleViewAction())
    menu.addAction(window.findings_dock.toggleViewAction())
    menu.addAction(window.worklist_dock.toggleViewAction())
    score_strip = QAction(text.ACT_SCORE_STRIP, window, checkable=True, checked=True)
    score_strip.toggled.connect(window.image_area.set_score_strip_wanted)
    menu.addAction(score_strip)
    menu = window.menuBar().addMenu(text.MENU_ANALYSIS)
    menu.addAction(action(text.ACT_ANALYSE_SLICE, lambda: c.scheduler.request_analysis(AnalysisMode.SLICE),
                          Command.ANALYSE_SLICE))
    menu.addAction(action(text.ACT_ANALYSE_VOLUME, lambda: c.scheduler.request_analysis(AnalysisMode.VOLUME),
                          Command.ANALYSE_VOLUME))
    menu.addAction(action(text.ACT_CANCEL, c.scheduler.cancel_analysis, Command.CANCEL))
    menu = window.menuBar().addMenu(text.MENU_HELP)
    menu.addAction(action(text.ACT_SHORTCUTS, window.show_shortcuts, Command.SHORTCUTS))
    menu.addAction(action(text.ACT_ABOUT, window.show_about))
    return MenuActions(by_command, recent, score_strip)
