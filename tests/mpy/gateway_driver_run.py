# Runs one gateway driver against a serial device path on the MicroPython unix port, with a
# recorder test double that prints every observation as one JSON line; the pytest tests
# (test_gateway_scale_driver.py, test_gateway_tank_driver.py) read them.
#
#   micropython gateway_driver_run.py scale|tank PATH CONFIG_JSON
#
# CONFIG_JSON holds the driver's keyword arguments plus "max_run_ms", a safety bound on the run.
# The driver's persistable state is printed as {"obs": "state", ...} whenever it changes, so a
# test can stop the process and start it again with that state, as the gateway's State would.

import asyncio
import json
import sys

import termios

from meterseal.firmware.drivers.mtsics import ScaleDriver
from meterseal.firmware.drivers.tls import TankGaugeDriver

# Indices into termios' c_cc on Linux; the unix port's termios module does not name them.
_VTIME = 5
_VMIN = 6
_READ_CHUNK = 256
_STATE_POLL_MS = 10


class TtyPort:
    """The HAL serial interface over a tty path. VMIN = VTIME = 0 makes read() return at once
    with what is there, b"" when nothing is."""

    def __init__(self, path):
        self._file = open(path, "r+b")
        descriptor = self._file.fileno()
        termios.setraw(descriptor)
        attributes = termios.tcgetattr(descriptor)
        attributes[6][_VMIN] = 0
        attributes[6][_VTIME] = 0
        termios.tcsetattr(descriptor, termios.TCSANOW, attributes)

    def read(self):
        return self._file.read(_READ_CHUNK) or b""

    def write(self, data):
        self._file.write(data)

    def close(self):
        self._file.close()


def emit(obs, **fields):
    fields["obs"] = obs
    print(json.dumps(fields))


class PrintingRecorder:
    """The Driver -> Recorder interface of docs/gateway.md, printed instead of signed."""

    def weighing(self, device, body):
        emit("weighing", device=device, body=body)

    def tank_inventory(self, device, body):
        emit("tank_inventory", device=device, body=body)

    def tank_delivery(self, device, body):
        emit("tank_delivery", device=device, body=body)

    def event(self, event_type, device=None, **fields):
        emit("event", event_type=event_type, device=device, fields=fields)

    def device_facts(self, device_key, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        emit("device_facts", device=device_key, identity=identity, software_id=software_id,
             param_checksum=param_checksum)

    def link_state(self, link, up, error_count):
        emit("link_state", link=link, up=up, error_count=error_count)


async def guarded(coroutine):
    try:
        await coroutine
    except Exception as error:  # the test fails on this line instead of waiting
        emit("crash", error=repr(error))
        raise


async def watch_state(state):
    last = None
    while True:
        current = state()
        if current != last:
            emit("state", value=current)
            last = current
        await asyncio.sleep_ms(_STATE_POLL_MS)


async def main(kind, path, config):
    max_run_ms = config.pop("max_run_ms")
    port = TtyPort(path)
    recorder = PrintingRecorder()
    if kind == "scale":
        driver = ScaleDriver(port, recorder, **config)
        state = lambda: driver.last_sale_number  # noqa: E731
    else:
        driver = TankGaugeDriver(port, recorder, **config)
        state = driver.seen_deliveries
    asyncio.create_task(guarded(driver.run()))
    asyncio.create_task(watch_state(state))
    await asyncio.sleep_ms(max_run_ms)
    port.close()


asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
