"""The viewer's preferences: every QSettings key, its type and its default, in one table (QtCore only).

Read a preference with ``prefs.OPACITY.read(settings)`` and write it with ``prefs.OPACITY.write(settings, 0.5)``;
nothing else in the viewer spells a settings key. INI files store everything as text, so :meth:`Pref.read` converts
the stored value back to the type of the default (and falls back to the default when it cannot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QByteArray, QSettings

from app import slicing, state, text
from engine import DEFAULT_MIN_VOLUME_ML

T = TypeVar("T")

MAX_RECENT = 10
LAYOUT_VERSION = 3  # bump when the docks change: a layout saved with other docks is then not restored


def default_settings() -> QSettings:
    """The user's settings store (INI format, per user)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, text.ORG_NAME, "viewer")


def cache_folder(settings: QSettings) -> Path:
    """Where the viewer keeps what it computes for later sessions (the worklist's background results): beside its
    settings file, so a settings store of its own (a test's, a second profile's) brings a cache of its own."""
    return Path(settings.fileName()).parent / "cache"


@dataclass(frozen=True)
class Pref(Generic[T]):
    """One preference: its key in the settings store and its default (whose type the stored value takes)."""

    key: str
    default: T

    def read(self, settings: QSettings) -> T:
        value = settings.value(self.key, self.default)
        return _coerce(value, self.default)

    def write(self, settings: QSettings, value: T) -> None:
        settings.setValue(self.key, value)


@dataclass(frozen=True)
class BytesPref:
    """A preference holding Qt's opaque bytes (window geometry, dock layout); None when never saved."""

    key: str

    def read(self, settings: QSettings) -> QByteArray | bytes | None:
        value = settings.value(self.key)
        return value if isinstance(value, QByteArray | bytes) else None

    def write(self, settings: QSettings, value: QByteArray | bytes) -> None:
        settings.setValue(self.key, value)


def _coerce(value: Any, default: Any) -> Any:
    if value is None:
        return list(default) if isinstance(default, list) else default
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [value]
            return [str(v) for v in value]
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        return default
    return value


# --- window --------------------------------------------------------------------------------------------------------
WINDOW_GEOMETRY = BytesPref("window/geometry")
WINDOW_STATE = BytesPref("window/state")  # docks and toolbars (QMainWindow.saveState)
SPLITTER_STATE = BytesPref("window/splitter")  # image above, slice-score strip below
SCORE_STRIP = Pref("window/score_strip", True)  # the strip shows with a result (View menu switches it off)
# --- view ------------------------------------------------------------------------------------------------------------
RADIOLOGICAL = Pref("view/radiological", True)
PLANE = Pref("view/plane", "axial")
# --- overlays (defaults from app.state, the one place that defines them) ---------------------------------------------
OPACITY = Pref("overlay/opacity", state.DEFAULT_OPACITY)
OVERLAY_VISIBLE = {name: Pref(f"overlay/{name}", on) for name, on in state.DEFAULT_VISIBLE.items()}
MASK_FILL = Pref("overlay/fill", state.DEFAULT_MASK_FILL)
# --- analysis ------------------------------------------------------------------------------------------------------
DEVICE = Pref("analysis/device", "auto")
SAMPLER = Pref("analysis/sampler", "ddim")
STEPS = Pref("analysis/steps", 0)  # 0: the model's default
SEED = Pref("analysis/seed", 0)
FINDINGS_MIN_ML = Pref("findings/min_volume_ml", DEFAULT_MIN_VOLUME_ML)
# --- files ---------------------------------------------------------------------------------------------------------
RECENT_FILES = Pref("recent/files", [])
RECENT_FOLDER = Pref("recent/folder", "")
EXPORT_FOLDER = Pref("recent/export_folder", "")

ALL: tuple[Pref[Any] | BytesPref, ...] = (
    WINDOW_GEOMETRY, WINDOW_STATE, SPLITTER_STATE, SCORE_STRIP, RADIOLOGICAL, PLANE, OPACITY,
    *OVERLAY_VISIBLE.values(), MASK_FILL, DEVICE, SAMPLER, STEPS, SEED, FINDINGS_MIN_ML, RECENT_FILES, RECENT_FOLDER,
    EXPORT_FOLDER,
)


def restore_viewer(settings: QSettings, view_state: Any, controller: Any) -> None:
    """Put the saved view, overlay and analysis choices into the viewer state and the analysis controller."""
    view_state.set_radiological(RADIOLOGICAL.read(settings))
    plane = PLANE.read(settings)
    view_state.set_plane(plane if plane in slicing.PLANES else PLANE.default)
    view_state.set_opacity(OPACITY.read(settings))
    for name, pref in OVERLAY_VISIBLE.items():
        view_state.set_overlay_visible(name, pref.read(settings))
    view_state.set_mask_fill(MASK_FILL.read(settings))
    device = DEVICE.read(settings)
    controller.models.offer_device(device)  # checked against the real list once the model has loaded
    controller.models.set_settings(device=device, steps=STEPS.read(settings), seed=SEED.read(settings))
    sampler = SAMPLER.read(settings)
    if sampler in controller.models.samplers:
        controller.models.set_settings(sampler=sampler)
    controller.findings.set_min_volume_ml(FINDINGS_MIN_ML.read(settings))


def save_viewer(settings: QSettings, view_state: Any, controller: Any) -> None:
    """Save what :func:`restore_viewer` restores."""
    RADIOLOGICAL.write(settings, view_state.radiological)
    PLANE.write(settings, view_state.plane)
    OPACITY.write(settings, view_state.opacity)
    for name, pref in OVERLAY_VISIBLE.items():
        pref.write(settings, view_state.overlay_visible(name))
    MASK_FILL.write(settings, view_state.mask_fill)
    DEVICE.write(settings, controller.models.device)
    SAMPLER.write(settings, controller.models.sampler)
    STEPS.write(settings, controller.models.steps)
    SEED.write(settings, controller.models.seed)
    FINDINGS_MIN_ML.write(settings, controller.findings.min_volume_ml)
