"""Storage in RAM that loses power on cue, for the journal's power-loss tests (both interpreters).

It has the methods of ``journal.Files``. Work is counted in steps: one per byte written and one
per file creation, sync, rename or remove. ``cut_after(steps)`` arms it: the write that would pass
that step stores only the bytes up to it, then it and every later call raise PowerCut, as a dead
device would. ``power_on()`` is the reboot.

Two models of what a cut keeps: by default every byte written survives (the worst case for torn
frames); with ``lose_unsynced=True`` each file falls back to what was last synced (the worst case
for a missing sync). Creations, renames and removes are durable when they return.
"""

import errno


class PowerCut(OSError):
    def __init__(self):
        super().__init__(errno.EIO, "power cut (simulated)")


class _File:
    def __init__(self, storage, path, mode):
        self._storage = storage
        self._path = path
        self._data = storage.data[path]
        self._pos = len(self._data) if mode == "ab" else 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, n=-1):
        end = len(self._data) if n < 0 else min(len(self._data), self._pos + n)
        out = bytes(self._data[self._pos : end])
        self._pos = end
        return out

    def readinto(self, buf):
        n = min(len(buf), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def write(self, data):
        data = bytes(data)
        allowed = self._storage.spend(len(data))
        if allowed < len(data):
            self._storage.torn = (self._path, self._pos, data, allowed)
        self._data[self._pos : self._pos + allowed] = data[:allowed]
        self._pos += allowed
        if allowed < len(data):
            raise PowerCut()
        return allowed

    def seek(self, offset, whence=0):
        self._pos = offset if whence == 0 else len(self._data) + offset
        return self._pos

    def tell(self):
        return self._pos

    def flush(self):
        self._storage.check_alive()

    def close(self):
        pass


class SimStorage:
    def __init__(self, lose_unsynced=False):
        self.data = {}  # path -> bytearray, what a reader sees
        self.synced = {}  # path -> bytes durable after a cut (lose_unsynced model)
        self.dirs = set()
        self.lose_unsynced = lose_unsynced
        self.steps = 0
        self._limit = None
        self.dead = False
        self.torn = None  # (path, file offset, data, bytes written) of the write a cut tore

    # --- the power supply ---

    def cut_after(self, steps):
        self.steps = 0
        self._limit = steps

    def power_on(self):
        if self.lose_unsynced:
            for path in self.data:
                self.data[path] = bytearray(self.synced[path])
        self.dead = False
        self._limit = None

    def check_alive(self):
        if self.dead:
            raise PowerCut()

    def spend(self, steps):
        """How many of `steps` happen before the cut (all of them when unarmed)."""
        self.check_alive()
        allowed = steps if self._limit is None else min(steps, self._limit - self.steps)
        self.steps += allowed
        if allowed < steps:
            self.dead = True
        return allowed

    def _metadata_op(self):
        if self.spend(1) < 1:
            raise PowerCut()

    # --- journal.Files ---

    def open(self, path, mode):
        self.check_alive()
        if mode == "rb":
            if path not in self.data:
                raise OSError(errno.ENOENT, path)
        elif mode == "wb" or path not in self.data:
            self._metadata_op()
            self.data[path] = bytearray()
            self.synced[path] = b""
        return _File(self, path, mode)

    def sync(self, f):
        self._metadata_op()
        self.synced[f._path] = bytes(self.data[f._path])

    def sync_dir(self, path):
        self.check_alive()

    def size(self, path):
        self.check_alive()
        if path not in self.data:
            raise OSError(errno.ENOENT, path)
        return len(self.data[path])

    def listdir(self, path):
        self.check_alive()
        if path not in self.dirs:
            raise OSError(errno.ENOENT, path)
        prefix = path + "/"
        return [p[len(prefix) :] for p in self.data if p.startswith(prefix)]

    def mkdir(self, path):
        self._metadata_op()
        self.dirs.add(path)

    def rename(self, src, dst):
        self._metadata_op()
        self.data[dst] = self.data.pop(src)
        self.synced[dst] = self.synced.pop(src)

    def remove(self, path):
        self._metadata_op()
        del self.data[path]
        del self.synced[path]
