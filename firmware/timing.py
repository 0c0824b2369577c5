"""Millisecond ticks: MicroPython's own, or stand-ins on CPython (which has none), so gateway code
runs unchanged on both. The asyncio sleep is aio.py's, kept apart so that code which never
sleeps (the journal) does not pull asyncio into RAM."""

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b
