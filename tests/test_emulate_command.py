"""`meterseal emulate` and `meterseal scenario` as a person runs them, in a subprocess."""

import json
import subprocess
import sys
import time

import serial

from meterseal.protocol import mtsics

CLI = [sys.executable, "-m", "meterseal.host.cli"]


def _start(*args):
    process = subprocess.Popen(CLI + ["emulate", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paths = {}
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        role, _, path = line.rstrip("\n").rpartition(": ")
        paths[role] = path
        if role.startswith(("MT-SICS", "pulser", "TLS", "DART master")):
            return process, paths


def _command(process, text):
    process.stdin.write(text + "\n")
    process.stdin.flush()


def _settles_at(client, expected_mg):
    """Poll S until the stable weight is the expected one (console commands land
    asynchronously); False if it never is."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client.write(b"S\r\n")
        reply = mtsics.parse_reply(client.read_until(b"\r\n")[:-2])
        if isinstance(reply, mtsics.WeightReply) and reply.status == "S" and reply.weight.mg == expected_mg:
            return True
        time.sleep(0.05)
    return False


def test_emulated_scale_by_hand_over_its_pty():
    process, paths = _start("scale", "--speed", "20")
    try:
        client = serial.Serial(paths["MT-SICS line (RS-232, 9600 8N1)"], 9600, timeout=2)
        assert _settles_at(client, 0)
        _command(process, "place 500")
        assert _settles_at(client, 500000)
        _command(process, "cheat remote_offset_g 20 remote")
        _command(process, "toggle remote_offset_g on")
        assert _settles_at(client, 520000)
        client.close()
        _command(process, "quit")
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()


def test_emulated_dispenser_answers_console_commands_and_reports_bad_ones():
    process, paths = _start("dispenser", "--nozzle", "1:40:789000", "--nozzle", "3:130:721000",
                            "--cheat", "pulse_scaling_board:3:draws_above:20000")
    try:
        assert paths["DART line (RS-485, 9600 8O1)"].startswith("/dev/")
        _command(process, "cheats")
        _command(process, "fault lightning")
        _command(process, "quit")
        out, _ = process.communicate(timeout=10)
        assert process.returncode == 0
        fitted = json.loads(out[: out.index("}") + 1])
        assert fitted == {"pulse_scaling_board": "pulse_scaling_board size 3 draws above 20000"}
        assert "error: unknown fault 'lightning'" in out
    finally:
        process.kill()


def test_bad_emulate_arguments_are_usage_errors():
    result = subprocess.run(CLI + ["emulate", "dispenser", "--cheat", "pulse_scaling_board:3:sometimes"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "expected always, remote" in result.stderr
    result = subprocess.run(CLI + ["emulate", "dispenser", "--address", "0x20"], capture_output=True, text=True)
    assert result.returncode == 2 and "0x50..0x6F" in result.stderr


def test_scenario_command_reports_a_missing_file_without_a_traceback(tmp_path):
    result = subprocess.run(CLI + ["scenario", str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_scenario_command_replays_and_writes_ground_truth(tmp_path):
    from meterseal.hil import scenario

    day = scenario.__file__.replace("scenario.py", "scenarios/forecourt_day.toml")
    truth = tmp_path / "truth.json"
    result = subprocess.run(CLI + ["scenario", day, "--hours", "8", "--truth", str(truth)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(truth.read_text())
    fuel = [v for v in data["plan"] if v["kind"] == "fuel"]
    sales = data["dispensers"]["0x50"] + data["dispensers"]["0x51"]
    assert len(fuel) == len(sales) > 0 and data["failures"] == []
    assert "pump 0x50:" in result.stdout
