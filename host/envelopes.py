"""Read a stream of envelopes as length-prefixed frames: u32 big-endian length, then
that many bytes. The demo gateway writes this; a truncated or oversized frame is an error that
names its offset, never a silent stop."""

import struct

# Far above any record (records.MAX_PAYLOAD_BYTES plus the envelope) but small enough that a
# corrupt length cannot make the reader allocate much.
MAX_ENVELOPE_BYTES = 16384


class EnvelopeStreamError(ValueError):
    pass


def read_stream(data):
    out = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise EnvelopeStreamError(f"truncated length prefix at offset {offset}")
        (size,) = struct.unpack_from(">I", data, offset)
        if size > MAX_ENVELOPE_BYTES:
            raise EnvelopeStreamError(
                f"frame at offset {offset} claims {size} bytes (limit {MAX_ENVELOPE_BYTES})"
            )
        start = offset + 4
        if len(data) - start < size:
            raise EnvelopeStreamError(f"frame at offset {offset} is truncated")
        out.append(bytes(data[start : start + size]))
        offset = start + size
    return out

