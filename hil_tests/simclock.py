"""Simulated time for emulators and scenarios.

A running clock advances ``speed`` simulated seconds per real second, so a day of trade fits in
minutes. A stepped clock (``speed=0``) moves only when told to, which makes a test or a seeded
scenario exactly repeatable.
"""

import threading
import time

# 2026-01-01T00:00:00Z: simulations start here unless told otherwise.
DEFAULT_EPOCH_S = 1767225600


class SimClock:
    def __init__(self, start_s=DEFAULT_EPOCH_S, speed=1.0, utc_offset_h=8):
        if speed < 0:
            raise ValueError("speed must be >= 0 (0 = stepped by hand)")
        self.speed = speed
        # Shop hours and time-of-day cheats are local; China Standard Time by default.
        self.utc_offset_h = utc_offset_h
        self._start_s = float(start_s)
        self._stepped_s = 0.0
        self._real_start = time.monotonic()
        self._lock = threading.Lock()

    def now(self):
        """Simulated seconds since the Unix epoch (UTC)."""
        with self._lock:
            elapsed = (time.monotonic() - self._real_start) * self.speed
            return self._start_s + self._stepped_s + elapsed

    def now_ms(self):
        return int(self.now() * 1000)

    def local_hour(self):
        """Hour of the local day as a float in [0, 24)."""
        return ((self.now() / 3600.0) + self.utc_offset_h) % 24.0

    def advance(self, seconds):
        """Step simulated time forward (any clock; the only way a stepped clock moves)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._stepped_s += seconds

    def sleep(self, seconds):
        """Let ``seconds`` of simulated time pass: really sleep on a running clock, step a
        stepped one."""
        if self.speed:
            time.sleep(seconds / self.speed)
        else:
            self.advance(seconds)
