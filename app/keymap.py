"""The viewer's keys in one table: it feeds the key handler, the menu shortcuts and the help text.

A :class:`Binding` names a command, the keys that run it (Qt's portable key-sequence text, e.g. ``"Ctrl+Shift+E"``)
and the line of help that describes it. Bindings with ``menu=True`` become shortcuts of menu actions (Qt handles
them, with or without a scan); the others are handled by :meth:`KeyMap.command_for` in the image view's key handler
and only do something once a scan is open. Mouse gestures are not keys; their help lines follow the keys in the
help text.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum

from PySide6.QtGui import QKeySequence

from app import text


class Command(StrEnum):
    """Everything a key can do."""

    SLICE_NEXT = "slice_next"
    SLICE_PREVIOUS = "slice_previous"
    SLICE_UP_10 = "slice_up_10"
    SLICE_DOWN_10 = "slice_down_10"
    SLICE_FIRST = "slice_first"
    SLICE_LAST = "slice_last"
    PLANE_AXIAL = "plane_axial"
    PLANE_CORONAL = "plane_coronal"
    PLANE_SAGITTAL = "plane_sagittal"
    ZOOM_IN = "zoom_in"
    ZOOM_OUT = "zoom_out"
    ZOOM_RESET = "zoom_reset"
    AUTO_CONTRAST = "auto_contrast"
    TOGGLE_RESTORED = "toggle_restored"
    TOGGLE_DIFFERENCE = "toggle_difference"
    TOGGLE_HEAT = "toggle_heat"
    TOGGLE_MASK = "toggle_mask"
    TOGGLE_CONVENTION = "toggle_convention"
    OPEN = "open"
    QUIT = "quit"
    ANALYSE_SLICE = "analyse_slice"
    ANALYSE_VOLUME = "analyse_volume"
    CANCEL = "cancel"
    EXPORT = "export"
    EXPORT_TO = "export_to"
    SCREENSHOT = "screenshot"
    SHORTCUTS = "shortcuts"
    SCAN_NEXT = "scan_next"
    SCAN_PREVIOUS = "scan_previous"
    SEQUENCE_NEXT = "sequence_next"
    SEQUENCE_PREVIOUS = "sequence_previous"
    TOGGLE_STUDY_GRID = "toggle_study_grid"


@dataclass(frozen=True)
class Binding:
    """Keys for one command and the help line that describes it."""

    command: Command
    keys: tuple[str, ...]
    help: str
    menu: bool = False


BINDINGS: tuple[Binding, ...] = (
    Binding(Command.SLICE_NEXT, ("Up", "Right"), text.KEY_SLICE_NEXT),
    Binding(Command.SLICE_PREVIOUS, ("Down", "Left"), text.KEY_SLICE_PREVIOUS),
    Binding(Command.SLICE_UP_10, ("PgUp",), text.KEY_SLICE_UP_10),
    Binding(Command.SLICE_DOWN_10, ("PgDown",), text.KEY_SLICE_DOWN_10),
    Binding(Command.SLICE_FIRST, ("Home",), text.KEY_SLICE_FIRST),
    Binding(Command.SLICE_LAST, ("End",), text.KEY_SLICE_LAST),
    Binding(Command.PLANE_AXIAL, ("1",), text.KEY_PLANE.format(plane=text.PLANE_NAMES["axial"])),
    Binding(Command.PLANE_CORONAL, ("2",), text.KEY_PLANE.format(plane=text.PLANE_NAMES["coronal"])),
    Binding(Command.PLANE_SAGITTAL, ("3",), text.KEY_PLANE.format(plane=text.PLANE_NAMES["sagittal"])),
    Binding(Command.ZOOM_IN, ("+", "="), text.KEY_ZOOM_IN),
    Binding(Command.ZOOM_OUT, ("-",), text.KEY_ZOOM_OUT),
    Binding(Command.ZOOM_RESET, ("0",), text.KEY_ZOOM_RESET),
    Binding(Command.AUTO_CONTRAST, ("W",), text.KEY_AUTO_CONTRAST),
    Binding(Command.TOGGLE_RESTORED, ("R",), text.KEY_TOGGLE_RESTORED),
    Binding(Command.TOGGLE_DIFFERENCE, ("D",), text.KEY_TOGGLE_DIFFERENCE),
    Binding(Command.TOGGLE_HEAT, ("H",), text.KEY_TOGGLE_HEAT),
    Binding(Command.TOGGLE_MASK, ("M",), text.KEY_TOGGLE_MASK),
    Binding(Command.TOGGLE_CONVENTION, ("N",), text.KEY_TOGGLE_CONVENTION),
    Binding(Command.SEQUENCE_NEXT, ("S",), text.KEY_SEQUENCE_NEXT),
    Binding(Command.SEQUENCE_PREVIOUS, ("A",), text.KEY_SEQUENCE_PREVIOUS),
    Binding(Command.TOGGLE_STUDY_GRID, ("G",), text.KEY_TOGGLE_STUDY_GRID),
    Binding(Command.OPEN, ("Ctrl+O",), text.KEY_OPEN, menu=True),
    Binding(Command.SCAN_NEXT, ("]",), text.KEY_SCAN_NEXT, menu=True),
    Binding(Command.SCAN_PREVIOUS, ("[",), text.KEY_SCAN_PREVIOUS, menu=True),
    Binding(Command.ANALYSE_SLICE, ("Ctrl+Return",), text.KEY_ANALYSE_SLICE, menu=True),
    Binding(Command.ANALYSE_VOLUME, ("Ctrl+Shift+Return",), text.KEY_ANALYSE_VOLUME, menu=True),
    Binding(Command.CANCEL, ("Esc",), text.KEY_CANCEL, menu=True),
    Binding(Command.EXPORT, ("Ctrl+E",), text.KEY_EXPORT, menu=True),
    Binding(Command.EXPORT_TO, ("Ctrl+Shift+E",), text.KEY_EXPORT_TO, menu=True),
    Binding(Command.SCREENSHOT, ("Ctrl+Shift+S",), text.KEY_SCREENSHOT, menu=True),
    Binding(Command.SHORTCUTS, ("F1",), text.KEY_SHORTCUTS, menu=True),
    Binding(Command.QUIT, ("Ctrl+Q",), text.KEY_QUIT, menu=True),
)


class KeyMap:
    """Lookups over :data:`BINDINGS` (one table, several uses)."""

    def __init__(self, bindings: tuple[Binding, ...] = BINDINGS) -> None:
        self.bindings = bindings
        self._by_command = {b.command: b for b in bindings}
        if len(self._by_command) != len(bindings):
            raise ValueError("a command is bound twice in the key map")
        self._by_key: dict[int, Command] = {}
        for binding in bindings:
            if binding.menu:
                continue
            for key in binding.keys:
                code = _key_code(key)
                if code in self._by_key:
                    raise ValueError(f"key {key!r} is bound to two commands")
                self._by_key[code] = binding.command

    def command_for(self, key: int) -> Command | None:
        """The view command of a key code (``QKeyEvent.key()``), or None."""
        return self._by_key.get(int(key))

    def shortcut(self, command: Command) -> QKeySequence:
        """The key sequence of a menu command."""
        return QKeySequence(self._by_command[command].keys[0])

    def help_html(self) -> str:
        """The keyboard and mouse help, as an HTML table."""
        rows = [(" / ".join(b.keys), b.help) for b in self.bindings]
        rows += list(text.MOUSE_HELP)
        body = "\n".join(f"<tr><td><b>{html.escape(keys)}</b></td><td>{html.escape(what)}</td></tr>"
                         for keys, what in rows)
        return f"<table cellspacing=4>\n{body}\n</table>"


def _key_code(key: str) -> int:
    sequence = QKeySequence(key)
    if sequence.count() != 1 or sequence.isEmpty():
        raise ValueError(f"not a single key: {key!r}")
    return int(sequence[0].key().value)
