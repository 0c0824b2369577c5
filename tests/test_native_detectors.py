"""The compiled detectors (fraud_rules/native.py, native_build.py): a build is loaded only while
it matches the source, and a real mypyc build finds exactly what the Python source finds."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

from meterseal.fraud_rules import native, native_build
from meterseal.host import cli

# Feeds the small evaluation fleet through the detectors as the package loads them, and prints
# which ones ran, every finding and the final checkpoint as JSON.
_FEED = r"""
import dataclasses, json, sys
from meterseal.fraud_rules import Engine, load_params, native
from meterseal.hil.record_fleet import Fleet, load_scenario

fleet = Fleet(load_scenario(sys.argv[1]))
engine = Engine(load_params(), fleet.facts)
findings = []
for record_id, record, _ in fleet.records():
    for found in engine.feed(record_id, record):
        finding = dataclasses.asdict(found)
        finding.pop("extra")
        findings.append(finding)
json.dump({"compiled": native.compiled(), "described": native.describe(),
           "findings": findings, "checkpoint": engine.checkpoint()}, sys.stdout, sort_keys=True)
"""


def _manifest(directory, **changes):
    directory.mkdir(exist_ok=True)
    manifest = {"extension_suffix": native.extension_suffix(), "mypy_version": "2.4.1",
                "sources": native.source_digests()}
    manifest.update(changes)
    (directory / native.MANIFEST).write_text(json.dumps(manifest))


def test_a_build_is_fresh_only_for_this_source_and_this_interpreter(tmp_path, monkeypatch):
    monkeypatch.delenv(native.PURE_PYTHON_ENV, raising=False)
    build = tmp_path / "build"
    assert native.build_state(build)[0] == "absent"
    _manifest(build)
    assert native.build_state(build) == ("fresh", "mypyc 2.4.1")
    # One detector edited since the build: stale, naming the file.
    sources = dict(native.source_digests(), **{"scale.py": "0" * 64})
    _manifest(build, sources=sources)
    assert native.build_state(build) == ("stale", "built from other source (scale.py)")
    # A file the build saw that the package no longer has, or one it did not see.
    _manifest(build, sources=dict(native.source_digests(), **{"gone.py": "0" * 64}))
    assert native.build_state(build) == ("stale", "built from other source (gone.py)")
    sources = native.source_digests()
    del sources["engine.py"]
    _manifest(build, sources=sources)
    assert native.build_state(build) == ("stale", "built from other source (engine.py)")
    _manifest(build, extension_suffix=".cpython-312-x86_64-linux-gnu.so")
    state, why = native.build_state(build)
    assert state == "stale" and why.startswith("built for .cpython-312")
    (build / native.MANIFEST).write_text("{not json")
    assert native.build_state(build)[0] == "stale"
    _manifest(build)
    monkeypatch.setenv(native.PURE_PYTHON_ENV, "1")
    assert native.build_state(build) == ("disabled", "METERSEAL_PURE_PYTHON=1")


def test_a_fresh_build_that_cannot_load_leaves_the_python_detectors_running(tmp_path):
    """A build copied to a machine whose C library cannot load it: the host runs the source."""
    build = tmp_path / "build"
    _manifest(build)
    (build / f"{native.GROUP}__mypyc{native.extension_suffix()}").write_bytes(b"not a library")
    done = subprocess.run(
        [sys.executable, "-c", "from meterseal.fraud_rules import Engine, load_params, native\n"
         "from meterseal.fraud_rules.facts import StaticFacts\n"
         "Engine(load_params(), StaticFacts())\nprint(native.describe())"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**{k: v for k, v in os.environ.items() if k != native.PURE_PYTHON_ENV},
             native.COMPILED_DIR_ENV: str(build)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pure Python (compiled build unloadable: ")


def test_status_reports_the_build_and_fails_unless_it_is_fresh(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(native.PURE_PYTHON_ENV, raising=False)
    monkeypatch.setenv(native.COMPILED_DIR_ENV, str(tmp_path / "build"))
    assert cli.main(["compile-detectors", "--status"]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path / 'build'}: absent (not built; meterseal compile-detectors builds it)\n")
    _manifest(tmp_path / "build")
    assert cli.main(["compile-detectors", "--status"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'build'}: fresh (mypyc 2.4.1)\n"


def test_the_package_digests_cover_every_python_file_of_it():
    digests = native.source_digests()
    assert set(digests) == {path.name for path in native.PACKAGE_DIR.glob("*.py")}
    assert {f"{module}.py" for module in native.MODULES} <= set(digests)
    assert all(len(digest) == 64 for digest in digests.values())


def test_without_mypyc_the_build_says_how_to_get_it(monkeypatch, capsys):
    def missing(name):
        raise native_build.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(native_build.metadata, "version", missing)
    with pytest.raises(native_build.CompileError, match=r"pip install 'meterseal\[compile\]'"):
        native_build.build()
    # Asked for, the build's failure is the command's one-line error.
    assert cli.main(["compile-detectors"]) == 1
    assert "compile-detectors: error: mypyc is not installed" in capsys.readouterr().err
    # `make venv` runs it with --if-possible: it says why and exits 0; the Python detectors run.
    assert cli.main(["compile-detectors", "--if-possible"]) == 0
    assert "stay pure Python (slower, same findings): mypyc is not installed" in (
        capsys.readouterr().err)


def _compiler_or_skip():
    """mypyc, a C compiler and the Python headers: present in CI (.ci/run installs them)."""
    missing = [what for what, present in (
        ("mypy (pip install 'meterseal[compile]')", _installed("mypy")),
        ("a C compiler (gcc)", shutil.which(sysconfig.get_config_var("CC").split()[0])),
        ("the Python headers (python3-dev)",
         (Path(sysconfig.get_paths()["include"]) / "Python.h").exists())) if not present]
    if not missing:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{', '.join(missing)} missing; .ci/run installs them")
    pytest.skip(f"cannot compile the detectors here: {', '.join(missing)} missing")


def _installed(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _feed(scenario, env):
    done = subprocess.run([sys.executable, "-c", _FEED, str(scenario)], capture_output=True,
                          text=True, env=dict(os.environ, **env), timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_real_build_is_loaded_and_finds_exactly_what_the_python_source_finds(tmp_path):
    """mypyc and the C compiler build the package's detectors into a directory of their own; a
    fresh interpreter loads them from there and the fleet's findings and final state are the
    pure-Python source's, to the byte."""
    _compiler_or_skip()
    build = tmp_path / "compiled"
    seconds = native_build.build(build)
    assert seconds > 0
    assert native.build_state(build)[0] == "fresh"
    built = {path.name.split(".")[0] for path in build.glob(f"*{native.extension_suffix()}")}
    assert built == set(native.MODULES) | {"compiled__mypyc"}

    scenario = native.PACKAGE_DIR.parent / "hil_tests" / "scenarios" / "eval_small.toml"
    compiled = _feed(scenario, {native.COMPILED_DIR_ENV: str(build)})
    pure = _feed(scenario, {native.COMPILED_DIR_ENV: str(build), native.PURE_PYTHON_ENV: "1"})
    assert compiled["compiled"] and compiled["described"].startswith("compiled (mypyc ")
    assert not pure["compiled"] and pure["described"].startswith("pure Python")
    rules = {finding["rule"] for finding in pure["findings"]}
    assert len(pure["findings"]) >= 30 and len(rules) >= 8, rules
    assert compiled["findings"] == pure["findings"]
    assert compiled["checkpoint"] == pure["checkpoint"]
