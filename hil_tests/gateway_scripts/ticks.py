"""Microsecond ticks for the gateway scripts' timings: MicroPython's wrapping ticks, or a CPython
stand-in so the same scripts run on both interpreters."""

import time

try:
    now_us = time.ticks_us
    elapsed_us = time.ticks_diff
except AttributeError:  # CPython

    def now_us():
        return time.perf_counter_ns() // 1000

    def elapsed_us(end, start):
        return end - start
