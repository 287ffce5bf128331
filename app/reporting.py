"""What the viewer tells the person using it: errors as one line each, and status lines (QtCore only, no widgets).

:class:`Reporter` is the one channel the parts behind the window (scan, model, analysis, export) speak through. The
main window shows what it announces; headless callers read :attr:`Reporter.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from app import text
from engine import one_line

logger = logging.getLogger(__name__)


class Reporter(QObject):
    """Errors (title and one line) and status lines for one viewer.

    Args:
        backend: the engine's public API; its ``EngineError`` marks an error whose message is written for a person.
    """

    error_reported = Signal(str, str)  # title, one line
    status = Signal(str)

    def __init__(self, backend: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.errors: list[str] = []

    def report_error(self, title: str, message: str) -> None:
        """Record a problem as one line and announce it (the window shows it; headless callers read ``errors``)."""
        line = one_line(message)
        logger.info("%s: %s", title, line)
        self.errors.append(line)
        self.error_reported.emit(title, line)

    def report_unexpected(self, error: BaseException) -> None:
        """Report an exception that is not an engine error (the traceback goes to the log)."""
        self.report_error(text.ERR_UNEXPECTED, text.ERR_UNEXPECTED_LINE.format(kind=type(error).__name__,
                                                                               message=error))

    def read(self, title: str, path: Path, load: Callable[[Path], Any]) -> Any:
        """``load(path)``, or None after reporting why it failed (never an exception out of a bad file)."""
        try:
            return load(path)
        except self.backend.EngineError as error:
            self.report_error(title, str(error))
        except Exception as error:  # never let a bad file take the viewer down
            logger.exception("unexpected error reading %s", path)
            self.report_error(title, text.ERR_READ.format(path=path, kind=type(error).__name__, message=error))
        return None
