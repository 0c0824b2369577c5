"""The emulators' plumbing over real ptys, driven by pyserial as a gateway or test client would."""

import select
import threading
import time

import pytest
import serial

from meterseal.hil.serial_link import PtyPort, SerialPort, SharedLine


# Reads wait up to this long for bytes that should come: generous, because a loaded CI machine
# can hold a pty's forwarding thread off for a second or more; data that comes ends the wait.
PATIENCE_S = 10


def _read_until(reader, size, timeout=PATIENCE_S):
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < size and time.monotonic() < deadline:
        data += reader()
    return data


@pytest.fixture
def pty():
    port = PtyPort()
    yield port
    port.close()


def test_pty_carries_bytes_both_ways_untranslated(pty):
    client = serial.Serial(pty.path, 9600, timeout=PATIENCE_S)
    # CR, LF, XON/XOFF and 0xFA must pass untouched: the pty is in raw mode.
    payload = bytes(range(256))
    client.write(payload)
    assert _read_until(lambda: pty.read(0.1), 256) == payload
    pty.write(b"\r\n\x11\x13\xfa")
    assert client.read(5) == b"\r\n\x11\x13\xfa"
    client.close()


def test_pty_survives_a_client_reconnecting(pty):
    for attempt in range(2):
        client = serial.Serial(pty.path, 9600, timeout=PATIENCE_S)
        client.write(b"attempt %d" % attempt)
        assert _read_until(lambda: pty.read(0.1), 9) == b"attempt %d" % attempt
        client.close()
    assert pty.read(0.05) == b""


def test_shared_line_broadcasts_to_every_other_party():
    line = SharedLine()
    try:
        pump = line.attach_local("pump")
        controller = serial.Serial(line.attach_pty("controller"), 9600, timeout=PATIENCE_S)
        tap = serial.Serial(line.attach_pty("gateway-tap"), 9600, timeout=PATIENCE_S)
        controller.write(b"\x50\x20\xfa")
        assert _read_until(lambda: pump.read(0.1), 3) == b"\x50\x20\xfa"
        assert tap.read(3) == b"\x50\x20\xfa"
        pump.write(b"\x50\x70\xfa")
        assert controller.read(3) == b"\x50\x70\xfa" and tap.read(3) == b"\x50\x70\xfa"
        # Nobody hears their own transmission.
        assert pump.read(0.1) == b""
        controller.close()
        tap.close()
    finally:
        line.close()


def test_bytes_written_just_after_a_party_joins_reach_it(monkeypatch):
    """A loaded machine can hold the line's thread up until a party's joining and the next bytes
    wait for it together; the bytes still reach the new party. (When the thread forwarded to the
    parties it knew before it woke, the next test lost its first chunk in 2 of 140 runs under
    load.)"""
    real_select = select.select
    pump_only = threading.Event()

    def held_up(readers, *args):
        if threading.current_thread().name == "shared-line" and len(readers) == 2:
            pump_only.set()  # the pump's end and the wake-up pipe: the client has not joined
            time.sleep(0.3)
        return real_select(readers, *args)

    monkeypatch.setattr(select, "select", held_up)
    line = SharedLine()
    try:
        pump = line.attach_local("pump")
        assert pump_only.wait(PATIENCE_S)
        client = serial.Serial(line.attach_pty("client"), 9600, timeout=PATIENCE_S)
        pump.write(b"\x50\x20\xfa")
        assert client.read(3) == b"\x50\x20\xfa"
        client.close()
    finally:
        line.close()


def test_a_party_that_never_reads_does_not_stall_the_line():
    line = SharedLine()
    try:
        pump = line.attach_local("pump")
        line.attach_pty("unplugged")  # nobody ever opens this one
        client = serial.Serial(line.attach_pty("client"), 9600, timeout=PATIENCE_S)
        # Far more than a pty buffers; the reading client keeps pace, the unplugged one cannot.
        for i in range(300):
            chunk = bytes([i % 256]) * 1000
            pump.write(chunk)
            assert client.read(1000) == chunk
        assert line.dropped["unplugged"] > 0 and line.dropped["client"] == 0
        client.close()
    finally:
        line.close()


def test_serial_port_faces_a_pty_like_a_real_device(pty):
    port = SerialPort(pty.path, parity="O")
    port.write(b"\x50\x20\xfa")
    assert _read_until(lambda: pty.read(0.1), 3) == b"\x50\x20\xfa"
    pty.write(b"\x50\x70\xfa")
    assert _read_until(lambda: port.read(0.1), 3) == b"\x50\x70\xfa"
    port.close()


def test_serial_port_that_cannot_open_is_an_os_error():
    with pytest.raises(OSError, match="cannot open serial port /dev/nonexistent-tty"):
        SerialPort("/dev/nonexistent-tty")
