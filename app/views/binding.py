"""Small helpers for widgets bound to a model: write a value into a widget without echoing it back."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QAbstractButton, QComboBox


def set_quietly(widget: Any, value: Any) -> None:
    """Show ``value`` in ``widget`` without emitting the widget's change signals (model -> view only)."""
    widget.blockSignals(True)
    try:
        if isinstance(widget, QAbstractButton):
            widget.setChecked(bool(value))
        elif isinstance(widget, QComboBox):
            widget.setCurrentIndex(int(value))
        else:
            widget.setValue(value)
    finally:
        widget.blockSignals(False)
