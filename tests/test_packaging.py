"""The distribution installs one namespace, meterseal.*, and nothing at top level."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SUBPACKAGES = ("protocol", "firmware", "host", "fraud_rules", "hil")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path_factory.mktemp("source") / "meterseal"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("meterseal-*.whl")
    return path


def test_wheel_holds_only_the_meterseal_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"meterseal", wheel.name.split("-py")[0] + ".dist-info"}
    for package in SUBPACKAGES:
        assert f"meterseal/{package}/__init__.py" in names
    # The MicroPython scripts the demo and benchmark run ship with the package.
    assert "meterseal/hil/gateway_scripts/drill_gateway.py" in names
    assert not any(name.startswith("meterseal/tests") for name in names)


def test_normal_install_imports_every_subpackage_and_the_console_entry(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True,
    )
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        + "".join(f"import meterseal.{p};" for p in SUBPACKAGES)
        + "import meterseal.host.cli, meterseal.protocol.cbor as m; print(m.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target))
    entry_points = next(target.glob("meterseal-*.dist-info")) / "entry_points.txt"
    assert "meterseal = meterseal.host.cli:main" in entry_points.read_text()
    assert not (target / "protocol").exists() and not (target / "host").exists()
