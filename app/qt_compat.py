"""Workarounds for bugs in the installed Qt bindings (QtCore only).

shiboken6 / PySide6 6.12.0 returns ``True`` from every Python-side ``SignalInstance.emit()`` without taking a
reference, so each emit lowers the reference count of ``True`` by one. On CPython before 3.12 (where ``True`` is not
immortal) a few hundred emits later the interpreter aborts with "Fatal Python error: bool_dealloc". pyqtgraph and
the viewer emit signals constantly, so the viewer would crash within minutes of use.

:func:`guard_bool_refcounts` measures the leak once and, only when it is present, gives ``True`` and ``False`` a
huge number of extra references that are never released (they are static singletons that are never freed anyway),
so the count can never reach zero.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6.QtCore import QObject, Signal

logger = logging.getLogger(__name__)

_EXTRA_REFERENCES = 1 << 40
_guarded = False


class _Probe(QObject):
    ping = Signal(int)


def emit_leaks_bool_references() -> bool:
    """True if emitting a signal from Python drops a reference to ``True`` (the shiboken6 6.12.0 bug)."""
    probe = _Probe()
    probe.ping.connect(lambda _value: None)
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.ping.emit(1)
    return sys.getrefcount(True) < before - 4


def guard_bool_refcounts() -> bool:
    """Protect ``True``/``False`` from the emit reference leak when it is present; True if a guard was applied."""
    global _guarded
    if _guarded or sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return _guarded
    if not emit_leaks_bool_references():
        return False
    for singleton in (True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += _EXTRA_REFERENCES
    _guarded = True
    logger.info("PySide6 signal emit leaks references to True: guard applied")
    return True
