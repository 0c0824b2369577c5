"""Simulated time for emulators and scenarios.

A running clock advances ``speed`` simulated seconds per real second, so a day of trade fits in
minutes. A stepped clock (``speed=0``) moves only when told to, which makes a test or a seeded
scenario exactly repeatable.

``publish(path)`` shares the clock with gateway processes: the file says "SIM_MS REAL_MS SPEED"
(simulated time SIM_MS at Unix time REAL_MS, running SPEED times real time since) and is replaced
whole at every step; the unix HAL reads it when METERSEAL_SIM_CLOCK names it, so the gateway's
records carry the simulated day's times.
"""

import os
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
        self._published = None

    def now(self):
        """Simulated seconds since the Unix epoch (UTC)."""
        with self._lock:
            return self._now_held()

    def _now_held(self):
        # The caller holds the lock.
        return self._start_s + self._stepped_s + (time.monotonic() - self._real_start) * self.speed

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
            if self._published:
                self._write_published()

    def publish(self, path):
        """Keep the file at ``path`` telling this clock's time (see the module's docstring)."""
        with self._lock:
            self._published = str(path)
            self._write_published()

    def _write_published(self):
        real_ns = time.time_ns()
        sim_ms = round(self._now_held() * 1000)
        partial = self._published + ".partial"
        with open(partial, "w") as file:
            file.write(f"{sim_ms} {real_ns // 1000000} {self.speed!r}\n")
        os.replace(partial, self._published)

    def sleep(self, seconds):
        """Let ``seconds`` of simulated time pass: really sleep on a running clock, step a
        stepped one."""
        if self.speed:
            time.sleep(seconds / self.speed)
        else:
            self.advance(seconds)
