"""The unix HAL on the real MicroPython unix port: serial over a pty, storage, clock, seal file,
and the software watchdog that kills the process and leaves "watchdog" for the next boot."""

import signal
import threading
from pathlib import Path

from meterseal.hil import micropython
from meterseal.hil.serial_link import PtyPort

SCRIPTS = Path(__file__).parent / "mpy"


def _run(name, image, *args):
    return micropython.run(SCRIPTS / name, image, args=args, timeout=60)


def test_serial_exchange_over_a_pty_both_ways_without_blocking(device_image):
    pty = PtyPort()
    # Longer than one read chunk, so the gateway must poll more than once to get it all.
    reply = b"from-host " + bytes(range(48, 58)) * 100 + b"\n"
    outcome = {}
    gateway = threading.Thread(
        target=lambda: outcome.update(result=_run("hal_unix_serial.py", device_image, pty.path))
    )
    gateway.start()
    try:
        heard = b""
        while not heard.endswith(b"\n") and gateway.is_alive():
            heard += pty.read(0.1)
        assert heard == b"from-gateway\n"
        pty.write(reply)
        gateway.join(60)
    finally:
        pty.close()
    result = outcome["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    first, got = result.stdout.splitlines()
    assert first == "b''"
    assert got == repr(reply)


def test_storage_clock_seal_ids_and_serial_errors(device_image, tmp_path):
    result = _run("hal_unix_local.py", device_image, tmp_path / "gw")
    assert result.stdout.strip().splitlines()[-1] == "PASS hal_unix_local", result.stdout


def _boot_cause(image, root):
    result = _run("watchdog_boot.py", image, root, "cause")
    assert result.returncode == 0, result.stdout
    return result.stdout.split()[-1]


def test_unfed_watchdog_kills_the_process_and_the_next_boot_says_why(device_image, tmp_path):
    for mode in ("idle", "busy"):
        root = tmp_path / mode
        result = _run("watchdog_boot.py", device_image, root, mode)
        assert result.returncode == -signal.SIGKILL, result.stdout
        assert result.stdout.split() == ["boot", "power_on"]
        assert _boot_cause(device_image, root) == "watchdog"
        # The cause belongs to one boot: the boot after that one starts clean.
        assert _boot_cause(device_image, root) == "power_on"
