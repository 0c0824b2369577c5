"""The gateway's persistent counters and last-seen device facts, in one small file.

File layout, replaced as a whole through ``<path>.tmp`` and a rename, so a power cut leaves the
old file or the new one, never a torn one::

    [ "MSS" 0x01 ][ deterministic CBOR map, text keys ][ crc32 of everything before: u32 BE ]

A file that is short, foreign or fails its check raises StateError naming it; it is never
replaced silently (replace_corrupt() keeps it aside as evidence and starts over, on purpose).

Seq reservation: seqs are handed out from blocks of ``seq_block``. Before the first seq of a
block is used, ``seq_reserved_until`` (one past the block) is saved. At boot:

- journal intact (recovery truncated nothing): the next seq is the journal's highest + 1. Records
  lost unflushed never left the gateway (the journal flushes before anything is sent), so their
  seqs were never seen by anyone and the chain continues without a gap;
- journal lost or truncated: the next seq is max(highest + 1, seq_reserved_until). Every seq
  handed out before was below seq_reserved_until, so none is reused even if flushed, already
  uploaded records were destroyed; the host sees a gap, explained by journal_recovered.
"""

import struct

from meterseal.firmware.journal import Files
from meterseal.protocol import cbor
from meterseal.protocol.crc import crc32

_MAGIC = b"MSS\x01"
_CRC_LEN = 4
# Bounds what a corrupt or foreign file can make load() allocate.
MAX_STATE_BYTES = 16384

# Counters: name and value of a fresh gateway. All are non-negative integers.
_COUNTERS = (
    ("boot_epoch", 0),
    ("opsec", 0),
    ("clock_set_count", 0),
    ("event_count", 0),
    ("seq_reserved_until", 0),
    ("heartbeat_interval_s", 300),
)
# Tables: dicts keyed by text. "devices": device key -> {fact name -> text/bytes/int/list};
# "totalizers": nozzle key -> totalizer (mL, or a list such as [mL, amount minor]).
_TABLES = ("devices", "totalizers")


def _parent(path):
    i = path.rfind("/")
    return "." if i < 0 else (path[:i] or "/")


class StateError(OSError):
    """The state file cannot be read, written or trusted; the message names the file."""

    def __init__(self, path, problem):
        super().__init__("state file %s: %s" % (path, problem))
        self.path = path


class State:
    def __init__(self, path, seq_block=64, files=None):
        if seq_block < 1:
            raise ValueError("seq_block %d: must be at least 1" % seq_block)
        self.path = path
        self._seq_block = seq_block
        self._files = files or Files()
        for name, value in _COUNTERS:
            setattr(self, name, value)
        self.devices = {}
        self.totalizers = {}
        self._unknown = {}  # fields of a newer firmware, kept across saves
        self._next_seq = None
        self.created = False  # True when load() found no file: first boot

    @classmethod
    def load(cls, path, seq_block=64, files=None):
        """The state stored at `path`, or a fresh one (created=True) when there is no file."""
        state = cls(path, seq_block, files)
        try:
            size_bytes = state._files.size(path)
        except OSError:
            state.created = True
            return state
        if size_bytes > MAX_STATE_BYTES:
            raise StateError(path, "%d bytes, more than %d" % (size_bytes, MAX_STATE_BYTES))
        try:
            with state._files.open(path, "rb") as f:
                data = f.read(size_bytes)
        except OSError as e:
            raise StateError(path, "cannot read (%s)" % e)
        state._decode(data)
        return state

    @classmethod
    def replace_corrupt(cls, path, seq_block=64, files=None):
        """Move a corrupt file to `<path>.bad` and start fresh; the caller signs an event."""
        files = files or Files()
        files.rename(path, path + ".bad")
        state = cls(path, seq_block, files)
        state.created = True
        return state

    def _decode(self, data):
        path = self.path
        if len(data) < len(_MAGIC) + _CRC_LEN or data[: len(_MAGIC)] != _MAGIC:
            raise StateError(path, "not a meterseal state file (bad magic or too short)")
        body = data[:-_CRC_LEN]
        if struct.unpack(">I", data[-_CRC_LEN:])[0] != crc32(body):
            raise StateError(path, "check value does not match: the file is corrupt")
        try:
            fields = cbor.loads(body[len(_MAGIC) :])
        except ValueError as e:
            raise StateError(path, "undecodable (%s)" % e)
        if not isinstance(fields, dict):
            raise StateError(path, "not a map")
        for name, _ in _COUNTERS:
            value = fields.pop(name, getattr(self, name))
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise StateError(path, "%s: %r is not a non-negative integer" % (name, value))
            setattr(self, name, value)
        for name in _TABLES:
            value = fields.pop(name, {})
            if not isinstance(value, dict):
                raise StateError(path, "%s: not a map" % name)
            setattr(self, name, value)
        self._unknown = fields

    def save(self):
        fields = dict(self._unknown)
        for name, _ in _COUNTERS:
            fields[name] = getattr(self, name)
        for name in _TABLES:
            fields[name] = getattr(self, name)
        try:
            body = _MAGIC + cbor.dumps(fields)
        except ValueError as e:
            raise StateError(self.path, "cannot encode (%s)" % e)
        if len(body) + _CRC_LEN > MAX_STATE_BYTES:
            raise StateError(self.path, "would exceed %d bytes" % MAX_STATE_BYTES)
        temp = self.path + ".tmp"
        files = self._files
        try:
            with files.open(temp, "wb") as f:
                f.write(body)
                f.write(struct.pack(">I", crc32(body)))
                files.sync(f)
            files.rename(temp, self.path)
            files.sync_dir(_parent(self.path))
        except OSError as e:
            raise StateError(self.path, "cannot write (%s)" % e)

    # --- boot and seq ---

    def begin_boot(self, journal_highest_seq, journal_intact=True):
        """Count this boot and reserve the first seq block; saves. `journal_highest_seq` is
        Journal.highest_seq() (None for an empty journal); `journal_intact` is False when its
        recovery truncated anything. Returns the first seq of this boot, for its boot record;
        next_seq() continues after it."""
        highest = -1 if journal_highest_seq is None else journal_highest_seq
        self.boot_epoch += 1
        if journal_intact and journal_highest_seq is not None:
            first = highest + 1
        else:
            first = max(highest + 1, self.seq_reserved_until)
        self.seq_reserved_until = first + self._seq_block
        self.save()
        self._next_seq = first + 1
        return first

    def next_seq(self):
        """The next record seq; saves a new reservation first when the block is used up."""
        if self._next_seq is None:
            raise ValueError("begin_boot() must come before next_seq()")
        seq = self._next_seq
        if seq >= self.seq_reserved_until:
            self.seq_reserved_until = seq + self._seq_block
            self.save()
        self._next_seq = seq + 1
        return seq

    # --- device facts ---

    def device_fact(self, device_key, name):
        """What was last seen of `name` ("identity", "param_checksum", "k_factors",
        "software_id", ...) on the device, or None."""
        return self.devices.get(device_key, {}).get(name)

    def set_device_fact(self, device_key, name, value):
        facts = self.devices.get(device_key)
        if facts is None:
            facts = self.devices[device_key] = {}
        facts[name] = value
