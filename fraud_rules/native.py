"""The detectors compiled to C by mypyc, used when they are built from exactly this source.

The Python source stays the reference: mypyc compiles the same files (``meterseal
compile-detectors`` builds them into ``_compiled/`` beside this package, with a manifest of the
source they came from), and the compiled modules take about a fifth less CPU per record, which
keeps the detectors within their share of the host's ingest cost (docs/detectors.md). A build
from other source than the package's present files, or for another interpreter, is never
loaded: an edited detector runs as written, in Python, until it is compiled again.

In the environment, ``METERSEAL_PURE_PYTHON=1`` runs the Python source even when a build is fresh
(to compare the two, or to debug), and ``METERSEAL_COMPILED_DIR`` puts the build elsewhere (an
installed package's directory may be read-only).
"""

import hashlib
import importlib
import json
import os
import sys
import sysconfig
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
PURE_PYTHON_ENV = "METERSEAL_PURE_PYTHON"
COMPILED_DIR_ENV = "METERSEAL_COMPILED_DIR"
# mypyc's name for the build, whose shared library is the package's module GROUP__mypyc.
GROUP = "compiled"
# The modules a record passes through; evaluate, params and facts run once per run or are
# subclassed by the host (Facts), so they stay Python.
MODULES = ("engine", "finding", "stats", "dispenser_integrity", "config_events", "flow_drift",
           "wetstock", "scale")


def compiled_dir():
    """Where the build is: $METERSEAL_COMPILED_DIR, else ``_compiled`` beside the source."""
    return Path(os.environ.get(COMPILED_DIR_ENV) or PACKAGE_DIR / "_compiled")


def extension_suffix():
    """The file suffix of this interpreter's extension modules (its ABI)."""
    return sysconfig.get_config_var("EXT_SUFFIX")


def source_digests(package_dir=PACKAGE_DIR):
    """{file name: SHA-256} of every Python file of the package: the compiled modules call the
    others, so a change to any of them makes a build stale."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(package_dir.glob("*.py"))}


def build_state(directory=None):
    """("fresh" | "stale" | "absent" | "disabled", why) of the build in ``directory`` (default
    compiled_dir())."""
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return "disabled", f"{PURE_PYTHON_ENV}=1"
    try:
        manifest = json.loads(((directory or compiled_dir()) / MANIFEST).read_text())
    except FileNotFoundError:
        return "absent", "not built; meterseal compile-detectors builds it"
    except (OSError, ValueError) as exc:
        return "stale", f"unreadable manifest ({exc})"
    if manifest.get("extension_suffix") != extension_suffix():
        return "stale", f"built for {manifest.get('extension_suffix')}, not {extension_suffix()}"
    built, present = manifest.get("sources", {}), source_digests()
    changed = sorted(name for name in set(built) | set(present)
                     if built.get(name) != present.get(name))
    if changed:
        return "stale", f"built from other source ({', '.join(changed)})"
    return "fresh", f"mypyc {manifest.get('mypy_version', '?')}"


_state = ("not loaded", "the package was not imported through fraud_rules/__init__.py")


def use_compiled(package_path):
    """Put a fresh build ahead of the source on the package's import path (its ``__path__``),
    before any detector module is imported."""
    global _state
    _state = build_state()
    if _state[0] != "fresh":
        return
    package_path.insert(0, str(compiled_dir()))
    try:  # the modules' shared library: one that cannot load (another libc) is not used
        importlib.import_module(f"{__package__}.{GROUP}__mypyc")
    except ImportError as exc:
        package_path.remove(str(compiled_dir()))
        _state = ("unloadable", str(exc))


def compiled():
    """True when the detector modules in use were loaded from the compiled build."""
    engine = sys.modules.get(f"{__package__}.engine")
    return bool(engine and str(getattr(engine, "__file__", "")).endswith(extension_suffix()))


def describe():
    """One line for reports: which detectors run and why."""
    state, why = _state
    if compiled():
        return f"compiled ({why})"
    return f"pure Python (compiled build {state}: {why})"
