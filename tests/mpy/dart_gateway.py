# The DART driver on a pty, for tests/test_gateway_dart_driver.py and test_gateway_pulses.py:
# argv[1] is a JSON configuration; every recorder observation is printed as one JSON line.
# A test double for the recorder, which is built and tested on its own. It keeps totalizers as
# the recorder's State does: config "totalizers" {"address,nozzle": [mL, amount]} is what a
# previous run left, and with "cut_after_sale" the process dies right after the first sale's
# end totals are kept (a power cut before the pump is reset).
import json
import sys
import termios
import time

import asyncio
from meterseal.firmware.drivers import dart as driver
from meterseal.firmware.drivers import pulses

_VTIME = 5
_VMIN = 6


class PtySerial:
    """The HAL serial interface over a tty path: read() returns what is there, never blocks."""

    def __init__(self, path):
        self._file = open(path, "r+b", buffering=0)
        fd = self._file.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        # VMIN = VTIME = 0: a read returns at once with whatever has arrived.
        attrs[6][_VMIN] = 0
        attrs[6][_VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def read(self):
        return self._file.read(256) or b""

    def write(self, data):
        self._file.write(data)

    def close(self):
        self._file.close()


class Clock:
    def ticks_ms(self):
        return time.ticks_ms()

    measure_ms = ticks_ms  # durations on the same clock, as on a board

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def wall_ms(self):
        return time.time_ns() // 1000000


def plain(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _key(device):
    return "%d,%d" % (device["dispenser_address"], device["nozzle"])


def emit(op, **fields):
    fields["op"] = op
    print(json.dumps(plain(fields)))


class PrintingRecorder:
    def __init__(self, totalizers, cut_after_sale):
        self.seq = 0
        self.totalizers = totalizers
        self.cut_after_sale = cut_after_sale

    def sale(self, device, body):
        self.seq += 1
        emit("sale", seq=self.seq, device=device, body=body)
        return self.seq

    def event(self, event_type, device=None, **fields):
        emit("event", event_type=event_type, device=device, fields=fields)

    def device_facts(self, device_key, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        emit("device_facts", device_key=device_key, identity=identity, software_id=software_id,
             param_checksum=param_checksum, k_factors=k_factors)

    def totalizer(self, device, totalizer_ml, amount_totalizer_minor=None, keep=False):
        emit("totalizer", device=device, totalizer_ml=totalizer_ml,
             amount_totalizer_minor=amount_totalizer_minor)
        self.totalizers[_key(device)] = [totalizer_ml, amount_totalizer_minor]
        if self.cut_after_sale and self.seq:
            emit("cut")
            sys.exit(0)

    def last_totalizer(self, device):
        return self.totalizers.get(_key(device))

    def link_state(self, link, up, error_count):
        emit("link_state", link=link, up=up, error_count=error_count)


async def main(config):
    recorder = PrintingRecorder(config.get("totalizers", {}), config.get("cut_after_sale"))
    clock = Clock()
    pulse_inputs = {}
    for address, path in config.get("pulsers", {}).items():
        channel = pulses.PulserChannel(PtySerial(path), int(address))
        pulse_inputs[int(address)] = channel
        asyncio.create_task(channel.run())
    options = config.get("options", {})
    sealed = config.get("sealed_k_factors")
    if sealed:
        options["sealed_k_factors"] = {int(a): tuple(k) for a, k in sealed.items()}
    port = PtySerial(config["port"])
    addresses = tuple(config.get("addresses", (0x50,)))
    if config["mode"] == "master":
        policy = driver.authorize_on_lift
        if config.get("preset"):
            policy = driver.preset_policy(**config["preset"])
        gateway = driver.DartMaster(port, recorder, clock, addresses, policy=policy,
                                    pulse_inputs=pulse_inputs, **options)
    else:
        # The tap gets the read function only: it holds nothing that could transmit.
        gateway = driver.DartTap(port.read, recorder, clock, addresses,
                                 pulse_inputs=pulse_inputs, **options)
    emit("ready")
    await gateway.run()


asyncio.run(main(json.loads(sys.argv[1])))
