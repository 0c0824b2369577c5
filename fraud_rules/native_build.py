"""``meterseal compile-detectors``: compiles the detector modules with mypyc (fraud_rules/native.py).

The build works on a copy of the package's source, laid out as ``meterseal/fraud_rules`` so that
mypyc names the modules as the host imports them, and writes the extension modules and a manifest
of the copied source's digests into a new directory that then replaces ``_compiled`` whole: a
running host keeps the files it mapped, and a file edited during the build makes the build stale
rather than wrong.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from importlib import metadata
from pathlib import Path

from . import native


class CompileError(Exception):
    """The detectors could not be compiled; the pure-Python ones keep running."""


def _stage(work):
    """Copies the package's Python files into ``work``/meterseal/fraud_rules; returns the
    package copy's directory."""
    package = work / "meterseal" / "fraud_rules"
    package.mkdir(parents=True)
    (work / "meterseal" / "__init__.py").write_text("")  # so mypyc names modules meterseal.*
    for path in native.PACKAGE_DIR.glob("*.py"):
        shutil.copy2(path, package / path.name)
    return package


def _compile(work):
    """Runs mypyc and the C compiler in ``work`` (this process's working directory, since mypyc
    writes its C files relative to it); the extensions land under ``work``/out. Runs in a child
    process, whose output (mypy's, the compiler's) the parent shows only on failure."""
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    os.chdir(work)
    extensions = mypycify([f"meterseal/fraud_rules/{module}.py" for module in native.MODULES],
                          group_name=f"{native.__package__}.{native.GROUP}", target_dir="c",
                          opt_level="3")
    command = build_ext(Distribution({"ext_modules": extensions, "script_name": "meterseal"}))
    command.build_lib, command.build_temp = "out", "objects"
    command.ensure_finalized()
    command.run()


def _compile_in_child(work):
    try:
        metadata.version("mypy")
    except metadata.PackageNotFoundError:
        raise CompileError("mypyc is not installed: pip install 'meterseal[compile]'") from None
    done = subprocess.run([sys.executable, "-m", __name__, str(work)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise CompileError("mypyc or the C compiler failed; its last lines:\n  "
                           + "\n  ".join(output[-12:]) + "\nA C compiler and the Python headers "
                           f"({sysconfig.get_paths()['include']}) are needed (Debian: apt-get "
                           "install gcc python3-dev).")


def build(target=None):
    """Compiles the detectors into ``target`` (default native.compiled_dir(); replaced whole);
    returns seconds taken."""
    started = time.monotonic()
    target = Path(target or native.compiled_dir())
    with tempfile.TemporaryDirectory(prefix="meterseal-mypyc-") as scratch:
        work = Path(scratch)
        package = _stage(work)
        _compile_in_child(work)
        built = target.with_name(target.name + ".new")
        shutil.rmtree(built, ignore_errors=True)
        shutil.copytree(work / "out" / "meterseal" / "fraud_rules", built)
        (built / native.MANIFEST).write_text(json.dumps({
            "extension_suffix": native.extension_suffix(),
            "mypy_version": metadata.version("mypy"),
            "sources": native.source_digests(package),
        }, indent=1, sort_keys=True) + "\n")
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return time.monotonic() - started


if __name__ == "__main__":
    _compile(Path(sys.argv[1]))
