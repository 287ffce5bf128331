"""Progress reporting and cooperative cancellation shared by training, inference and evaluation.

The engine never prints: long calls take an optional ``on_progress`` callback and an optional :class:`CancelToken`.
:class:`ProgressThrottle` keeps callbacks to at most a given rate (10 per second by default) while always delivering
the final report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from engine.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        done: units of work finished (slices, steps, ...).
        total: units of work in the whole call.
        message: short human-readable description of the current stage.
        elapsed_s: seconds since the call started.
    """

    done: int
    total: int
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def fraction(self) -> float:
        """Share of the work done, in [0, 1]."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds left, or None before any unit is done."""
        if self.done <= 0 or self.total <= 0:
            return None
        return self.elapsed_s * (self.total - self.done) / self.done


class ProgressCallback(Protocol):
    """Receives :class:`Progress` reports; must return quickly."""

    def __call__(self, progress: Progress) -> None: ...


class CancelToken:
    """Thread-safe flag a caller sets to stop a running engine call at its next step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running call to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set; a no-op for None."""
    if cancel is not None:
        cancel.raise_if_cancelled()


class ProgressThrottle:
    """Forwards progress to a callback at most ``max_rate_hz`` times per second (the last report always passes)."""

    def __init__(self, callback: ProgressCallback | None, total: int, *, max_rate_hz: float = 10.0) -> None:
        self._callback = callback
        self._total = total
        self._min_interval = 1.0 / max_rate_hz
        self._start = time.monotonic()
        self._last = -float("inf")
        self._last_done: int | None = None

    def report(self, done: int, message: str = "", *, force: bool = False) -> None:
        """Report ``done`` units out of the total.

        Dropped if the previous report was less than the minimum interval ago, unless ``force`` is set or the work is
        complete; a report repeating the previous ``done`` value is always dropped.
        """
        if self._callback is None or done == self._last_done:
            return
        now = time.monotonic()
        if not force and done < self._total and now - self._last < self._min_interval:
            return
        self._last = now
        self._last_done = done
        self._callback(Progress(done, self._total, message, now - self._start))
