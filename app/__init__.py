"""condiff viewer: a desktop slice viewer for brain MRI anomaly maps (PySide6 + pyqtgraph).

The app uses only the public API of :mod:`engine`; see :mod:`app.main` for the command line.
"""
