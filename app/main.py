"""Command line of the viewer: ``condiff-viewer [SCAN] [--brain-mask MASK] [--model DIR] [--analyze [slice|volume]]
[--screenshot PNG] [--report DIR]``.

With ``--screenshot`` the viewer renders the default view (middle axial slice, with overlays when ``--analyze`` is
given) to a PNG and exits, without needing a display (``QT_QPA_PLATFORM=offscreen`` is set when no display exists).
With ``--report`` (and ``--analyze``) it writes the one-page PDF report File > Save report would save, with the study's
underlay and reference when ``--also`` / ``--reference`` / ``--sequence`` are given, and exits the same way.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from app import text

logger = logging.getLogger(__name__)

EXIT_NO_WINDOW = 6  # Qt could not open a window here (missing libraries, no display)
SCREENSHOT_SIZE = (1700, 1200)  # window size for headless rendering; the image view is at least 1000x700


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="condiff-viewer", description=text.CLI_DESCRIPTION)
    parser.add_argument("scan", nargs="?", help=text.CLI_SCAN)
    parser.add_argument("--model", metavar="DIR", help=text.CLI_MODEL)
    parser.add_argument("--brain-mask", metavar="MASK", help=text.CLI_BRAIN_MASK)
    parser.add_argument("--also", nargs="+", metavar="SCAN", default=[], help=text.CLI_ALSO)
    parser.add_argument("--reference", metavar="SEG", help=text.CLI_REFERENCE)
    parser.add_argument("--sequence", metavar="NAME", help=text.CLI_SEQUENCE)
    parser.add_argument("--layout", choices=("single", "grid"), default="single", help=text.CLI_LAYOUT)
    parser.add_argument("--analyze", "--analyse", nargs="?", const="slice", choices=("slice", "volume"),
                        help=text.CLI_ANALYZE)
    parser.add_argument("--screenshot", metavar="PNG", help=text.CLI_SCREENSHOT)
    parser.add_argument("--report", metavar="DIR", type=Path, help=text.CLI_REPORT)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help=text.CLI_DEVICE)
    parser.add_argument("--slice", type=int, metavar="K", help=text.CLI_SLICE)
    parser.add_argument("--threshold", type=float, metavar="T", help=text.CLI_THRESHOLD)
    parser.add_argument("-v", "--verbose", action="store_true", help=text.CLI_VERBOSE)
    return parser


def install_excepthook(window_getter: Any) -> None:
    """Log uncaught exceptions and show them in a dialog instead of ending the app."""

    def hook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        logger.error("uncaught exception:\n%s", "".join(traceback.format_exception(kind, error, tb)))
        window = window_getter()
        if window is not None:
            try:
                window.show_unexpected(error)
            except Exception:  # the dialog itself failed: the log has it
                logger.exception("could not show the error dialog")

    sys.excepthook = hook


def _qt_message(kind: Any, _context: Any, message: str) -> None:
    """Route Qt's own messages into the log (the offscreen platform is chatty) instead of raw stderr."""
    logging.getLogger("qt").debug("%s: %s", getattr(kind, "name", kind), message)


def main(argv: list[str] | None = None, *, backend: Any = None, settings: Any = None) -> int:
    """Run the viewer; returns the process exit status.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        backend: engine API object (default: the ``engine`` module); tests pass a fake.
        settings: a ``QSettings`` to use instead of the user's.
    """
    launched = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.report is not None and not args.analyze:
        parser.error(text.ERR_CLI_REPORT_NEEDS_ANALYSIS)
    headless = args.screenshot is not None or args.report is not None
    quiet = logging.WARNING if headless else logging.INFO  # headless: stderr carries only the one-line verdict
    logging.basicConfig(level=logging.DEBUG if args.verbose else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if headless and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QCoreApplication, qInstallMessageHandler

    if QCoreApplication.instance() is None:
        from app.platform_check import platform_problem  # noqa: PLC0415

        problem = platform_problem()
        if problem is not None:  # instead of Qt's "could not load the platform plugin" abort
            print(problem, file=sys.stderr)
            return EXIT_NO_WINDOW
    if backend is None:
        import engine as backend  # cheap: torch loads only with the model, in the background

    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    qInstallMessageHandler(_qt_message)

    QCoreApplication.setOrganizationName(text.ORG_NAME)
    QCoreApplication.setApplicationName("viewer")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    # Interactive: the model (torch and all) loads only once the scan is on screen; importing it alongside would
    # hold the interpreter for seconds before the first image. Headless with --analyze: load it at once.
    window = MainWindow(backend, settings, args.model, interactive=not headless,
                        autoload_model=headless and bool(args.analyze))
    controller = window.controller
    if args.device:
        controller.models.offer_device(args.device)  # checked against the real list when the model loads
        controller.models.set_settings(device=args.device)
    install_excepthook(lambda: window)
    try:
        if headless:
            return _render(app, window, args, launched)

        def on_first_image() -> None:
            logger.info("first image %.2f s after launch", time.perf_counter() - launched)
            controller.scheduler.load_model()
            if args.analyze:
                window.state.set_plane("axial")
                controller.scheduler.request_analysis(args.analyze)

        window.first_image_drawn.connect(on_first_image)
        window.show()
        if args.scan and window.open_path(args.scan):
            if args.brain_mask:
                window.open_brain_mask(args.brain_mask)
            if args.also or args.reference:
                window.study.open_study(args.also, args.reference)
            window.state.set_study_grid(args.layout == "grid")
            _show_slice(window, args.slice)
        return int(app.exec())
    finally:
        sys.excepthook = sys.__excepthook__
        qInstallMessageHandler(None)
        if window.isVisible():
            window.close()
        else:
            controller.shutdown()
        _delete_now(window)


def _delete_now(window: Any) -> None:
    """Destroy the window's Qt objects while the interpreter is whole.

    Left to PySide's clean-up at interpreter exit, the pyqtgraph items die when Python is half torn down: their
    Python event handlers then crashed the frozen viewer on about one exit in five (SIGSEGV under
    ``QGraphicsScene::~QGraphicsScene`` called from ``PySide::destroyQCoreApplication``).
    """
    import shiboken6  # noqa: PLC0415

    if shiboken6.isValid(window):
        shiboken6.delete(window)


def _show_slice(window: Any, index: int | None) -> None:
    """Move the cursor to axial slice ``index`` (clamped to the volume)."""
    volume = window.state.volume
    if index is None or volume is None:
        return
    axis = window.controller.scan.analysis_axis
    cursor = list(window.state.cursor)
    cursor[axis] = max(0, min(int(index), volume.shape[axis] - 1))
    window.state.set_cursor(tuple(cursor))


def _render(app: Any, window: Any, args: argparse.Namespace, launched: float) -> int:
    """Headless: open, optionally analyse, render to PNG; one line on stderr and a nonzero status on failure."""
    window.resize(*SCREENSHOT_SIZE)
    window.show()
    app.processEvents()
    if not args.scan:
        print(text.ERR_CLI_SCAN.format(message=text.ERR_CLI_NEEDS_SCAN), file=sys.stderr)
        return 2
    if not window.open_path(args.scan) or (args.brain_mask and not window.open_brain_mask(args.brain_mask)) or (
            (args.also or args.reference) and not window.study.open_study(args.also, args.reference)):
        print(text.ERR_CLI_SCAN.format(message=window.errors[-1]), file=sys.stderr)
        return 2
    if args.sequence:
        names = {(i.name.lower()): n for n, i in window.state.sequences.items()}
        if args.sequence.lower() not in names:
            print(text.ERR_CLI_SCAN.format(message=text.ERR_CLI_SEQUENCE.format(
                name=args.sequence, names=", ".join(window.state.sequences) or "none")), file=sys.stderr)
            return 2
        window.state.set_sequence(names[args.sequence.lower()])
    window.state.set_study_grid(args.layout == "grid")
    window.state.set_plane("axial")
    _show_slice(window, args.slice)
    app.processEvents()
    logger.debug("first image %.2f s after launch", time.perf_counter() - launched)
    if args.analyze:
        controller = window.controller
        controller.scheduler.wait_idle()
        if controller.models.model is None:
            print(text.ERR_CLI_MODEL.format(message=controller.models.model_error), file=sys.stderr)
            return 3
        controller.scheduler.request_analysis(args.analyze)
        controller.scheduler.wait_idle()
        if window.state.result is None:
            reason = controller.errors[-1] if controller.errors else text.REASON_NO_RESULT
            print(text.ERR_CLI_ANALYSIS.format(message=reason), file=sys.stderr)
            return 4
        if args.threshold is not None:
            window.state.set_threshold(args.threshold)
    app.processEvents()
    size = window.view_panel.size()
    if size.width() < 1000 or size.height() < 700:
        window.resize(window.width() + max(0, 1000 - size.width()), window.height() + max(0, 700 - size.height()))
        app.processEvents()
    if args.report is not None and window.controller.exports.save_report(args.report) is None:
        print(text.ERR_CLI_SCAN.format(message=window.errors[-1]), file=sys.stderr)
        return 5
    if args.screenshot is not None and window.save_screenshot(Path(args.screenshot)) is None:
        print(text.ERR_CLI_SCAN.format(message=window.errors[-1]), file=sys.stderr)
        return 5
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
