"""HAL for the MicroPython unix port on Linux: a gateway box, and every test.

Serial: a tty or pty opened as a file and set up with termios (MicroPython's unix termios offers
tcgetattr, tcsetattr and setraw but no O_NONBLOCK, fcntl or os.read). VMIN=0/VTIME=0 makes a
read return what has arrived, possibly nothing, at once; tasks poll it between asyncio sleeps.

Watchdog: a thread (the unix port's threads run without a GIL, so it fires even when the event
loop is stuck). Unfed, it writes the cause below the storage root and SIGKILLs the process
through the shell (there is no os._exit or signal module), so the service manager restarts it.

Seal: a file that reads "1" while the seal switch is closed, e.g. a sysfs GPIO value; a missing
or unreadable file reads as open.
"""

import _thread
import os
import termios
import time

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


# Linux <termios.h> values; MicroPython's termios module exports only some speeds.
_SPEEDS = {
    1200: 0o11,
    2400: 0o13,
    4800: 0o14,
    9600: 0o15,
    19200: 0o16,
    38400: 0o17,
    57600: 0o10001,
    115200: 0o10002,
}
_CHARACTER_BITS = {7: 0o40, 8: 0o60}
_PARITY = {"N": 0, "E": 0o400, "O": 0o400 | 0o1000}  # PARENB, PARENB | PARODD
_STOP_BITS = {1: 0, 2: 0o100}  # CSTOPB
_CFLAG_FRAMING = const(0o60 | 0o100 | 0o400 | 0o1000)  # CSIZE | CSTOPB | PARENB | PARODD
_CREAD_CLOCAL = const(0o200 | 0o4000)  # receiver on; ignore modem lines (no hang-up on DCD)
_VTIME = const(5)
_VMIN = const(6)
_CFLAG = const(2)
_ISPEED = const(4)
_OSPEED = const(5)
_CC = const(6)

# One read returns at most this much; a driver polls again at once if it got a full chunk.
_READ_CHUNK = const(256)

_CAUSE_FILE = "reset_cause"
_WATCHDOG = "watchdog"
_DEFAULT_ROOT = "meterseal-data"

_root = os.getenv("METERSEAL_ROOT") or _DEFAULT_ROOT
# Under hardware-in-the-loop runs the site's simulated clock (hil_tests/simclock.py publishes
# it to this file) stands in for the wall clock and for measured durations, so that records
# carry the simulated day's times and flow rates; timeouts stay on real ticks.
_sim_clock_path = os.getenv("METERSEAL_SIM_CLOCK")
_root_made = False
_seal_path = None
_wall_offset_ms = 0
_boot_cause = None


def setup(storage_root=None, seal_input=None):
    """Where persistent files and the seal input live (from the configuration); call before any
    other function. None keeps the default: $METERSEAL_ROOT or ./meterseal-data, and the file
    `seal` below the storage root."""
    global _root, _root_made, _seal_path
    if storage_root is not None:
        _root = storage_root
        _root_made = False
    _seal_path = seal_input


def _join(*parts):
    return "/".join(parts)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class _Serial:
    def __init__(self, file):
        self._file = file
        # Allocated once: an idle poll allocates nothing.
        self._buf = bytearray(_READ_CHUNK)
        self._view = memoryview(self._buf)

    def read(self):
        n = self._file.readinto(self._buf)
        return bytes(self._view[:n]) if n else b""

    def write(self, data):
        return self._file.write(data)

    def close(self):
        self._file.close()


_SETUP_ATTEMPTS = const(20)
_SETUP_RETRY_MS = const(100)


def open_serial(port, baudrate, bits, parity, stop):
    """`port` is a device path (/dev/ttyUSB0, a pty). Raises ValueError for settings Linux
    cannot express and OSError when the device cannot be opened."""
    if baudrate not in _SPEEDS or bits not in _CHARACTER_BITS or parity not in _PARITY \
            or stop not in _STOP_BITS:
        raise ValueError("serial %s: unsupported %d %d%s%d" % (port, baudrate, bits, parity, stop))
    # A tty whose previous user was killed while opening it can refuse its settings for a
    # while (EINVAL, seen on ptys after a SIGKILL); a fresh open later takes them, so a
    # restarted gateway keeps trying for up to _SETUP_ATTEMPTS x _SETUP_RETRY_MS.
    for attempt in range(_SETUP_ATTEMPTS):
        try:
            file = open(port, "r+b", buffering=0)
        except OSError as exc:
            raise OSError("serial port %s cannot be opened (%s)" % (port, exc))
        try:
            _configure(file.fileno(), baudrate, bits, parity, stop)
            return _Serial(file)
        except OSError:
            file.close()
            if attempt == _SETUP_ATTEMPTS - 1:
                raise
            time.sleep_ms(_SETUP_RETRY_MS)


def _configure(fd, baudrate, bits, parity, stop):
    termios.setraw(fd)
    attrs = termios.tcgetattr(fd)
    cflag = attrs[_CFLAG] & ~_CFLAG_FRAMING
    attrs[_CFLAG] = (cflag | _CHARACTER_BITS[bits] | _PARITY[parity] | _STOP_BITS[stop]
                     | _CREAD_CLOCAL)
    attrs[_ISPEED] = attrs[_OSPEED] = _SPEEDS[baudrate]
    attrs[_CC][_VMIN] = 0
    attrs[_CC][_VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


ticks_ms = time.ticks_ms
ticks_diff = time.ticks_diff


def _simulated_ms():
    # "SIM_MS REAL_MS SPEED": simulated time SIM_MS at real (epoch) time REAL_MS, running SPEED
    # times real time since; the publisher replaces the file whole on every jump.
    with open(_sim_clock_path) as file:
        sim_ms, real_ms, speed = file.read().split()
    return int(sim_ms) + int((time.time_ns() // 1000000 - int(real_ms)) * float(speed))


def _base_ms():
    return _simulated_ms() if _sim_clock_path else time.time_ns() // 1000000


def wall_ms():
    return _base_ms() + _wall_offset_ms


def set_wall_ms(ms):
    # The gateway does not own the Linux system clock (NTP, or root, does): it keeps an offset.
    global _wall_offset_ms
    _wall_offset_ms = ms - _base_ms()


def measure_ms():
    """Ticks for durations that are signed into records (ticks_diff applies)."""
    return _simulated_ms() if _sim_clock_path else time.ticks_ms()


def storage_root():
    global _root_made
    if not _root_made:
        path = ""
        for part in _root.split("/"):
            path = path + part + "/"
            if part and not _exists(path):
                os.mkdir(path)
        _root_made = True
    return _root


def unique_id():
    """The box's systemd machine id (16 bytes); without one, a random id kept in storage."""
    try:
        with open("/etc/machine-id") as f:
            text = f.read().strip()
        if len(text) == 32:
            return bytes.fromhex(text)
    except (OSError, ValueError):
        pass
    path = _join(storage_root(), "unique_id")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        ident = os.urandom(16)
        with open(path, "wb") as f:
            f.write(ident)
        return ident


class _Watchdog:
    def __init__(self, timeout_ms):
        self._timeout_ms = timeout_ms
        self._cause_path = _join(storage_root(), _CAUSE_FILE)
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self._fed = time.ticks_ms()

    def _watch(self):
        # Check four times per timeout: the watchdog fires at most a quarter late.
        while time.ticks_diff(time.ticks_ms(), self._fed) <= self._timeout_ms:
            time.sleep_ms(self._timeout_ms // 4 or 1)
        with open(self._cause_path, "w") as f:
            f.write(_WATCHDOG)
        os.system("kill -9 $PPID")  # $PPID of the shell is this process


def watchdog(timeout_ms):
    """Start the watchdog; call once. It cannot be stopped, as on the boards."""
    return _Watchdog(timeout_ms)


def seal_closed():
    try:
        with open(_seal_path or _join(storage_root(), "seal"), "rb") as f:
            return f.read(1) == b"1"
    except OSError:
        return False


def reset_cause():
    """Why this process started: "watchdog" when the previous one was killed by the watchdog,
    else "power_on". Read once per process, then the record of it is removed."""
    global _boot_cause
    if _boot_cause is None:
        path = _join(storage_root(), _CAUSE_FILE)
        try:
            with open(path) as f:
                recorded = f.read()
            os.remove(path)
        except OSError:
            recorded = ""
        _boot_cause = _WATCHDOG if recorded == _WATCHDOG else "power_on"
    return _boot_cause
