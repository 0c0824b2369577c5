"""Switchable cheats: *when* a cheat applies, shared by every emulator. *What* it does is the
emulator's business (a dispenser scales pulses, a scale adds an offset).

A cheat has a kind (from the emulator's list), a size (its unit depends on the kind: percent,
grams, ...) and a schedule:

- ``always()``;
- ``between_hours(start, end)``: local time of day, wrapping past midnight (e.g. 22..6);
- ``draws_above(threshold)``: only transactions larger than a threshold, in the device's unit
  (mL for a dispenser, mg for a scale); small test draws stay honest;
- ``remote()``: only while toggled on at run time, like a key fob or a back-office switch.

Emulators ask ``board.active(kind, clock, draw)`` at the moment a transaction is affected, and
write the answer into their ground truth, which is the label detector evaluation uses.
"""

import threading


class Schedule:
    def __init__(self, mode, start_h=None, end_h=None, threshold=None):
        self.mode = mode
        self.start_h = start_h
        self.end_h = end_h
        self.threshold = threshold
        self.toggled_on = False

    def applies(self, local_hour, draw):
        if self.mode == "always":
            return True
        if self.mode == "hours":
            if self.start_h <= self.end_h:
                return self.start_h <= local_hour < self.end_h
            return local_hour >= self.start_h or local_hour < self.end_h
        if self.mode == "draws_above":
            return draw is not None and draw > self.threshold
        return self.toggled_on  # remote

    def describe(self):
        if self.mode == "hours":
            return f"between {self.start_h:g}h and {self.end_h:g}h"
        if self.mode == "draws_above":
            return f"draws above {self.threshold}"
        if self.mode == "remote":
            return f"remote toggle ({'on' if self.toggled_on else 'off'})"
        return "always"


def always():
    return Schedule("always")


def between_hours(start_h, end_h):
    if not (0 <= start_h < 24 and 0 <= end_h <= 24) or start_h == end_h:
        raise ValueError("hours must be distinct and within 0..24")
    return Schedule("hours", start_h=start_h, end_h=end_h)


def draws_above(threshold):
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    return Schedule("draws_above", threshold=threshold)


def remote():
    return Schedule("remote")


class Cheat:
    def __init__(self, kind, size, schedule=None):
        self.kind = kind
        self.size = size
        self.schedule = schedule or always()

    def describe(self):
        return f"{self.kind} size {self.size:g} {self.schedule.describe()}"


class CheatBoard:
    """The cheats fitted to one device; safe to change from another thread while it runs."""

    def __init__(self, kinds):
        self.kinds = tuple(kinds)
        self._cheats = {}
        self._lock = threading.Lock()

    def fit(self, kind, size, schedule=None):
        if kind not in self.kinds:
            raise ValueError(f"unknown cheat {kind!r}; this device knows {', '.join(self.kinds)}")
        with self._lock:
            self._cheats[kind] = Cheat(kind, size, schedule)

    def remove(self, kind):
        with self._lock:
            self._cheats.pop(kind, None)

    def toggle(self, kind, on):
        """Flip a remote-scheduled cheat, as its owner's key fob would."""
        with self._lock:
            cheat = self._cheats.get(kind)
            if cheat is None or cheat.schedule.mode != "remote":
                raise ValueError(f"{kind!r} is not fitted with a remote schedule")
            cheat.schedule.toggled_on = on

    def fitted(self):
        with self._lock:
            return dict(self._cheats)

    def active(self, kind, clock, draw=None):
        """The Cheat if ``kind`` is fitted and applies now to a transaction of size ``draw``."""
        with self._lock:
            cheat = self._cheats.get(kind)
        if cheat is not None and cheat.schedule.applies(clock.local_hour(), draw):
            return cheat
        return None


def parse_schedule(text):
    """A schedule from its written form, as scenario files and the command line give it:
    ``always``, ``hours:22-6``, ``draws_above:20000`` or ``remote``."""
    name, _, argument = text.partition(":")
    try:
        if name == "always" and not argument:
            return always()
        if name == "remote" and not argument:
            return remote()
        if name == "hours":
            start, _, end = argument.partition("-")
            return between_hours(float(start), float(end))
        if name == "draws_above":
            return draws_above(int(argument))
    except ValueError as exc:
        raise ValueError(f"schedule {text!r}: {exc}")
    raise ValueError(
        f"schedule {text!r}: expected always, remote, hours:START-END or draws_above:N"
    )
