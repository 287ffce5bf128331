"""What the image view's keys do: the view commands of :mod:`app.keymap`, applied to the state and the view."""

from __future__ import annotations

from typing import Any

from app.keymap import Command
from app.state import ViewerState

_STEPS = {Command.SLICE_NEXT: 1, Command.SLICE_PREVIOUS: -1, Command.SLICE_UP_10: 10, Command.SLICE_DOWN_10: -10}
_PLANES = {Command.PLANE_AXIAL: "axial", Command.PLANE_CORONAL: "coronal", Command.PLANE_SAGITTAL: "sagittal"}
_BASE_SWAPS = {Command.TOGGLE_RESTORED: "restored", Command.TOGGLE_DIFFERENCE: "difference"}
_OVERLAY_TOGGLES = {Command.TOGGLE_HEAT: "heat", Command.TOGGLE_MASK: "mask"}
_ZOOMS = {Command.ZOOM_IN: 1.25, Command.ZOOM_OUT: 0.8}


def run(command: Command, state: ViewerState, view: Any) -> bool:
    """Apply a view command to an open scan; False if it does not apply (no scan, or no result to swap to)."""
    layout = state.layout()
    if layout is None:
        return False
    if command in _STEPS:
        state.step_slice(_STEPS[command])
    elif command in (Command.SLICE_FIRST, Command.SLICE_LAST):
        low_end = 0 if layout.step_sign > 0 else layout.n_slices - 1
        state.set_slice_index(low_end if command is Command.SLICE_FIRST else layout.n_slices - 1 - low_end)
    elif command in _PLANES:
        state.set_plane(_PLANES[command])
    elif command in _ZOOMS:
        view.zoom(_ZOOMS[command])
    elif command is Command.ZOOM_RESET:
        view.reset_zoom()
    elif command is Command.AUTO_CONTRAST:
        state.reset_window()
    elif command in _BASE_SWAPS:
        if state.result is None:
            return False
        other = _BASE_SWAPS[command]
        state.set_base_layer("scan" if state.base_layer == other else other)
    elif command in _OVERLAY_TOGGLES:
        name = _OVERLAY_TOGGLES[command]
        state.set_overlay_visible(name, not state.overlay_visible(name))
    elif command is Command.TOGGLE_CONVENTION:
        state.set_radiological(not state.radiological)
    elif command in _STUDY_COMMANDS:
        return _study_command(command, state)
    else:
        return False
    return True


_STUDY_COMMANDS = (Command.SEQUENCE_NEXT, Command.SEQUENCE_PREVIOUS, Command.TOGGLE_STUDY_GRID)


def _study_command(command: Command, state: ViewerState) -> bool:
    """Switch the sequence under the map, or the grid of linked views; False without other sequences."""
    if not state.sequences:
        return False
    if command is Command.TOGGLE_STUDY_GRID:
        state.set_study_grid(not state.study_grid)
        return True
    if state.base_layer != "scan":  # a sequence is read under the overlays, not beside the restoration
        state.set_base_layer("scan")
    state.step_sequence(1 if command is Command.SEQUENCE_NEXT else -1)
    return True
