"""The MicroPython lane: every device module compiles with mpy-cross and imports on the real unix
port, and the plain assert scripts in tests/mpy/ pass on both MicroPython and CPython.

A script is named ``*_checks.py`` and ends by printing ``PASS <name>``; a heap limit for
MicroPython is declared on a line of its own as ``# heapsize: 192K``. Other modules there
(``known_vectors.py``) are shared data that scripts and pytest tests both import.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from meterseal.firmware.manifest import DEVICE_FILES, HOST_ONLY, PORT_FILES
from meterseal.hil import micropython

SCRIPTS = sorted((Path(__file__).parent / "mpy").glob("*_checks.py"))


def _declared_heapsize(script):
    match = re.search(r"^# heapsize: (\S+)$", script.read_text(), re.M)
    return match.group(1) if match else None


def _assert_passed(result, script):
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip().splitlines()[-1] == f"PASS {script.stem}", result.stdout


def test_every_micropython_bound_file_is_classified():
    for folder in DEVICE_FILES:
        present = {p.name for p in micropython.package_dir(folder).glob("*.py")}
        port_files = {name for files in PORT_FILES.values() for name in files.get(folder, ())}
        listed = set(DEVICE_FILES[folder]) | set(HOST_ONLY[folder]) | port_files
        assert present == listed, (
            f"{folder}/: unlisted {sorted(present - listed)}, missing {sorted(listed - present)}"
        )


@pytest.mark.parametrize("port", sorted(PORT_FILES))
def test_every_port_image_compiles(port, tmp_path):
    # Board HALs import machine, which the unix port lacks: they must compile, not import here.
    built = micropython.build_image(tmp_path, port)
    assert len(built) == len(list(micropython.device_sources(port)))


def test_image_has_every_device_module(device_image):
    built = {p.relative_to(device_image).as_posix() for p in device_image.rglob("*.mpy")}
    expected = {target + ".mpy" for _, target in micropython.device_sources()}
    assert built == expected


@pytest.mark.parametrize(
    "module",
    [target.replace("/", ".") for _, target in micropython.device_sources()],
)
def test_device_module_imports_on_micropython(module, device_image, tmp_path):
    script = tmp_path / "import_check.py"
    script.write_text(f"import {module}\nprint('imported')\n")
    result = micropython.run(script, device_image)
    assert result.returncode == 0 and result.stdout.strip() == "imported", (
        f"{module} does not import on MicroPython:\n{result.stderr}"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_on_micropython(script, device_image):
    result = micropython.run(script, device_image, heapsize=_declared_heapsize(script))
    _assert_passed(result, script)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_on_cpython(script):
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    _assert_passed(result, script)
