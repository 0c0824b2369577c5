"""Independent pulse input: the gateway's own count of a dispenser meter's encoder pulses, and
the pure rule that compares the volume they imply with the volume the dispenser reports.

Every pulse input has one small interface, whatever counts the pulses:

    count(meter) -> cumulative forward pulses of `meter` (1..15), modulo 2^32, or None while
                    the input has not yet learned the count (a sale then carries no pulses)

    PulserChannel(port, address)  unix port / emulator: the text channel of
                                  docs/protocols/pulser.md over a HAL serial object
        .count(meter) .edges(meter) -> (a, b) or None  .request()  async .run()
        counters: lines, bad_lines, last_line_ms (ticks of the last good line, or None)
    CounterInput({meter: counter})  boards: any counter with value() -> signed position
        esp32_counter(unit, pin_a, pin_b)  the PCNT peripheral through machine.Encoder
        rp2_counter(pin_a, pin_b)          one IRQ on A's rising edge, B read for direction

    pulse_volume_ml(pulses, k_factor_pulses_per_kl) -> mL, truncated as a meter register is
    mismatch_allowance_ml(...)  mismatch(...)  the threshold rule, below

Threshold (OIML R 117 / JJG 443). The MPE of a dispenser in verification is 0.5 % of the
measured quantity. A pulse-scaling board changes what the CPU counts, not what the encoder gives,
so an honest dispenser and the gateway count the same pulses: the only honest difference is
quantization, below one display step (the CPU truncates its display) plus one pulse (the gateway
and the CPU may read the counter an edge apart). The rule allows exactly that plus a configured
fraction of the MPE (default 50 %, i.e. 0.25 % of the volume), and judges nothing below the
minimum measured quantity (default 5 000 mL; nameplates commonly state 2 L or 5 L, configure the
type-approval certificate's Vmin): below it the allowance is mostly quantization and a cheat
of a few percent is not separable from it.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from meterseal.firmware.aio import sleep_ms
from meterseal.firmware.timing import ticks_ms

MPE_PPM = const(5000)  # 0.5 % of the measured quantity
DEFAULT_MPE_FRACTION_PERCENT = const(50)
DEFAULT_MIN_VOLUME_ML = const(5000)
_U32 = const(0xFFFFFFFF)
_ML_PER_KL = const(1000000)

# A reading line is at most "P 6F 15 " plus three 10-digit counts: far below this. A line that
# grows past it (noise, a wrong baud rate) is dropped rather than allowed to take heap.
_MAX_LINE_BYTES = const(64)
_MAX_METERS = const(15)
_READ_EVERY_MS = const(20)


def pulse_volume_ml(pulses, k_factor_pulses_per_kl):
    """Volume the pulses imply, truncated to whole mL as a meter register truncates."""
    return pulses * _ML_PER_KL // k_factor_pulses_per_kl


def mismatch_allowance_ml(reported_volume_ml, k_factor_pulses_per_kl, display_step_ml,
                          mpe_fraction_percent=DEFAULT_MPE_FRACTION_PERCENT):
    """The largest |reported - pulse volume| an honest dispenser can show: a display step, one
    pulse (rounded up to a mL), and the configured fraction of the MPE."""
    one_pulse_ml = (_ML_PER_KL + k_factor_pulses_per_kl - 1) // k_factor_pulses_per_kl
    mpe_share_ml = reported_volume_ml * MPE_PPM * mpe_fraction_percent // (_ML_PER_KL * 100)
    return display_step_ml + one_pulse_ml + mpe_share_ml


def mismatch(pulse_ml, reported_volume_ml, k_factor_pulses_per_kl, display_step_ml,
             mpe_fraction_percent=DEFAULT_MPE_FRACTION_PERCENT,
             min_volume_ml=DEFAULT_MIN_VOLUME_ML):
    """True when a sale of at least `min_volume_ml` (as reported) differs from the volume its
    pulses imply by more than mismatch_allowance_ml."""
    if reported_volume_ml < min_volume_ml:
        return False
    allowance = mismatch_allowance_ml(reported_volume_ml, k_factor_pulses_per_kl,
                                      display_step_ml, mpe_fraction_percent)
    return abs(reported_volume_ml - pulse_ml) > allowance


class PulserChannel:
    """The emulator's pulser channel (or any device speaking it) through a HAL serial object.

    Lines are `P <address hex> <meter> <a_edges> <b_edges> <position>`; a line for another
    address, with the wrong field count or non-numeric fields is counted in bad_lines and
    ignored. Counts are cumulative, so a lost line costs nothing: the next one has the total.
    count() reads whatever has arrived first, so its answer is as fresh as the channel.
    """

    def __init__(self, port, address):
        self._port = port
        self.address = address
        self._line = bytearray()
        self._positions = [None] * (_MAX_METERS + 1)
        self._edges = [None] * (_MAX_METERS + 1)
        self.lines = 0
        self.bad_lines = 0
        self.last_line_ms = None
        self.request()

    def request(self):
        """Ask for every meter's counts now (the channel's register read)."""
        self._port.write(b"R\n")

    def count(self, meter):
        self._drain()
        return self._positions[meter] if 1 <= meter <= _MAX_METERS else None

    def edges(self, meter):
        """(a_edges, b_edges) of `meter`: a dead channel shows as one count standing still."""
        self._drain()
        return self._edges[meter] if 1 <= meter <= _MAX_METERS else None

    async def run(self):
        # Keeps the channel read while no sale asks, so the device never has to drop lines.
        while True:
            self._drain()
            await sleep_ms(_READ_EVERY_MS)

    def _drain(self):
        while True:
            data = self._port.read()
            if not data:
                return
            for byte in data:
                if byte == 0x0A:
                    self._parse()
                    self._line = bytearray()
                elif len(self._line) < _MAX_LINE_BYTES:
                    self._line.append(byte)

    def _parse(self):
        fields = bytes(self._line).split()
        if not fields or fields[0] != b"P":
            return  # another record type: room for later extensions
        try:
            if len(fields) != 6 or int(fields[1], 16) != self.address:
                raise ValueError
            meter = int(fields[2])
            a_edges, b_edges, position = int(fields[3]), int(fields[4]), int(fields[5])
            if not 1 <= meter <= _MAX_METERS or max(a_edges, b_edges, position) > _U32:
                raise ValueError
        except ValueError:
            self.bad_lines += 1
            return
        self._positions[meter] = position
        self._edges[meter] = (a_edges, b_edges)
        self.lines += 1
        self.last_line_ms = ticks_ms()


class CounterInput:
    """Hardware counters, one per meter, each with value() -> signed quadrature position."""

    def __init__(self, counters):
        self._counters = counters

    def count(self, meter):
        counter = self._counters.get(meter)
        return None if counter is None else counter.value() & _U32

    async def run(self):
        # Hardware counts by itself; the task exists so wiring is the same on every port.
        while True:
            await sleep_ms(1000)


def esp32_counter(unit, pin_a, pin_b):
    """ESP32: PCNT unit `unit` decoding A/B in hardware (machine.Encoder), one count per cycle."""
    from machine import Encoder, Pin

    return Encoder(unit, Pin(pin_a, Pin.IN), Pin(pin_b, Pin.IN), phases=1)


class _IrqQuadrature:
    # One count per full cycle: on A's rising edge B is low going forward, high going back.
    def __init__(self, pin_a, pin_b):
        from machine import Pin

        self._b = Pin(pin_b, Pin.IN)
        self._position = 0
        Pin(pin_a, Pin.IN).irq(self._edge, Pin.IRQ_RISING, hard=True)

    def _edge(self, pin):
        if self._b.value():
            self._position -= 1
        else:
            self._position += 1

    def value(self):
        return self._position


def rp2_counter(pin_a, pin_b):
    """RP2040: a hard IRQ on A's rising edge; good to tens of kHz, far above a pulser's rate."""
    return _IrqQuadrature(pin_a, pin_b)
