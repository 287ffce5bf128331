"""Frozen entry point of ``condiff-engine`` (PyInstaller runs this file as the program's main script)."""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    # First, before anything heavy is imported: a frozen child process started by multiprocessing must run the
    # child's task instead of parsing the command line again.
    multiprocessing.freeze_support()
    from engine.cli import main

    sys.exit(main())
