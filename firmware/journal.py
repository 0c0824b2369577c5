"""Power-loss-safe record journal: fixed-size segment files of CRC-framed records.

A segment file ``segNNNNNNNN.jnl`` (NNNNNNNN: its number, decimal, rising) is at most
``segment_bytes`` long and holds a magic and whole frames; a frame never spans two segments::

    [ "MSJ" 0x01 ]  magic and format version, 4 bytes, once per segment
    [ length u32 BE ][ seq u64 BE ][ envelope: length bytes ][ crc32 u32 BE ]   one frame
      \\_____________________ CRC-32 covers these ____________________/

Frame overhead: FRAME_OVERHEAD (16) bytes per record. The upload cursor is a 16-byte file,
``cursor``, replaced through ``cursor.tmp`` and a rename::

    [ "MSC" 0x01 ][ acked_through + 1: u64 BE ][ crc32 of the first 12 bytes: u32 BE ]

Group commit: appended frames collect in one preallocated RAM buffer, which is written to the
newest segment and synced in one go every ``group_records`` records, when ``group_ms`` have passed
since the oldest of them (checked by append() and poll()), when it is full, and by flush().
A power cut loses at most that unflushed group: records whose append() returned but whose flush
had not finished. Nothing else is lost, and pending() flushes before anything leaves the gateway,
so a lost record was never seen by the host; its seq stays a gap (see State's seq reservation).

Recovery (at construction, or recover()) reads every segment oldest first. Scanning a segment
stops at its first frame that is short, too long for a segment, out of seq order or fails its
CRC; everything from there to the end of the file is truncated (copied to a temporary file that
is renamed over the segment) and counted in the report. Only the newest segment can be torn by a
power cut; anything else found this way is storage corruption, reported the same way.

Segments are deleted, oldest first, once the host has acknowledged every record in them; the
newest segment is always kept, so last() can give the chain's ``prev`` after a reboot. Capacity
is ``max_segments`` x ``segment_bytes``; when it is used up append() refuses (JournalFull) and
counts the record as dropped, never evicting anything unacknowledged. ``reserve_bytes`` are kept
back for appends marked ``reserved=True``: the journal_full and records_dropped events.
"""

import os
import struct

from meterseal.firmware.timing import ticks_diff as _ticks_diff
from meterseal.firmware.timing import ticks_ms as _ticks_ms
from meterseal.protocol.crc import crc32

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


SEGMENT_MAGIC = b"MSJ\x01"
_CURSOR_MAGIC = b"MSC\x01"
_MAGIC_LEN = const(4)
_HEAD_LEN = const(12)  # length u32 + seq u64
_CRC_LEN = const(4)
FRAME_OVERHEAD = const(16)
_CURSOR_LEN = const(16)
_DEFAULT_BUFFER_BYTES = const(8192)
_CURSOR = "cursor"
_TEMP = ".tmp"
_SEGMENT_PREFIX = "seg"
_SEGMENT_SUFFIX = ".jnl"
_SEGMENT_NAME_LEN = const(15)  # seg + 8 digits + .jnl

# Indexes into a segment entry [number, first_seq, last_seq, size_bytes]; size_bytes is what
# is durable on storage, the RAM buffer comes on top of the newest one.
_NUMBER = const(0)
_FIRST = const(1)
_LAST = const(2)
_SIZE = const(3)

# Platform capabilities as data. CPython can force data and a new directory entry to disk;
# MicroPython has neither call, and its board filesystems commit a file when it is flushed.
_fsync = getattr(os, "fsync", None)
_open_dir = getattr(os, "open", None)
_O_RDONLY = getattr(os, "O_RDONLY", 0)


class Files:
    """The journal's whole view of storage: real files. A test substitutes an object with the
    same methods that cuts power after a chosen number of written bytes; a board could wrap its
    flash the same way. File objects need read/readinto/write/seek/flush/close and `with`."""

    def open(self, path, mode):
        return open(path, mode)

    def sync(self, f):
        f.flush()
        if _fsync:
            _fsync(f.fileno())

    def sync_dir(self, path):
        # A new or renamed file survives a power cut on Linux only once its directory is synced.
        if _fsync and _open_dir:
            fd = _open_dir(path, _O_RDONLY)
            try:
                _fsync(fd)
            finally:
                os.close(fd)

    def size(self, path):
        return os.stat(path)[6]

    def listdir(self, path):
        return os.listdir(path)

    def mkdir(self, path):
        os.mkdir(path)

    def rename(self, src, dst):
        os.rename(src, dst)

    def remove(self, path):
        os.remove(path)


class JournalError(OSError):
    """The journal cannot read, write or trust its storage; the message names the file."""

    def __init__(self, path, problem):
        super().__init__("journal %s: %s" % (path, problem))
        self.path = path


class JournalFull(JournalError):
    """append() refused a record for lack of room; it is counted as dropped. `dropped` is the
    number dropped since the last dropped_reported(), so 1 marks the start of a full spell."""

    def __init__(self, path, seq, dropped):
        super().__init__(path, "full, record seq %d dropped" % seq)
        self.seq = seq
        self.dropped = dropped


class Journal:
    def __init__(
        self,
        root_dir,
        segment_bytes=32768,
        max_segments=16,
        group_records=8,
        group_ms=1000,
        buffer_bytes=None,
        reserve_bytes=1024,
        clock=_ticks_ms,
        files=None,
    ):
        if max_segments < 2:
            raise ValueError(
                "max_segments %d: at least 2 (the newest is always kept)" % max_segments
            )
        if buffer_bytes is None:
            # The default group buffer, bounded by a small segment (a buffer never spans two).
            buffer_bytes = min(_DEFAULT_BUFFER_BYTES, segment_bytes)
        if not _MAGIC_LEN + FRAME_OVERHEAD < buffer_bytes <= segment_bytes:
            raise ValueError(
                "buffer_bytes %d: must exceed %d and fit a segment (%d bytes)"
                % (buffer_bytes, _MAGIC_LEN + FRAME_OVERHEAD, segment_bytes)
            )
        if not 0 <= reserve_bytes < segment_bytes - _MAGIC_LEN:
            raise ValueError("reserve_bytes %d: must be below a segment's size" % reserve_bytes)
        if group_records < 1 or group_ms < 0:
            raise ValueError("group_records must be >= 1 and group_ms >= 0")
        self._root = root_dir
        self._segment_bytes = segment_bytes
        self._max_segments = max_segments
        self._group_records = group_records
        self._group_ms = group_ms
        self._reserve_bytes = reserve_bytes
        self._clock = clock
        self._files = files or Files()
        # Allocated once: the group buffer is also recovery's scratch space.
        self._buf = bytearray(buffer_bytes)
        self._mv = memoryview(self._buf)
        # A new segment's magic and one frame must fit the buffer together.
        self.max_envelope_bytes = buffer_bytes - _MAGIC_LEN - FRAME_OVERHEAD
        self._head = bytearray(_HEAD_LEN)
        self._crc = bytearray(_CRC_LEN)
        self._file = None
        self._dropped_total = 0
        self._unreported = [0, 0, 0]  # count, first seq, last seq of drops not yet reported
        self.recovery = self.recover()

    # --- recovery -------------------------------------------------------------------------

    def recover(self):
        """Rebuild the journal from storage, truncating torn or corrupt tails. Returns
        ``{"bytes_truncated", "last_good_seq", "cursor_lost"}``: last_good_seq is the seq of
        the last intact record before the first truncated byte (the newest seq if nothing was
        truncated, None if there is none); cursor_lost is True when a cursor file existed but
        failed its check, so everything journaled will be offered for upload again."""
        self._close_file()
        self._fill = 0
        self._buffered = 0
        self._buffered_since_ms = 0
        self._broken = False
        self._segments = []
        files = self._files
        try:
            names = files.listdir(self._root)
        except OSError:
            files.mkdir(self._root)
            names = []
        numbers = []
        for name in names:
            if name.endswith(_TEMP):
                # A cut during a cursor write or a truncation; the original is still whole.
                files.remove(self._join(name))
            elif self._is_segment_name(name):
                numbers.append(int(name[3:11]))
        numbers.sort()
        self._acked, cursor_lost = self._read_cursor()
        report = {"bytes_truncated": 0, "last_good_seq": None, "cursor_lost": cursor_lost}
        last_seq = -1
        self._last_at = 0
        self._unacked = 0  # every frame for now; the send position walk takes off the acked
        for number in numbers:
            path = self._segment_path(number)
            size = files.size(path)
            good_end, first, new_last_seq, frames, last_at = self._scan(path, size, last_seq)
            if good_end < size:
                if not report["bytes_truncated"]:
                    report["last_good_seq"] = new_last_seq if new_last_seq >= 0 else None
                report["bytes_truncated"] += size - good_end
            if first < 0:
                files.remove(path)  # torn as it was created, or emptied by truncation
                continue
            if good_end < size:
                self._truncate(path, good_end)
            self._segments.append([number, first, new_last_seq, good_end])
            last_seq = new_last_seq
            self._last_at = last_at
            self._unacked += frames
        if not report["bytes_truncated"] and last_seq >= 0:
            report["last_good_seq"] = last_seq
        self._last_seq = max(last_seq, self._acked)
        self._flushed_seq = last_seq
        self._send_at = [self._segments[0][_NUMBER], _MAGIC_LEN] if self._segments else [0, 0]
        self._advance_send_position()
        self._delete_acked()
        return report

    def _scan(self, path, size, last_seq):
        """(end of the last good frame, first seq or -1, last seq so far, frames, offset of the
        last good frame)."""
        first = -1
        frames = 0
        last_at = 0
        head = self._head
        with self._files.open(path, "rb") as f:
            n = f.readinto(self._crc)
            if n == _MAGIC_LEN and self._crc != SEGMENT_MAGIC:
                raise JournalError(path, "not a meterseal journal segment (bad magic)")
            if n < _MAGIC_LEN:
                return 0, -1, last_seq, 0, 0  # torn while it was being created
            offset = _MAGIC_LEN
            while size - offset >= FRAME_OVERHEAD:
                if f.readinto(head) != _HEAD_LEN:
                    break
                length, seq = struct.unpack_from(">IQ", head)
                end = offset + FRAME_OVERHEAD + length
                if length == 0 or end > size or end > self._segment_bytes or seq <= last_seq:
                    break
                crc = self._crc_of_stream(f, length, crc32(head))
                if crc < 0 or f.readinto(self._crc) != _CRC_LEN:
                    break
                if struct.unpack_from(">I", self._crc)[0] != crc:
                    break
                if first < 0:
                    first = seq
                frames += 1
                last_seq = seq
                last_at = offset
                offset = end
        return offset, first, last_seq, frames, last_at

    def _crc_of_stream(self, f, length, crc):
        # The envelope passes through the preallocated buffer in chunks: no per-record allocation.
        chunk_max = len(self._buf)
        while length:
            chunk = self._mv[: min(length, chunk_max)]
            if f.readinto(chunk) != len(chunk):
                return -1
            crc = crc32(chunk, crc)
            length -= len(chunk)
        return crc

    def _truncate(self, path, length):
        # No truncate() on MicroPython: copy the good prefix aside and rename it over the segment,
        # so a cut leaves the torn segment (truncated again next boot) or the clean one.
        temp = path + _TEMP
        files = self._files
        with files.open(path, "rb") as src, files.open(temp, "wb") as dst:
            left = length
            while left:
                chunk = self._mv[: min(left, len(self._buf))]
                src.readinto(chunk)
                dst.write(chunk)
                left -= len(chunk)
            files.sync(dst)
        files.rename(temp, path)
        files.sync_dir(self._root)

    def _read_cursor(self):
        path = self._join(_CURSOR)
        try:
            with self._files.open(path, "rb") as f:
                data = f.read(_CURSOR_LEN + 1)
        except OSError:
            return -1, False  # never acknowledged anything
        if (
            len(data) != _CURSOR_LEN
            or data[:_MAGIC_LEN] != _CURSOR_MAGIC
            or struct.unpack_from(">I", data, 12)[0] != crc32(data[:12])
        ):
            return -1, True
        return struct.unpack_from(">Q", data, _MAGIC_LEN)[0] - 1, False

    # --- appending ------------------------------------------------------------------------

    def append(self, seq, envelope, reserved=False):
        """Journal one record. Seqs must rise strictly, also past dropped ones. Raises
        JournalFull (after counting the drop) when there is no room; `reserved` lets the
        journal_full and records_dropped events use the space held back for them."""
        self._check_usable()
        if not isinstance(seq, int) or seq <= self._last_seq:
            raise ValueError(
                "seq %r must be an integer above the last seq %d" % (seq, self._last_seq)
            )
        frame_bytes = len(envelope) + FRAME_OVERHEAD
        if frame_bytes > self.max_envelope_bytes + FRAME_OVERHEAD:
            raise ValueError(
                "envelope of %d bytes exceeds the journal's limit of %d"
                % (len(envelope), self.max_envelope_bytes)
            )
        new_segment = self._placement(frame_bytes, reserved)
        if new_segment < 0:
            self._last_seq = seq
            drops = self._unreported
            if not drops[0]:
                drops[1] = seq
            drops[0] += 1
            drops[2] = seq
            self._dropped_total += 1
            raise JournalFull(self._root, seq, drops[0])
        if new_segment:
            self.flush()
            self._close_file()
            number = self._segments[-1][_NUMBER] + 1 if self._segments else 1
            self._segments.append([number, seq, seq, 0])
            self._buf[:_MAGIC_LEN] = SEGMENT_MAGIC
            self._fill = _MAGIC_LEN
        elif self._fill + frame_bytes > len(self._buf):
            self.flush()  # the buffer is full, the segment is not
        head = self._head
        struct.pack_into(">IQ", head, 0, len(envelope), seq)
        crc = crc32(envelope, crc32(head))
        at = self._fill
        self._buf[at : at + _HEAD_LEN] = head
        at += _HEAD_LEN
        self._buf[at : at + len(envelope)] = envelope
        at += len(envelope)
        struct.pack_into(">I", self._buf, at, crc)
        newest = self._segments[-1]
        self._last_at = newest[_SIZE] + self._fill
        newest[_LAST] = seq
        self._fill = at + _CRC_LEN
        self._last_seq = seq
        self._unacked += 1
        if not self._buffered:
            self._buffered_since_ms = self._clock()
        self._buffered += 1
        if self._buffered >= self._group_records:
            self.flush()
        else:
            self.poll()

    def _placement(self, frame_bytes, reserved):
        """0: the frame goes into the newest segment, 1: into a new one, -1: no room."""
        segments = self._segments
        if segments:
            end = segments[-1][_SIZE] + self._fill + frame_bytes
            if end <= self._segment_bytes:
                new_segment = 0
                count = len(segments)
            else:
                new_segment = 1
                end = _MAGIC_LEN + frame_bytes
                count = len(segments) + 1
        else:
            new_segment = 1
            end = _MAGIC_LEN + frame_bytes
            count = 1
        if count > self._max_segments:
            return -1
        # The reserve must stay contiguous: a whole free segment, or room left in the last one.
        if not reserved and count == self._max_segments:
            if self._segment_bytes - end < self._reserve_bytes:
                return -1
        return new_segment

    def has_room(self, envelope_bytes):
        """Whether a normal (unreserved) append of that size would be accepted now."""
        return self._placement(envelope_bytes + FRAME_OVERHEAD, False) >= 0

    def poll(self):
        """Flush when the oldest unflushed record is group_ms old; call at least that often."""
        if self._buffered and _ticks_diff(self._clock(), self._buffered_since_ms) >= self._group_ms:
            self.flush()

    def flush(self):
        """Write and sync the buffered group; when this returns, those records survive a cut."""
        self._check_usable()
        if not self._fill:
            return
        newest = self._segments[-1]
        path = self._segment_path(newest[_NUMBER])
        created = newest[_SIZE] == 0
        try:
            if self._file is None:
                self._file = self._files.open(path, "ab")
            written = self._file.write(self._mv[: self._fill])
            if written != self._fill:
                raise OSError("short write: %r of %d bytes" % (written, self._fill))
            self._files.sync(self._file)
            if created:
                self._files.sync_dir(self._root)
        except OSError as e:
            # The segment's tail is unknown now: only recover() may touch it again.
            self._broken = True
            raise JournalError(path, "write failed, recover() before further use (%s)" % e)
        newest[_SIZE] += self._fill
        self._fill = 0
        self._buffered = 0
        self._flushed_seq = newest[_LAST]
        self._delete_acked()

    def close(self):
        self.flush()
        self._close_file()

    # --- reading and acknowledging ----------------------------------------------------------

    def last(self):
        """(seq, envelope) of the newest record, or None."""
        if not self._segments:
            return None
        newest = self._segments[-1]
        if self._last_at >= newest[_SIZE]:
            at = self._last_at - newest[_SIZE]
            length = struct.unpack_from(">I", self._buf, at)[0]
            start = at + _HEAD_LEN
            return newest[_LAST], bytes(self._buf[start : start + length])
        with self._files.open(self._segment_path(newest[_NUMBER]), "rb") as f:
            seq, envelope, _ = self._read_frame(f, newest, self._last_at, True)
        return seq, envelope

    def pending(self, limit):
        """Up to `limit` (seq, envelope) after the upload cursor, oldest first. Flushes first, so
        the host never holds a record the gateway could still lose."""
        self.flush()
        out = []
        position = self._send_position()
        while position and len(out) < limit:
            segment, offset = position
            with self._files.open(self._segment_path(segment[_NUMBER]), "rb") as f:
                while offset < segment[_SIZE] and len(out) < limit:
                    seq, envelope, offset = self._read_frame(f, segment, offset, True)
                    out.append((seq, envelope))
            position = self._next_segment(segment)
        return out

    def acknowledge(self, seq):
        """The host holds every record up to and including `seq`. Persists the cursor, then
        deletes the segments it covers (except the newest). An ACK beyond the newest durable
        record is capped there: records appended later must still be sent."""
        self._check_usable()
        seq = min(seq, self._flushed_seq)
        if seq <= self._acked:
            return  # a repeated ACK
        self._write_cursor(seq)
        self._acked = seq
        self._advance_send_position()
        self._delete_acked()

    def highest_seq(self):
        """The highest seq journaled (buffered included) or acknowledged, for HELLO; None if
        there has never been one."""
        seq = max(self._segments[-1][_LAST] if self._segments else -1, self._acked)
        return seq if seq >= 0 else None

    def stats(self):
        used = self._fill
        for segment in self._segments:
            used += segment[_SIZE]
        return {
            "used_bytes": used,
            "capacity_bytes": self._segment_bytes * self._max_segments,
            "unacked_records": self._unacked,
            "dropped_total": self._dropped_total,
        }

    def dropped(self):
        """(count, first seq, last seq) of records dropped since dropped_reported(), or None."""
        drops = self._unreported
        return (drops[0], drops[1], drops[2]) if drops[0] else None

    def dropped_reported(self):
        """The recorder has journaled its records_dropped event for dropped()."""
        self._unreported = [0, 0, 0]

    # --- internals ------------------------------------------------------------------------

    def _check_usable(self):
        if self._broken:
            raise JournalError(self._root, "a write failed; recover() before further use")

    def _read_frame(self, f, segment, offset, want_envelope):
        """(seq, envelope or None, next offset) of the frame at `offset`, CRC-checked."""
        f.seek(offset)
        path = self._segment_path(segment[_NUMBER])
        if f.readinto(self._head) != _HEAD_LEN:
            raise JournalError(path, "frame at offset %d is cut short" % offset)
        length, seq = struct.unpack_from(">IQ", self._head)
        if not want_envelope:
            return seq, None, offset + FRAME_OVERHEAD + length
        envelope = f.read(length)
        if len(envelope) != length or f.readinto(self._crc) != _CRC_LEN:
            raise JournalError(path, "frame at offset %d is cut short" % offset)
        if struct.unpack_from(">I", self._crc)[0] != crc32(envelope, crc32(self._head)):
            raise JournalError(path, "frame at offset %d fails its CRC (storage corrupt)" % offset)
        return seq, envelope, offset + FRAME_OVERHEAD + length

    def _send_position(self):
        """(segment, offset) of the first frame after the cursor, or None when all is sent."""
        number, offset = self._send_at
        for segment in self._segments:
            if segment[_NUMBER] > number:
                return (segment, _MAGIC_LEN) if segment[_SIZE] > _MAGIC_LEN else None
            if segment[_NUMBER] == number and offset < segment[_SIZE]:
                return segment, offset
        return None

    def _next_segment(self, segment):
        i = self._segments.index(segment) + 1
        if i < len(self._segments) and self._segments[i][_SIZE] > _MAGIC_LEN:
            return self._segments[i], _MAGIC_LEN
        return None

    def _advance_send_position(self):
        # Walk frame headers from the old position past everything the cursor now covers.
        position = self._send_position()
        while position:
            segment, offset = position
            with self._files.open(self._segment_path(segment[_NUMBER]), "rb") as f:
                while offset < segment[_SIZE]:
                    seq, _, next_offset = self._read_frame(f, segment, offset, False)
                    if seq > self._acked:
                        self._send_at = [segment[_NUMBER], offset]
                        return
                    self._unacked -= 1
                    offset = next_offset
            self._send_at = [segment[_NUMBER], offset]
            position = self._next_segment(segment)

    def _delete_acked(self):
        segments = self._segments
        while len(segments) > 1 and segments[0][_LAST] <= self._acked and segments[1][_SIZE]:
            self._files.remove(self._segment_path(segments[0][_NUMBER]))
            segments.pop(0)

    def _write_cursor(self, acked_seq):
        data = bytearray(_CURSOR_LEN)
        data[:_MAGIC_LEN] = _CURSOR_MAGIC
        struct.pack_into(">Q", data, _MAGIC_LEN, acked_seq + 1)
        struct.pack_into(">I", data, 12, crc32(data[:12]))
        path = self._join(_CURSOR)
        files = self._files
        try:
            with files.open(path + _TEMP, "wb") as f:
                f.write(data)
                files.sync(f)
            files.rename(path + _TEMP, path)
            files.sync_dir(self._root)
        except OSError as e:
            raise JournalError(path, "cannot write the upload cursor (%s)" % e)

    def _close_file(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _join(self, name):
        return self._root + "/" + name

    def _segment_path(self, number):
        return self._join("%s%08d%s" % (_SEGMENT_PREFIX, number, _SEGMENT_SUFFIX))

    def _is_segment_name(self, name):
        return (
            len(name) == _SEGMENT_NAME_LEN
            and name.startswith(_SEGMENT_PREFIX)
            and name.endswith(_SEGMENT_SUFFIX)
            and name[3:11].isdigit()
        )
