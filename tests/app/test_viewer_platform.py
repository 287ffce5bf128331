"""First launch: when Qt's platform plugin cannot load, the viewer says what to install in one line and exits."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scan_path

from app import platform_check

REPO = Path(__file__).resolve().parents[2]
EXIT_NO_WINDOW = 6

# ldd's report on PySide6 6.11's libqxcb.so on this machine before the X11 key and ICCCM libraries were installed.
LDD_MISSING_XCB_LIBS = """\
\tlinux-vdso.so.1 (0x00007ffd5d9e5000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f0c1a000000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f0c19fd0000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c19c00000)
"""


@pytest.mark.parametrize(("soname", "package"), [
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
    ("libdbus-1.so.3", "libdbus-1-3"),
    ("libEGL.so.1", "libegl1"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libglib-2.0.so.0", "libglib2.0-0"),
])
def test_library_names_become_debian_packages(soname: str, package: str) -> None:
    assert platform_check.debian_package(soname) == package


def test_missing_libraries_give_one_line_with_the_apt_get_command(tmp_path: Path) -> None:
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    (platforms / "libqxcb.so").write_bytes(b"\x7fELF")
    problem = platform_check.platform_problem({"DISPLAY": "condiff-test.invalid:0"}, plugins_dir=tmp_path,
                                              run_ldd=lambda _plugin: LDD_MISSING_XCB_LIBS)
    assert problem is not None
    assert "\n" not in problem
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in problem
    assert problem.endswith("sudo apt-get install libxcb-icccm4 libxcb-keysyms1")


def test_platform_choice_follows_the_environment() -> None:
    assert platform_check.chosen_platform({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert platform_check.chosen_platform({"QT_QPA_PLATFORM": "xcb:nograb"}) == "xcb"
    assert platform_check.chosen_platform({"DISPLAY": ":0"}) == "xcb"
    assert platform_check.chosen_platform({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}) == "wayland"


def test_the_offscreen_platform_of_this_install_passes() -> None:
    assert platform_check.platform_problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def run_viewer(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def assert_one_line_exit(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == EXIT_NO_WINDOW, (done.returncode, done.stderr)  # not Qt's abort (134)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("condiff-viewer: cannot open a window")
    return lines[0]


def test_a_missing_platform_plugin_ends_with_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    line = assert_one_line_exit(run_viewer({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0",
                                            "QT_QPA_PLATFORM_PLUGIN_PATH": str(empty)}, str(scan_path("ms"))))
    assert "xcb" in line
    assert str(empty) in line


def test_a_plugin_whose_library_is_missing_names_the_package(tmp_path: Path) -> None:
    """A real shared-object plugin linked against a library that is then removed, as on a machine that lacks it."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the stand-in plugin")
    (tmp_path / "absent.c").write_text("int condiff_absent(void) { return 1; }\n")
    (tmp_path / "plugin.c").write_text("int condiff_absent(void);\n"
                                       "int plugin_probe(void) { return condiff_absent(); }\n")
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    library = tmp_path / "libcondiff-absent.so.3"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcondiff-absent.so.3", "-o", str(library),
                    str(tmp_path / "absent.c")], check=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(platforms / "libqxcb.so"), str(tmp_path / "plugin.c"),
                    str(library)], check=True)
    library.unlink()
    # A display the check cannot rule out (not a local :N one), so the missing library is what stops the viewer.
    # A display the check cannot rule out (not a local :N one), so the missing library is what stops the viewer.
    line = assert_one_line_exit(run_viewer({"QT_QPA_PLATFORM": "xcb", "DISPLAY": "condiff-test.invalid:0",
                                            "QT_QPA_PLATFORM_PLUGIN_PATH": str(platforms)}, str(scan_path("ms"))))
    assert "libcondiff-absent.so.3" in line
    assert line.endswith("sudo apt-get install libcondiff-absent3")


def test_no_display_ends_with_one_line() -> None:
    line = assert_one_line_exit(run_viewer({}, str(scan_path("ms"))))
    assert "DISPLAY" in line
    assert "--screenshot" in line


def test_a_display_without_an_x_server_ends_with_one_line() -> None:
    number = next(n for n in range(400, 500) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    line = assert_one_line_exit(run_viewer({"DISPLAY": f":{number}"}, str(scan_path("ms"))))
    assert f"DISPLAY=:{number}" in line


_FIRST_IMAGE_PROBE = """
import sys
import app.main_window as main_window
from app.main import main

seen = {}


class Probe(main_window.MainWindow):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first_image_drawn.connect(self._record)  # before main() connects the model loading to it
        self.controller.models.model_ready.connect(self.close)
        self.controller.models.model_changed.connect(lambda: self.controller.models.model_error and self.close())

    def _record(self):
        seen["torch_at_first_image"] = "torch" in sys.modules
        seen["volume"] = self.state.volume is not None


main_window.MainWindow = Probe
code = main([sys.argv[1]])
print(code, seen.get("torch_at_first_image"), seen.get("volume"), "torch" in sys.modules)
"""


def test_the_scan_is_drawn_before_torch_is_imported(tmp_path: Path) -> None:
    """The interactive start with the real engine and bundled model: the model loads only after the first image."""
    if not (REPO / "resources" / "models").is_dir():
        pytest.skip("no bundled model")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _FIRST_IMAGE_PROBE, str(scan_path("ms"))], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    code, torch_at_first_image, volume, torch_at_end = done.stdout.split()[-4:]
    assert code == "0"
    assert volume == "True"
    assert torch_at_first_image == "False"
    assert torch_at_end == "True"  # and then the model did load
