"""HAL for RP2040 boards (Raspberry Pi Pico): machine.UART, the littlefs filesystem, machine.WDT,
a GPIO seal switch.

RS-485 needs an auto-direction transceiver in master mode (MicroPython's rp2 UART drives no DE
pin); a passive tap never transmits. Board wiring is data below; esp32.py has the same shape.
"""

import os
import time

import machine

# UART number -> (tx, rx) GPIOs: the Pico's default pins for each UART.
_UART_PINS = {0: (0, 1), 1: (4, 5)}
_PARITY = {"N": None, "E": 0, "O": 1}
_SEAL_PIN = 14  # to ground through the seal switch: reads 0 while the seal is closed
_STORAGE_ROOT = "/data"
_WATCHDOG_MAX_MS = 8388  # the RP2040 watchdog counter's limit
_RESET_CAUSES = (
    ("PWRON_RESET", "power_on"),
    ("WDT_RESET", "watchdog"),
)
# The RTC counts from 2000-01-01 on the boards (time.gmtime(0) tells); records use 1970.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0

_seal_pin = _SEAL_PIN


def setup(storage_root=None, seal_input=None):
    """storage_root: a directory on the flash filesystem; seal_input: a GPIO number."""
    global _STORAGE_ROOT, _seal_pin
    if storage_root is not None:
        _STORAGE_ROOT = storage_root
    if seal_input is not None:
        _seal_pin = seal_input


class _Serial:
    def __init__(self, uart):
        self._uart = uart

    def read(self):
        return self._uart.read() or b""  # timeout=0: whatever is buffered, None if nothing

    def write(self, data):
        return self._uart.write(data)

    def close(self):
        self._uart.deinit()


def open_serial(port, baudrate, bits, parity, stop):
    tx, rx = _UART_PINS[port]
    return _Serial(machine.UART(port, baudrate=baudrate, bits=bits, parity=_PARITY[parity],
                                stop=stop, tx=machine.Pin(tx), rx=machine.Pin(rx), timeout=0,
                                rxbuf=1024))


ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff


def wall_ms():
    return time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000


def set_wall_ms(ms):
    t = time.gmtime(ms // 1000 - _EPOCH_OFFSET_S)
    # RTC tuple: year, month, day, weekday, hours, minutes, seconds, subseconds (ignored here).
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def storage_root():
    try:
        os.stat(_STORAGE_ROOT)
    except OSError:
        os.mkdir(_STORAGE_ROOT)
    return _STORAGE_ROOT


def unique_id():
    return machine.unique_id()


def watchdog(timeout_ms):
    if timeout_ms > _WATCHDOG_MAX_MS:
        raise ValueError("watchdog timeout %d ms: the RP2040 allows at most %d ms"
                         % (timeout_ms, _WATCHDOG_MAX_MS))
    return machine.WDT(timeout=timeout_ms)


def seal_closed():
    return machine.Pin(_seal_pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def reset_cause():
    cause = machine.reset_cause()
    for name, meaning in _RESET_CAUSES:
        if getattr(machine, name, None) == cause:
            return meaning
    return "unknown"
