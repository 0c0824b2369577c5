"""What really happened at an emulated device, kept beside what it indicated.

Each emulator appends one entry per transaction (a sale, a weighing, a delivery) with the true
and the indicated values and the cheats that applied; tests compare the two, and detector
evaluation uses the cheat list as its label.
"""

import threading


class TruthLog:
    def __init__(self):
        self._entries = []
        self._lock = threading.Lock()

    def append(self, entry):
        with self._lock:
            self._entries.append(dict(entry))

    def entries(self):
        with self._lock:
            return [dict(e) for e in self._entries]

    def last(self):
        with self._lock:
            return dict(self._entries[-1]) if self._entries else None

    def __len__(self):
        with self._lock:
            return len(self._entries)
