"""The HAL functions every `machine` (microcontroller) board shares: UART, flash storage, RTC,
watchdog, seal switch and reset cause. Not named board.py: that would replace hal.board() once
imported. A port module (esp32.py, rp2.py) gives its wiring and limits to `configure()` and
re-exports these functions; its quirks are data here, not branches."""

import os
import time

import machine

_PARITY = {"N": None, "E": 0, "O": 1}
# The RTC counts from 2000-01-01 on the boards (time.gmtime(0) tells); records use 1970.
_EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0

# Set by the port module through configure().
_uart_pins = {}  # UART number -> (tx, rx) GPIOs
_seal_pin = None
_STORAGE_ROOT = "/data"
_reset_causes = ()  # (machine constant name, meaning)
_rtc_microseconds = True  # whether the RTC's 8th datetime field is microseconds (or ignored)
_watchdog_max_ms = None  # None: the port's WDT takes any timeout
_chip = ""


def configure(uart_pins, seal_pin, reset_causes, rtc_microseconds=True, watchdog_max_ms=None,
              chip=""):
    global _uart_pins, _seal_pin, _reset_causes, _rtc_microseconds, _watchdog_max_ms, _chip
    _uart_pins = uart_pins
    _seal_pin = seal_pin
    _reset_causes = reset_causes
    _rtc_microseconds = rtc_microseconds
    _watchdog_max_ms = watchdog_max_ms
    _chip = chip


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
    tx, rx = _uart_pins[port]
    return _Serial(machine.UART(port, baudrate=baudrate, bits=bits, parity=_PARITY[parity],
                                stop=stop, tx=machine.Pin(tx), rx=machine.Pin(rx), timeout=0,
                                rxbuf=1024))


ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff
# Durations signed into records are measured on the ticks (the unix HAL can simulate them).
measure_ms = time.ticks_ms


def wall_ms():
    return time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000


def set_wall_ms(ms):
    t = time.gmtime(ms // 1000 - _EPOCH_OFFSET_S)
    subseconds = ms % 1000 * 1000 if _rtc_microseconds else 0
    # RTC tuple: year, month, day, weekday, hours, minutes, seconds, subseconds.
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], subseconds))


def storage_root():
    try:
        os.stat(_STORAGE_ROOT)
    except OSError:
        os.mkdir(_STORAGE_ROOT)
    return _STORAGE_ROOT


def unique_id():
    return machine.unique_id()


def watchdog(timeout_ms):
    if _watchdog_max_ms is not None and timeout_ms > _watchdog_max_ms:
        raise ValueError("watchdog timeout %d ms: the %s allows at most %d ms"
                         % (timeout_ms, _chip, _watchdog_max_ms))
    return machine.WDT(timeout=timeout_ms)


def seal_closed():
    return machine.Pin(_seal_pin, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def reset_cause():
    cause = machine.reset_cause()
    for name, meaning in _reset_causes:
        if getattr(machine, name, None) == cause:
            return meaning
    return "unknown"
