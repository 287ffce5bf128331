"""Frozen entry point of ``condiff-viewer`` (PyInstaller runs this file as the program's main script)."""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    # First, before anything heavy is imported: a frozen child process started by multiprocessing must run the
    # child's task instead of starting a second viewer.
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())
