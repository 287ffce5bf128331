"""What ``condiff-engine``'s options accept: the argument types and the options several commands share.

Each type turns one argument's text into its value or raises :class:`argparse.ArgumentTypeError` with a one-line
reason, which argparse shows as ``condiff-engine COMMAND: error: argument --x: <reason>`` (exit status 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

JSON_STDOUT = "-"


def json_option(p: argparse.ArgumentParser) -> None:
    """The one ``--json`` convention: ``--json`` prints the JSON report on stdout instead of the table;
    ``--json FILE`` also writes it to FILE (atomically) and prints the table."""
    p.add_argument("--json", nargs="?", const=JSON_STDOUT, metavar="FILE",
                   help="machine-readable output: the JSON report on stdout (instead of the table), or written to "
                   "FILE")


def id_list(text: str, known: Sequence[int], what: str) -> list[int]:
    """Comma-separated ids, each one of ``known`` (in the order given, without repeats)."""
    try:
        ids = list(dict.fromkeys(int(part) for part in text.split(",")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} takes ids like 0,2,4; got {text!r}") from None
    if not ids or any(i not in known for i in ids):
        raise argparse.ArgumentTypeError(f"{what} must be among {min(known)}..{max(known)}, got {text!r}")
    return ids


def folds(text: str) -> list[int]:
    from engine.tasks.registry import NUM_FOLDS  # noqa: PLC0415

    return list(range(NUM_FOLDS)) if text == "all" else id_list(text, range(NUM_FOLDS), "--fold")


def task_list(text: str) -> list[int]:
    from engine.tasks.registry import TASKS  # noqa: PLC0415

    return sorted(id_list(text, sorted(TASKS), "--tasks"))


def non_negative(text: str) -> float:
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive(text: str) -> int:
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def role_option(p: argparse.ArgumentParser, default: str) -> None:
    from engine.data import ROLES  # noqa: PLC0415

    p.add_argument("--role", choices=["all", *ROLES], default=default,
                   help="of the healthy folder, use only this role of the fixed split (train / selection / "
                   f"calibration, see the README; default: {default})")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out the healthy scans whose file name matches (repeatable), e.g. 'IXI056*', the "
                   "shipped sample, which the held-out test set does not include")


def shift_list(text: str) -> list[str]:
    from engine.transfer import SHIFTS  # noqa: PLC0415

    names = list(SHIFTS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in SHIFTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(SHIFTS)}")
    return names


def _parsed(text: str, kind: type[float] | type[int], what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def finite(text: str) -> float:
    value = _parsed(text, float, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def open_fraction(text: str) -> float:
    value = finite(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1 (exclusive), got {text!r}")
    return value


def fraction(text: str) -> float:
    value = finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def finite_positive(text: str) -> float:
    value = finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def count(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def runtime_option(p: argparse.ArgumentParser) -> None:
    """``--runtime``: what runs the members' networks (the choices and their help come from the registry)."""
    from engine.runtimes import RUNTIME_CHOICES, RUNTIMES  # noqa: PLC0415

    p.add_argument("--runtime", choices=list(RUNTIME_CHOICES), default="auto",
                   help="auto = onnxruntime on a CPU where it is installed, else torch; "
                   + "; ".join(f"{name} = {spec.description}" for name, spec in RUNTIMES.items()))
