"""The gateway configuration: the documented example loads, and each class of mistake stops
start-up with a ConfigError that names the key."""

import copy
import json
import re
from pathlib import Path

import pytest

from meterseal.firmware import config
from meterseal.hil import micropython

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "gateway.example.json"
OPERATIONS = EXAMPLE.parent / "operations.md"


@pytest.fixture
def example():
    return json.loads(EXAMPLE.read_text())


def test_the_documented_example_loads():
    conf = config.load(str(EXAMPLE))
    assert conf.gateway_id == "MS-GW-0001"
    assert (conf.host.address, conf.host.port, conf.host.tls) == ("ingest.example.net", 7455, True)
    assert conf.host.ca_file == "/etc/meterseal/host-ca.pem"
    assert conf.host.server_name == "ingest.example.net"  # the address, unless given
    dart, scale, tank = conf.devices
    assert (dart.protocol, dart.mode, dart.addresses) == ("dart", "tap", (0x50, 0x51))
    assert (dart.baudrate, dart.bits, dart.parity, dart.stop) == (9600, 8, "O", 1)
    assert dart.pulse_input.port == "/dev/ttyUSB3" and dart.pulse_input.pulses_per_litre == 100
    assert dart.decimals == (2, 2, 3) and dart.grades == (92, 95, 98) + (0,) * 12
    assert scale.decimals is None and tank.grades is None
    assert (scale.protocol, scale.parity, scale.mode, scale.addresses) == ("mtsics", "N", None, ())
    assert (tank.protocol, tank.bits, tank.addresses) == ("tls", 7, (1, 2, 3))
    assert conf.paths.storage_root == "/var/lib/meterseal"
    assert conf.seal.input == "/sys/class/gpio/gpio17/value"
    assert (conf.watchdog.timeout_ms, conf.watchdog.checkin_ms) == (8000, 5000)
    assert (conf.intervals.heartbeat_s, conf.intervals.tank_poll_s) == (300, 600)
    assert conf.journal.segment_bytes == 65536
    assert conf.clock.step_threshold_ms == 2000


def test_the_example_loads_the_same_on_micropython(device_image, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(
        "from meterseal.firmware import config\n"
        f"c = config.load({str(EXAMPLE)!r})\n"
        "print(c.gateway_id, [d.name for d in c.devices], c.devices[2].addresses)\n"
    )
    result = micropython.run(script, device_image, heapsize="192K")
    assert result.stdout.strip() == "MS-GW-0001 ['forecourt', 'deli-scale', 'tank-gauge'] (1, 2, 3)"


def _key_paths(value, path=""):
    # `grades` maps nozzle numbers (data, not key names) to grades.
    if isinstance(value, dict) and not path.endswith(".grades"):
        for name, item in value.items():
            yield from _key_paths(item, path + "." + name if path else name)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for item in value:
            yield from _key_paths(item, path + "[i]")
    else:
        yield path


def test_operations_md_shows_the_example_and_documents_each_of_its_keys(example):
    text = OPERATIONS.read_text()
    shown = re.search(r"The example below is `docs/gateway.example.json`.*?```json\n(.*?)```",
                      text, re.S)
    assert json.loads(shown.group(1)) == example
    documented = set(re.findall(r"^\| `([^`]+)` \|", text, re.M))
    assert sorted(set(_key_paths(example)) - documented) == []


def _set(path, value):
    def change(obj):
        *parents, last = path
        for step in parents:
            obj = obj[step]
        if value is _DELETE:
            del obj[last]
        else:
            obj[last] = value
    return change


_DELETE = object()

BAD = [
    # missing
    (_set(["gateway_id"], _DELETE), "gateway_id", "missing"),
    (_set(["host"], _DELETE), "host", "missing"),
    (_set(["host", "address"], _DELETE), "host.address", "missing"),
    (_set(["devices"], _DELETE), "devices", "missing"),
    (_set(["devices", 1, "port"], _DELETE), "devices[1].port", "missing"),
    (_set(["devices", 0, "mode"], _DELETE), "devices[0].mode", "missing"),
    (_set(["devices", 0, "addresses"], _DELETE), "devices[0].addresses", "missing"),
    (_set(["devices", 0, "pulse_input", "pulses_per_litre"], _DELETE),
     "devices[0].pulse_input.pulses_per_litre", "missing"),
    (_set(["devices", 0, "decimals", "price"], _DELETE), "devices[0].decimals.price", "missing"),
    (_set(["devices", 0, "grades"], _DELETE), "devices[0].grades", "go together"),
    (_set(["devices", 0, "decimals"], _DELETE), "devices[0].decimals", "go together"),
    # wrong type
    (_set(["devices"], {}), "devices", "non-empty list"),
    (_set(["devices"], []), "devices", "non-empty list"),
    (_set(["devices", 2], "tank"), "devices[2]", "object"),
    (_set(["host", "port"], "7455"), "host.port", "whole number"),
    (_set(["host", "tls"], "yes"), "host.tls", "true or false"),
    (_set(["host", "ca_file"], _DELETE), "host.ca_file", "TLS needs the host's CA certificate"),
    (_set(["host", "server_name"], ""), "host.server_name", "non-empty string"),
    (_set(["devices", 1, "port"], True), "devices[1].port", "device path"),
    (_set(["journal"], 5), "journal", "object"),
    (_set(["devices", 0, "decimals"], [2, 2, 3]), "devices[0].decimals", "object"),
    (_set(["devices", 0, "decimals", "volume"], "2"), "devices[0].decimals.volume",
     "whole number"),
    (_set(["devices", 0, "grades"], [92, 95]), "devices[0].grades", "object"),
    (_set(["devices", 0, "grades"], {}), "devices[0].grades", "non-empty"),
    (_set(["devices", 0, "grades", "1"], True), "devices[0].grades.1", "grade 1..99"),
    # out of range or not one of the choices
    (_set(["host", "port"], 0), "host.port", "1..65535"),
    (_set(["gateway_id"], "x" * 33), "gateway_id", "1..32"),
    (_set(["gateway_id"], "gw 1"), "gateway_id", "A-Z"),
    (_set(["devices", 0, "protocol"], "modbus"), "devices[0].protocol", "dart, mtsics, tls"),
    (_set(["devices", 0, "mode"], "slave"), "devices[0].mode", "master, tap"),
    (_set(["devices", 0, "serial", "baudrate"], 9601), "devices[0].serial.baudrate", "9600"),
    (_set(["devices", 0, "serial", "stop"], True), "devices[0].serial.stop", "1, 2"),
    (_set(["devices", 0, "addresses", 1], 0x70), "devices[0].addresses[1]", "80..111"),
    (_set(["devices", 2, "addresses"], [1, 100]), "devices[2].addresses[1]", "1..99"),
    (_set(["devices", 0, "addresses"], [80, 80]), "devices[0].addresses", "twice"),
    (_set(["watchdog", "checkin_ms"], 8000), "watchdog.checkin_ms", "below"),
    (_set(["intervals", "heartbeat_s"], 1), "intervals.heartbeat_s", "10..86400"),
    (_set(["clock"], {"step_threshold_ms": 50}), "clock.step_threshold_ms", "100..3600000"),
    (_set(["clock"], {"drift_ms": 1}), "clock.drift_ms", "unknown key"),
    (_set(["devices", 0, "decimals", "amount"], 9), "devices[0].decimals.amount", "0..8"),
    (_set(["devices", 0, "grades", "16"], 91), "devices[0].grades", "1..15"),
    (_set(["devices", 0, "grades", "01"], 91), "devices[0].grades", "1..15"),
    (_set(["devices", 0, "grades", "first"], 91), "devices[0].grades", "1..15"),
    (_set(["devices", 0, "grades", "2"], 0), "devices[0].grades.2", "grade 1..99"),
    (_set(["devices", 0, "grades", "2"], 100), "devices[0].grades.2", "grade 1..99"),
    # a master reads the pump's own decimals and grades
    (_set(["devices", 0, "mode"], "master"), "devices[0].decimals", "only for mode tap"),
    # duplicates across devices
    (_set(["devices", 2, "name"], "forecourt"), "devices[2].name", "devices[0]"),
    (_set(["devices", 1, "port"], "/dev/ttyUSB0"), "devices[1].port", "devices[0]"),
    # keys the gateway does not know (typos must not fall back to defaults)
    (_set(["intervals", "heartbeat"], 60), "intervals.heartbeat", "unknown key"),
    (_set(["devices", 1, "mode"], "tap"), "devices[1].mode", "unknown key"),
    (_set(["devices", 1, "addresses"], [1]), "devices[1].addresses", "unknown key"),
    (_set(["devices", 2, "grades"], {"1": 92}), "devices[2].grades", "unknown key"),
    (_set(["devices", 0, "decimals", "quantity"], 2), "devices[0].decimals.quantity",
     "unknown key"),
    (_set(["colour"], "blue"), "colour", "unknown key"),
]


@pytest.mark.parametrize("change, key, words", BAD, ids=[f"{k}-{w}" for _, k, w in BAD])
def test_bad_configuration_names_the_key(example, change, key, words):
    bad = copy.deepcopy(example)
    change(bad)
    with pytest.raises(config.ConfigError) as exc:
        config.parse(bad)
    assert exc.value.key == key
    assert str(exc.value).startswith(f"{key}: ") and words in str(exc.value)


def test_unreadable_or_malformed_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(config.ConfigError, match="missing.json: cannot read"):
        config.load(str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text('{"gateway_id": ')
    with pytest.raises(config.ConfigError, match="broken.json: not valid JSON"):
        config.load(str(broken))
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(config.ConfigError, match=r"\(top level\): expected an object"):
        config.load(str(listed))


def test_dart_decimals_and_grades_are_optional_and_go_together(example):
    tap = copy.deepcopy(example)
    del tap["devices"][0]["decimals"], tap["devices"][0]["grades"]
    assert (config.parse(tap).devices[0].decimals, config.parse(tap).devices[0].grades) == (
        None, None)
    master = copy.deepcopy(tap)
    master["devices"][0]["mode"] = "master"
    master["devices"][0]["grades"] = {"1": 92}
    with pytest.raises(config.ConfigError, match=r"^devices\[0\]\.grades: only for mode tap"):
        config.parse(master)
    tap["devices"][0]["decimals"] = {"volume": 3, "amount": 0, "price": 2}
    tap["devices"][0]["grades"] = {"15": 7, "2": 99}
    device = config.parse(tap).devices[0]
    assert device.decimals == (3, 0, 2) and device.grades == (0, 99) + (0,) * 12 + (7,)


def test_the_tap_gets_the_configured_decimals_and_grades(example, monkeypatch):
    """firmware/main.py hands a tap device's decimals and grades to the driver, which uses them
    until the line shows DC7 (tests/test_gateway_dart_driver.py); a master gets neither."""
    from meterseal.firmware import main
    from meterseal.firmware.drivers import dart

    built = []

    class Driver:
        def __init__(self, *args, **options):
            built.append(options)

        async def run(self):
            pass

    class Board:
        def open_serial(self, *args):
            return self

        def read(self):
            return b""

        def write(self, data):
            pass

    monkeypatch.setattr(dart, "DartTap", Driver)
    monkeypatch.setattr(dart, "DartMaster", Driver)
    tap = config.parse(example).devices[0]
    master = copy.deepcopy(example)
    master["devices"][0]["mode"] = "master"
    del master["devices"][0]["decimals"], master["devices"][0]["grades"]
    class Supervisor:
        registered = []

        def register(self, name, max_silence_ms):
            self.registered.append(name)

    sup = Supervisor()
    for device in (tap, config.parse(master).devices[0]):
        for task in main._dart_task(device, Board(), object(), sup):
            task.close()
    assert built[0]["decimals"] == (2, 2, 3) and built[0]["grades"] == (92, 95, 98) + (0,) * 12
    assert "decimals" not in built[1] and "grades" not in built[1]
    # Both drivers check in with the supervisor under the device's name.
    assert [b["supervisor"] for b in built] == [(sup, "dart:forecourt")] * 2
    assert sup.registered == ["dart:forecourt"] * 2
