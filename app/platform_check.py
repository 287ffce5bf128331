"""Before the first window: can Qt's platform plugin load here? If not, say what to install, in one line.

Without this, a machine that lacks one of the X11 libraries Qt's ``xcb`` plugin links to (``libxcb-icccm4``,
``libxcb-keysyms1``, ...) ends the viewer with Qt's own "Could not load the Qt platform plugin" and an abort. The
check finds the plugin file Qt would load, asks the dynamic linker (``ldd``) which of its libraries are missing, and
turns their names into Debian/Ubuntu package names. It needs no display and does not load the plugin; it costs a
few tens of milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from app import text

# Sonames whose Debian package is not "lowercase name + version" (with a dash when the name ends in a digit).
_PACKAGE_EXCEPTIONS = {"libglib-2.0.so.0": "libglib2.0-0", "libgthread-2.0.so.0": "libglib2.0-0"}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def chosen_platform(env: Mapping[str, str]) -> str:
    """The platform plugin Qt will pick: ``QT_QPA_PLATFORM`` if set, else wayland in a Wayland session, else xcb."""
    named = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if named:
        return named
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    return "xcb"


def plugin_file(platform: str, env: Mapping[str, str], plugins_dir: Path | None = None) -> Path:
    """Where Qt looks for the platform's plugin (``QT_QPA_PLATFORM_PLUGIN_PATH`` first, then Qt's plugin folder)."""
    if env.get("QT_QPA_PLATFORM_PLUGIN_PATH"):
        folder = Path(env["QT_QPA_PLATFORM_PLUGIN_PATH"])
    else:
        if plugins_dir is None:
            from PySide6.QtCore import QLibraryInfo  # noqa: PLC0415 - QtCore only, no platform needed

            plugins_dir = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
        folder = plugins_dir / "platforms"
    name = "wayland" if platform.startswith("wayland") else platform
    return folder / f"libq{name}.so"


def missing_libraries(plugin: Path, run_ldd: Callable[[Path], str] | None = None) -> list[str]:
    """Sonames the dynamic linker cannot find for ``plugin`` (and the libraries it links to)."""
    try:
        listing = (run_ldd or _ldd)(plugin)
    except (OSError, subprocess.SubprocessError):  # no ldd here: try loading it, which names the first one missing
        return _first_missing_by_loading(plugin)
    return list(dict.fromkeys(_NOT_FOUND.findall(listing)))


def _ldd(plugin: Path) -> str:
    done = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20, check=False)
    return done.stdout


def _first_missing_by_loading(plugin: Path) -> list[str]:
    try:
        ctypes.CDLL(str(plugin))
    except OSError as error:
        found = re.match(r"(\S+\.so[.\d]*): cannot open shared object file", str(error))
        return [found.group(1)] if found else []
    return []


def debian_package(soname: str) -> str:
    """``libxcb-icccm.so.4`` -> ``libxcb-icccm4``; ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``."""
    if soname in _PACKAGE_EXCEPTIONS:
        return _PACKAGE_EXCEPTIONS[soname]
    name, _, version = soname.partition(".so")
    version = version.lstrip(".").split(".")[0]
    name = name.lower()
    if not version:
        return name
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def _x_server_reachable(display: str) -> bool:
    """False only when ``display`` is a local one (``:N``) and no X server answers on its socket."""
    local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if local is None:
        return True  # a remote or unusual display: let Qt try
    path = f"/tmp/.X11-unix/X{local.group(1)}"
    for address in ("\0" + path, path):  # Linux X servers listen on an abstract socket and on the file
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(address)
            return True
        except OSError:
            continue
        finally:
            probe.close()
    return False


def platform_problem(env: Mapping[str, str] | None = None, *, plugins_dir: Path | None = None,
                     run_ldd: Callable[[Path], str] | None = None) -> str | None:
    """None when Qt's platform plugin should load; else one line saying what is missing and how to install it."""
    if not sys.platform.startswith("linux"):
        return None
    env = os.environ if env is None else env
    platform = chosen_platform(env)
    plugin = plugin_file(platform, env, plugins_dir)
    if not plugin.exists():
        return text.ERR_NO_PLUGIN.format(platform=platform, folder=plugin.parent)
    # Without a display nothing can open a window, whatever the plugin needs: say that first (it is what a user on
    # a headless machine has to act on, e.g. with --screenshot), then what the plugin is missing.
    if platform == "xcb":
        display = env.get("DISPLAY", "")
        if not display:
            return text.ERR_NO_DISPLAY
        if not _x_server_reachable(display):
            return text.ERR_NO_X_SERVER.format(display=display)
    missing = missing_libraries(plugin, run_ldd)
    if missing:
        packages = " ".join(dict.fromkeys(debian_package(name) for name in missing))
        return text.ERR_PLUGIN_LIBRARIES.format(platform=platform, libraries=", ".join(missing), packages=packages)
    return None
