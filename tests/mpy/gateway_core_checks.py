# The portable gateway core on both interpreters: configuration checks naming the key, the
# supervisor's feeding rule on a simulated clock, the HAL chosen by sys.platform.
# heapsize: 192K
import sys

from meterseal.firmware import config, supervisor


def base():
    return {
        "gateway_id": "MS-GW-0001",
        "host": {"address": "ingest.example.net", "port": 7455, "ca_file": "/etc/host-ca.pem"},
        "devices": [
            {"name": "pumps", "protocol": "dart", "port": "/dev/ttyUSB0", "mode": "master",
             "addresses": [0x50, 0x51]},
            {"name": "scale", "protocol": "mtsics", "port": 1},
        ],
    }


c = config.parse(base())
assert c.gateway_id == "MS-GW-0001" and c.host.tls is True and c.paths.storage_root is None
assert c.host.server_name == "ingest.example.net"  # the address, unless given
pumps, scale = c.devices
assert (pumps.baudrate, pumps.bits, pumps.parity, pumps.stop) == (9600, 8, "O", 1)
assert pumps.mode == "master" and pumps.addresses == (0x50, 0x51) and pumps.pulse_input is None
assert scale.port == 1 and scale.parity == "N" and scale.mode is None and scale.addresses == ()
assert c.watchdog.timeout_ms == 8000 and c.watchdog.checkin_ms == 5000
assert c.intervals.heartbeat_s == 300 and c.journal.segments == 32 and c.seal.input is None


def fails(change, key):
    obj = base()
    change(obj)
    try:
        config.parse(obj)
    except config.ConfigError as exc:
        assert exc.key == key, (exc.key, key)
        assert str(exc).startswith(key + ": "), str(exc)
        return
    raise AssertionError("accepted a configuration with a bad " + key)


fails(lambda o: o["devices"][1].pop("port"), "devices[1].port")
fails(lambda o: o["devices"][0].pop("mode"), "devices[0].mode")
fails(lambda o: o["devices"][0]["addresses"].append(0x70), "devices[0].addresses[2]")
fails(lambda o: o["devices"][1].update({"serial": {"parity": "X"}}), "devices[1].serial.parity")
fails(lambda o: o["devices"][1].update({"name": o["devices"][0]["name"]}), "devices[1].name")
fails(lambda o: o["host"].update({"port": 70000}), "host.port")
fails(lambda o: o.update({"watchdog": {"timeout_ms": 2000, "checkin_ms": 5000}}),
      "watchdog.checkin_ms")
fails(lambda o: o.update({"gateway_id": "no spaces"}), "gateway_id")
fails(lambda o: o.update({"intervals": {"heartbeat": 60}}), "intervals.heartbeat")


class Dog:
    feeds = 0

    def feed(self):
        self.feeds += 1


class Board:
    now = 1000
    dog = Dog()

    def ticks_ms(self):
        return self.now

    measure_ms = ticks_ms  # durations on the same clock, as on a board

    def ticks_diff(self, a, b):
        return a - b

    def reset_cause(self):
        return "watchdog"

    def watchdog(self, timeout_ms):
        return self.dog


board = Board()
sup = supervisor.Supervisor(board, 1000)
assert sup.reset_cause == "watchdog"
sup.register("reader", 200)
sup.register("uplink", 500)
board.now += 200
assert sup.stalled() == []
board.now += 1
assert sup.stalled() == ["reader"]
sup.check_in("reader")
board.now += 300
sup.check_in("reader")
assert sup.stalled() == ["uplink"]
try:
    sup.register("slow", 1000)
    raise AssertionError("a limit as long as the watchdog timeout was accepted")
except ValueError:
    pass

if sys.implementation.name == "micropython":
    from meterseal.firmware import hal

    assert hal.board().__name__.endswith("hal.unix")

print("PASS gateway_core_checks")
