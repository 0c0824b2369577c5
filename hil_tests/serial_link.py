"""Serial plumbing for the emulators: real pseudo-terminals, and a shared RS-485 line.

An emulator talks through a *port*: ``read(timeout) -> bytes`` (``b""`` when nothing came),
``write(data)``, ``fileno()`` and ``close()``.

- ``PtyPort`` is the master side of a fresh pty. A client (pyserial, the gateway under the
  MicroPython unix port, a person with a terminal program) opens ``port.path``, the slave side,
  exactly as it would open /dev/ttyUSB0.
- ``SerialPort`` opens a real serial device (a USB RS-485 adapter) with pyserial, so an
  emulator can face real hardware.
- ``SharedLine`` models an RS-485 bus that several parties read: every byte one party sends
  reaches all the others, as on a real two-wire line. Parties inside this process (emulators)
  get a ``LinePort``; parties outside (a gateway tapping the line, a test client) get a pty path.

Baud rate and parity set by a client on a pty have no effect; timing is the emulators' job.
"""

import errno
import os
import select
import socket
import threading
import tty

import serial

_READ_CHUNK = 4096


class PtyPort:
    def __init__(self):
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF translation; the byte stream is the
        # protocol. Our own slave descriptor stays open so the master never sees a hang-up
        # (EIO) when a client closes and reopens the device.
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self.closed = False

    def fileno(self):
        return self._master

    def read(self, timeout=0.0):
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._master, _READ_CHUNK)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    def write(self, data):
        view = memoryview(data)
        while view:
            try:
                sent = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], 1.0)
                continue
            view = view[sent:]

    def write_nowait(self, data):
        """Write what the pty takes now and drop the rest, as a line drops bytes nobody reads;
        returns the number of bytes dropped."""
        try:
            return len(data) - os.write(self._master, data)
        except BlockingIOError:
            return len(data)

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self._master)
            os.close(self._slave)


class LinePort:
    """An in-process party's end of a SharedLine."""

    def __init__(self, sock):
        self._sock = sock
        self._sock.setblocking(False)
        self.closed = False

    def fileno(self):
        return self._sock.fileno()

    def read(self, timeout=0.0):
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return b""
        try:
            return self._sock.recv(_READ_CHUNK)
        except BlockingIOError:
            return b""

    def write(self, data):
        self._sock.setblocking(True)
        try:
            self._sock.sendall(data)
        finally:
            self._sock.setblocking(False)

    def close(self):
        if not self.closed:
            self.closed = True
            self._sock.close()


class SharedLine:
    """A broadcast medium: what any party writes, every other party reads.

    A forwarding thread copies bytes between the parties. Collisions are not modelled: on a
    real half-duplex line the master's polling keeps parties from talking at once. A party that
    does not read (an unopened pty) loses bytes instead of stalling the line; ``dropped`` counts
    them per party.
    """

    def __init__(self):
        self._ends = []  # (name, the line's own file object: a PtyPort or a socket)
        self.dropped = {}
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._running = True
        self._thread = threading.Thread(target=self._forward, name="shared-line", daemon=True)
        self._thread.start()

    def attach_local(self, name):
        """A LinePort for an emulator running in this process."""
        line_end, party_end = socket.socketpair()
        line_end.setblocking(False)
        self._add(name, line_end)
        return LinePort(party_end)

    def attach_pty(self, name):
        """The device path an outside party opens to join the line."""
        port = PtyPort()
        self._add(name, port)
        return port.path

    def _add(self, name, end):
        with self._lock:
            self._ends.append((name, end))
            self.dropped[name] = 0
        os.write(self._wake_write, b"x")

    def _forward(self):
        while self._running:
            with self._lock:
                ends = list(self._ends)
            ready, _, _ = select.select([e for _, e in ends] + [self._wake_read], [], [], 0.5)
            if self._wake_read in ready:
                os.read(self._wake_read, 64)
            # The parties as they are now: bytes written after a party joined reach it even when
            # they woke this select together with its joining.
            with self._lock:
                ends = list(self._ends)
            for end in ready:
                if end == self._wake_read:
                    continue
                data = _read_end(end)
                if data:
                    for name, other in ends:
                        if other is not end:
                            self.dropped[name] += _write_end(other, data)

    def close(self):
        self._running = False
        os.write(self._wake_write, b"x")
        self._thread.join(timeout=2)
        for _, end in self._ends:
            end.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


def _read_end(end):
    if isinstance(end, PtyPort):
        return end.read(0)
    try:
        return end.recv(_READ_CHUNK)
    except BlockingIOError:
        return b""


def _write_end(end, data):
    if isinstance(end, PtyPort):
        return end.write_nowait(data)
    try:
        return len(data) - end.send(data)
    except BlockingIOError:
        return len(data)


class SerialPort:
    """A real serial device (or any tty path) opened with pyserial, behind the port interface,
    so an emulated controller can drive a real pump, or a real gateway cable."""

    def __init__(self, path, baudrate=9600, parity="N", bytesize=8, stopbits=1):
        try:
            self._serial = serial.Serial(path, baudrate=baudrate, parity=parity,
                                         bytesize=bytesize, stopbits=stopbits, timeout=0)
        except serial.SerialException as exc:
            raise OSError(f"cannot open serial port {path}: {exc}")
        self.path = path
        self.closed = False

    def fileno(self):
        return self._serial.fileno()

    def read(self, timeout=0.0):
        ready, _, _ = select.select([self._serial.fileno()], [], [], timeout)
        if not ready:
            return b""
        return self._serial.read(_READ_CHUNK)

    def write(self, data):
        self._serial.write(data)
        self._serial.flush()

    def close(self):
        if not self.closed:
            self.closed = True
            self._serial.close()
