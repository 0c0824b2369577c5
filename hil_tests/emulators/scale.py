"""An emulated retail price-computing scale (non-automatic weighing instrument, OIML R 76 class
III, e = d) that speaks MT-SICS with meterseal's price extension on a serial line, with switchable
cheats and a ground-truth log.

Usage::

    clock = SimClock(speed=0)                # stepped: deterministic
    port = PtyPort()                         # a client opens port.path as /dev/ttyUSB0
    scale = PriceScale(port, clock, max_mg=15_000_000, e_mg=5_000, seed=7)
    scale.start()                            # power on: initial zero-setting
    entry = scale.customer_weighing(1_234_000, tare_mg=12_000, unit_price_minor_per_kg=1280,
                                    plu=123)  # the TruthLog entry of that sale
    scale.cheats.fit(REMOTE_OFFSET_G, 20, remote())
    scale.cheats.toggle(REMOTE_OFFSET_G, True)  # +20 g on every loaded reading from now on
    scale.stop(); port.close()

API
    PriceScale(port, clock, max_mg=15_000_000, e_mg=5_000, d_mg=None, seed=0, unit="kg",
               serial_number="MS00000001", model="MS-PS15", accuracy_class="III",
               price_interval_minor=1, noise_mg=None, settle_ms=800)
        .start()  .stop()   thread life (also a context manager); the port belongs to the caller
        .cheats   CheatBoard over KINDS      .truth  TruthLog: one entry per sale and per
                                             calibration or parameter change (see _sell)
        .errors   tracebacks of anything that went wrong inside the thread
        .link_stats  lines_in, bad_lines_in, unknown_commands, bytes_dropped
        customer: .place(mass_mg)  .remove(mass_mg=None)  .set_price(unit_price_minor_per_kg,
                  plu=0)  .tare()  .clear_tare()  .zero()  .wait_stable(timeout_s=10)
                  .sell(container_mg=0)  .customer_weighing(mass_mg, tare_mg=0,
                  unit_price_minor_per_kg=None, plu=0, timeout_s=10)
        service:  .calibrate(span_ppm)  .set_parameter(name, value)   each +1 event counter
        readings: .reading() -> dict   .event_count   .last_sale (an mtsics.SaleReply or None)
        protocol: .execute(mtsics.Command) -> the reply value, as the line would carry it

The scale, as R 76 asks of it:
- It samples its load cell (``load_cell.py``: noise, a damped ringing step response) every
  SAMPLE_MS and calls a reading stable when the last STABLE_SAMPLES samples lie within a motion
  band of 1 d (R 76 wants a printed or sold value within 1 e of the final one).
- Initial zero-setting at power on: the load then on the pan becomes zero if it is within
  +-10 % of Max (R 76 allows 20 % of Max in all) and stable; otherwise the scale stays unzeroed
  (weight replies "I") and retries on later requests, as a real scale does once the pan is
  cleared. Zero-setting (Z, ZI): stable only, and within +-2 % of Max around the initial zero (R 76
  allows 4 % of Max in all); it clears the tare. Centre of zero: within 0.25 e, as R 76 defines it.
- Tare (T): the stable gross, 0..Max. Preset tare (TA): a multiple of d in 0..Max.
- Overload above Max + 9 e, underload below -9 e (gross): no weight, "+" or "-".
- Price computing: amount = net x unit price, rounded half up to the price interval;
  a sale needs a stable reading and a positive net.
- The event counter (the audit trail of WELMEC 7.2) counts calibrations and metrological
  parameter changes and is never reset; unit prices are commercial, not metrological.
S and T answer "I" at once while the reading moves (no waiting): a client polls.

Cheats (KINDS, with what their size means); each is fitted with a schedule (cheats.py). The
schedule's ``draw`` is the true load on the pan, in mg.

    REMOTE_OFFSET_G       grams added to every reading above 10 e (a key fob or a back-office
                          switch); the empty pan still reads zero
    REMOTE_OFFSET_PERCENT percent added to every reading above 10 e
    STEP_GAIN             percent span gain while a key combination has it on
    RETAINED_BASE         grams kept on every reading, empty pan included: a non-zero start that
                          zero-setting does not remove
    TARE_ABUSE            grams subtracted from each weighed tare: the customer pays for part of
                          the container
    UNSTABLE_SALE         ms after the load arrives at which the sale is made, moving or not
    SILENT_CALIBRATION    percent span change, without the event counter moving

Ground truth per sale (``truth`` entry, kind "weighing"): txn, time_ms, true_load_mg,
true_tare_mg, true_net_mg, unit_price_minor_per_kg, plu, true_amount_minor; what the scale
indicated: gross_mg, tare_mg, net_mg, tare_mode, amount_minor, stable, centre_of_zero,
start_reading_mg, load_to_stable_ms; the honest_gross_mg / honest_tare_mg / honest_net_mg /
honest_amount_minor the same sample would have given with no cheat; and cheats {kind: size} for
the cheats that changed this sale.
"""

import threading

from meterseal.hil.cheats import CheatBoard
from meterseal.hil.emulators.base import EmulatorThread
from meterseal.hil.emulators.load_cell import SAMPLE_MS, LoadCell
from meterseal.hil.ground_truth import TruthLog
from meterseal.protocol import mtsics
from meterseal.protocol.errors import MTSICSError

REMOTE_OFFSET_G = "remote_offset_g"
REMOTE_OFFSET_PERCENT = "remote_offset_percent"
STEP_GAIN = "step_gain"
RETAINED_BASE = "retained_base"
TARE_ABUSE = "tare_abuse"
UNSTABLE_SALE = "unstable_sale"
SILENT_CALIBRATION = "silent_calibration"
KINDS = (
    REMOTE_OFFSET_G,
    REMOTE_OFFSET_PERCENT,
    STEP_GAIN,
    RETAINED_BASE,
    TARE_ABUSE,
    UNSTABLE_SALE,
    SILENT_CALIBRATION,
)

STABLE_SAMPLES = 5
# Key presses an operator makes before giving up on a reading that keeps moving.
_SALE_ATTEMPTS = 3
PARAMETERS = ("price_interval_minor", "motion_band_mg")
PPM = 1000000

_INITIAL_ZERO_FRACTION = 0.10  # either side of the calibrated zero
_ZERO_SETTING_FRACTION = 0.02  # either side of the initial zero
_RANGE_LIMIT_E = 9  # overload above Max + 9 e, underload below -9 e
_OFFSET_THRESHOLD_E = 10  # remote offsets act only above this load
_UNIT_MG = {"g": 1000, "kg": 1000000}
# Real time the thread waits for line bytes before it looks at the clock again.
_IDLE_WAIT_S = 0.01


def _round_to(value, step):
    """``value`` to the nearest multiple of ``step``, halves away from zero (display rounding)."""
    steps = int(abs(value) / step + 0.5)
    return steps * step if value >= 0 else -steps * step


def amount_minor(net_mg, unit_price_minor_per_kg, price_interval_minor=1):
    """Price computing: net x unit price, rounded half up to the price interval; 0 if net <= 0."""
    if net_mg <= 0:
        return 0
    per_interval = PPM * price_interval_minor
    intervals = (net_mg * unit_price_minor_per_kg + per_interval // 2) // per_interval
    return intervals * price_interval_minor


class _Reading:
    """One sample as the scale indicates it, with what an honest scale would have shown."""

    def __init__(self, sample, signal_mg, gross_mg, honest_gross_mg, raw_gross_mg, stable,
                 applied):
        self.sample = sample
        self.signal_mg = signal_mg
        self.gross_mg = gross_mg
        self.honest_gross_mg = honest_gross_mg
        self.raw_gross_mg = raw_gross_mg
        self.stable = stable
        self.applied = applied  # {cheat kind: size} that changed this reading


class PriceScale(EmulatorThread):
    def __init__(self, port, clock, max_mg=15_000_000, e_mg=5_000, d_mg=None, seed=0, unit="kg",
                 serial_number="MS00000001", model="MS-PS15", accuracy_class="III",
                 price_interval_minor=1, noise_mg=None, settle_ms=800):
        super().__init__("price-scale")
        d_mg = e_mg if d_mg is None else d_mg
        if unit not in _UNIT_MG:
            raise ValueError("unit must be g or kg")
        if e_mg % d_mg or max_mg % e_mg:
            raise ValueError("e must be a multiple of d, and Max of e")
        self.port = port
        self.clock = clock
        self.max_mg = max_mg
        self.e_mg = e_mg
        self.d_mg = d_mg
        self.unit = unit
        self.serial_number = serial_number
        self.model = model
        self.accuracy_class = accuracy_class
        # The fewest decimals that show d in the unit: 5 g in kg -> 3.
        self.decimals = 0
        while d_mg % (_UNIT_MG[unit] // 10**self.decimals):
            self.decimals += 1
        self.cheats = CheatBoard(KINDS)
        self.truth = TruthLog()
        self.link_stats = {"lines_in": 0, "bad_lines_in": 0, "unknown_commands": 0,
                           "bytes_dropped": 0}
        self._cell = LoadCell(seed=seed, noise_mg=0.1 * d_mg if noise_mg is None else noise_mg,
                              settle_ms=settle_ms)
        self._lock = threading.RLock()
        self._customer = threading.Lock()  # one customer at a time
        self._parameters = {"price_interval_minor": price_interval_minor, "motion_band_mg": d_mg}
        self._span_ppm = PPM
        self.event_count = 0
        self._zero_signal_mg = None  # None: not zeroed yet
        self._initial_zero_mg = None
        self._tare_mg = 0
        self._honest_tare_mg = 0
        self._tare_mode = "none"
        self._tare_cheats = {}
        self._unit_price = 0
        self._plu = 0
        self._load_changed_ms = None  # the pan has not been touched since power on
        self._start = (0, True)  # (gross, centre of zero) when the load went on an empty pan
        self._txn = 0
        self.last_sale = None
        self._repeat_sample = None  # SIR: the last sample sent, None when not repeating
        self._powered = False  # initial zero-setting happens only once the scale is on
        self._reader = mtsics.LineReader()

    # --- thread life ---------------------------------------------------------------------

    def _power_on(self):
        """Power on: initial zero-setting before the line is served."""
        with self._lock:
            self._powered = True
            self._try_initial_zero(self._sample_now())

    def _serve_once(self):
        data = self.port.read(_IDLE_WAIT_S)
        if data:
            self._reader.feed(data)
        self._serve_lines(self._reader)
        self._repeat()

    def _serve_lines(self, reader):
        while True:
            try:
                line = reader.next_line()
            except MTSICSError:
                self.link_stats["bad_lines_in"] += 1
                self._send(mtsics.ErrorReply("ET"))
                continue
            if line is None:
                return
            self.link_stats["lines_in"] += 1
            try:
                command = mtsics.parse_command(line)
            except MTSICSError:
                self.link_stats["unknown_commands"] += 1
                self._send(mtsics.ErrorReply("ES"))
                continue
            self._send(self.execute(command))

    def _repeat(self):
        with self._lock:
            if self._repeat_sample is None:
                return
            sample = self._sample_now()
            if sample == self._repeat_sample:
                return
            self._repeat_sample = sample
            reply = self._weight_reply("S", immediate=True)
        self._send(reply)

    def _send(self, reply):
        data = reply.encode()
        # A UART does not wait for a reader: bytes nobody takes are lost.
        write_nowait = getattr(self.port, "write_nowait", None)
        if write_nowait is None:
            self.port.write(data)
        else:
            self.link_stats["bytes_dropped"] += write_nowait(data)

    # --- protocol ------------------------------------------------------------------------

    def execute(self, command):
        """The scale's reply (an mtsics value) to one parsed command."""
        name = command.name
        with self._lock:
            if name != "SIR":
                self._repeat_sample = None  # any other command ends repeat mode
            if name in ("S", "SI"):
                return self._weight_reply("S", immediate=name == "SI")
            if name == "SIR":
                self._repeat_sample = self._sample_now()
                return self._weight_reply("S", immediate=True)
            if name == "T":
                return self._tare()
            if name == "TA":
                return self._preset_tare(command.tare)
            if name == "TAC":
                self._clear_tare()
                return mtsics.StatusReply("TAC", "A")
            if name in ("Z", "ZI"):
                return self._zero(name)
            if name == "@":
                self._clear_tare()
                return mtsics.TextReply("I4", self.serial_number)
            if name == "I2":
                return mtsics.TextReply("I2", "%s %s" % (self.model, self._weight(
                    self.max_mg).field().strip()))
            if name == "I4":
                return mtsics.TextReply("I4", self.serial_number)
            if name == "MSI":
                return mtsics.MetrologyReply(self._weight(self.max_mg), self._weight(self.e_mg),
                                             self._weight(self.d_mg), self.accuracy_class)
            if name == "MSC":
                return mtsics.CounterReply(self.event_count)
            if name == "MSU":
                if command.plu is not None:
                    self._unit_price = command.unit_price_minor_per_kg
                    self._plu = command.plu
                return mtsics.PriceReply(self._unit_price, self._plu)
            if self.last_sale is None:  # MST
                return mtsics.StatusReply("MST", "I")
            return self.last_sale

    def _weight(self, mg):
        return mtsics.Weight(mg, self.unit, self.decimals)

    def _out_of_range(self, reading):
        """The refusal status for this reading: + overload, - underload, I not zeroed; or None."""
        if self._zero_signal_mg is None:
            return "I"
        if reading.gross_mg > self.max_mg + _RANGE_LIMIT_E * self.e_mg:
            return "+"
        if reading.gross_mg < -_RANGE_LIMIT_E * self.e_mg:
            return "-"
        return None

    def _weight_reply(self, reply_id, immediate):
        reading = self._read(self._sample_now())
        refusal = self._out_of_range(reading)
        if refusal:
            return mtsics.StatusReply(reply_id, refusal)
        if not (reading.stable or immediate):
            return mtsics.StatusReply(reply_id, "I")
        return mtsics.WeightReply(reply_id, "S" if reading.stable else "D",
                                  self._weight(reading.gross_mg - self._tare_mg))

    def _tare(self):
        reading = self._read(self._sample_now())
        refusal = self._out_of_range(reading)
        if refusal or not reading.stable:
            return mtsics.StatusReply("T", refusal or "I")
        if reading.gross_mg < 0:
            return mtsics.StatusReply("T", "-")
        if reading.gross_mg > self.max_mg:
            return mtsics.StatusReply("T", "+")
        tare_mg, honest_tare_mg = reading.gross_mg, reading.honest_gross_mg
        applied = dict(reading.applied)
        abuse = self.cheats.active(TARE_ABUSE, self.clock, self._cell.load_mg)
        if abuse is not None and tare_mg > 0:
            tare_mg = max(0, tare_mg - _round_to(abuse.size * 1000, self.d_mg))
            applied[TARE_ABUSE] = abuse.size
        self._tare_mg, self._honest_tare_mg = tare_mg, honest_tare_mg
        self._tare_mode = "weighed" if tare_mg else "none"
        self._tare_cheats = applied
        return mtsics.WeightReply("T", "S", self._weight(tare_mg))

    def _preset_tare(self, tare):
        if tare is not None:
            if (tare.unit != self.unit or tare.mg % self.d_mg or not 0 <= tare.mg <= self.max_mg):
                return mtsics.StatusReply("TA", "L")
            self._tare_mg = self._honest_tare_mg = tare.mg
            self._tare_mode = "preset" if tare.mg else "none"
            self._tare_cheats = {}
        return mtsics.WeightReply("TA", "A", self._weight(self._tare_mg))

    def _clear_tare(self):
        self._tare_mg = self._honest_tare_mg = 0
        self._tare_mode = "none"
        self._tare_cheats = {}

    def _zero(self, name):
        sample = self._sample_now()
        reading = self._read(sample)
        if self._zero_signal_mg is None or not reading.stable:
            return mtsics.StatusReply(name, "I")
        band_mg = _ZERO_SETTING_FRACTION * self.max_mg
        offset_mg = reading.signal_mg - self._initial_zero_mg
        if offset_mg > band_mg:
            return mtsics.StatusReply(name, "+")
        if offset_mg < -band_mg:
            return mtsics.StatusReply(name, "-")
        self._zero_signal_mg = reading.signal_mg
        self._clear_tare()
        return mtsics.StatusReply(name, "A" if name == "Z" else "S")

    # --- measurement ---------------------------------------------------------------------

    def _sample_now(self):
        return self.clock.now_ms() // SAMPLE_MS

    def _try_initial_zero(self, sample):
        if not self._powered or self._zero_signal_mg is not None or not self._stable(sample):
            return
        signal_mg = self._cell.signal_mg(sample)
        if abs(signal_mg) <= _INITIAL_ZERO_FRACTION * self.max_mg:
            self._zero_signal_mg = self._initial_zero_mg = signal_mg

    def _stable(self, sample):
        """The motion window: the last STABLE_SAMPLES samples, all taken after the last load
        change, lie within the motion band."""
        first = sample - STABLE_SAMPLES + 1
        if self._load_changed_ms is not None and first * SAMPLE_MS <= self._load_changed_ms:
            return False
        signals = [self._cell.signal_mg(s) for s in range(first, sample + 1)]
        return max(signals) - min(signals) <= self._parameters["motion_band_mg"]

    def _read(self, sample, cheats=True):
        """The indication at ``sample``: the signal through span, zero and any active cheats."""
        self._try_initial_zero(sample)
        signal_mg = self._cell.signal_mg(sample)
        zero_mg = self._zero_signal_mg or 0.0
        span = self._span_ppm / PPM
        honest_raw = (signal_mg - zero_mg) * span
        applied = {}
        load_mg = self._cell.load_mg

        def active(kind):
            cheat = self.cheats.active(kind, self.clock, load_mg) if cheats else None
            return None if cheat is None else cheat.size

        raw = honest_raw
        for kind in (SILENT_CALIBRATION, STEP_GAIN):
            size = active(kind)
            if size is not None:
                raw *= 1 + size / 100.0
                applied[kind] = size
        size = active(RETAINED_BASE)
        if size is not None:
            raw += size * 1000
            applied[RETAINED_BASE] = size
        if raw > _OFFSET_THRESHOLD_E * self.e_mg:
            size = active(REMOTE_OFFSET_PERCENT)
            if size is not None:
                raw += raw * size / 100.0
                applied[REMOTE_OFFSET_PERCENT] = size
            size = active(REMOTE_OFFSET_G)
            if size is not None:
                raw += size * 1000
                applied[REMOTE_OFFSET_G] = size
        return _Reading(sample, signal_mg, _round_to(raw, self.d_mg),
                        _round_to(honest_raw, self.d_mg), raw, self._stable(sample), applied)

    def reading(self):
        """What the scale indicates now, as a dict (gross/tare/net in mg, stable, refusal)."""
        with self._lock:
            reading = self._read(self._sample_now())
            return {
                "gross_mg": reading.gross_mg,
                "tare_mg": self._tare_mg,
                "net_mg": reading.gross_mg - self._tare_mg,
                "stable": reading.stable,
                "centre_of_zero": abs(reading.raw_gross_mg) <= self.e_mg / 4,
                "refusal": self._out_of_range(reading),
            }

    # --- the customer and the operator ---------------------------------------------------

    def place(self, mass_mg):
        """Put ``mass_mg`` more on the pan."""
        with self._lock:
            if self._cell.load_mg == 0:
                reading = self._read(self._sample_now())
                self._start = (reading.gross_mg, abs(reading.raw_gross_mg) <= self.e_mg / 4)
            self._set_load(self._cell.load_mg + mass_mg)

    def remove(self, mass_mg=None):
        """Take ``mass_mg`` off the pan, or everything."""
        with self._lock:
            load_mg = self._cell.load_mg
            if mass_mg is not None and not 0 <= mass_mg <= load_mg:
                raise ValueError("cannot remove %d mg from a %d mg load" % (mass_mg, load_mg))
            self._set_load(0 if mass_mg is None else load_mg - mass_mg)

    def _set_load(self, load_mg):
        now_ms = self.clock.now_ms()
        self._cell.set_load(now_ms, load_mg)
        self._load_changed_ms = now_ms

    def set_price(self, unit_price_minor_per_kg, plu=0):
        mtsics.PriceReply(unit_price_minor_per_kg, plu).encode()  # validates both
        with self._lock:
            self._unit_price, self._plu = unit_price_minor_per_kg, plu

    def tare(self):
        """Press tare: the reply T would give."""
        with self._lock:
            return self._tare()

    def clear_tare(self):
        with self._lock:
            self._clear_tare()

    def zero(self):
        """Press zero: the reply Z would give."""
        with self._lock:
            return self._zero("Z")

    def wait_stable(self, timeout_s=10.0):
        """Let simulated time pass, one sample at a time, until the reading is stable; False if it
        is not within ``timeout_s`` (simulated)."""
        for _ in range(int(timeout_s * 1000 / SAMPLE_MS) + 1):
            with self._lock:
                if self._stable(self._sample_now()):
                    return True
            self.clock.sleep(SAMPLE_MS / 1000.0)
        return False

    def sell(self, container_mg=0):
        """Complete a sale of what is on the pan (the operator's PLU or print key) and return its
        truth entry. ``container_mg`` is the true mass of any container among the load, for the
        ground truth only. Refused (RuntimeError) without a stable reading, unless UNSTABLE_SALE
        is active, and without a positive net."""
        with self._lock:
            sample = self._sample_now()
            reading = self._read(sample)
            refusal = self._out_of_range(reading)
            load_mg = self._cell.load_mg
            unstable = self.cheats.active(UNSTABLE_SALE, self.clock, load_mg)
            if refusal:
                raise RuntimeError("no sale: the scale answers %r" % refusal)
            if not reading.stable and unstable is None:
                raise RuntimeError("no sale: the reading is not stable")
            net_mg = reading.gross_mg - self._tare_mg
            if net_mg <= 0:
                raise RuntimeError("no sale: net %d mg is not positive" % net_mg)
            return self._sell(sample, reading, unstable, load_mg, container_mg)

    def _sell(self, sample, reading, unstable, load_mg, container_mg):
        now_ms = sample * SAMPLE_MS
        interval = self._parameters["price_interval_minor"]
        net_mg = reading.gross_mg - self._tare_mg
        honest_net_mg = reading.honest_gross_mg - self._honest_tare_mg
        amount = amount_minor(net_mg, self._unit_price, interval)
        changed_ms = self._load_changed_ms or 0
        stable_ms = self._first_stable_ms(sample, changed_ms)
        applied = dict(self._tare_cheats)
        applied.update(reading.applied)
        if not reading.stable:
            applied[UNSTABLE_SALE] = unstable.size
        self._txn += 1
        start_mg, centre_of_zero = self._start
        self.last_sale = mtsics.SaleReply(
            self._txn, reading.stable, self._weight(reading.gross_mg),
            self._weight(self._tare_mg), self._weight(net_mg), self._unit_price, amount,
            self._plu, self._tare_mode, self._weight(start_mg), centre_of_zero,
            (now_ms if stable_ms is None else stable_ms) - changed_ms)
        entry = {
            "kind": "weighing",
            "txn": self._txn,
            "time_ms": now_ms,
            "true_load_mg": load_mg,
            "true_tare_mg": container_mg,
            "true_net_mg": load_mg - container_mg,
            "unit_price_minor_per_kg": self._unit_price,
            "plu": self._plu,
            "true_amount_minor": amount_minor(load_mg - container_mg, self._unit_price, interval),
            "gross_mg": reading.gross_mg,
            "tare_mg": self._tare_mg,
            "net_mg": net_mg,
            "tare_mode": self._tare_mode,
            "amount_minor": amount,
            "stable": reading.stable,
            "centre_of_zero": centre_of_zero,
            "start_reading_mg": start_mg,
            "load_to_stable_ms": self.last_sale.load_to_stable_ms,
            "honest_gross_mg": reading.honest_gross_mg,
            "honest_tare_mg": self._honest_tare_mg,
            "honest_net_mg": honest_net_mg,
            "honest_amount_minor": amount_minor(honest_net_mg, self._unit_price, interval),
            "cheats": applied,
        }
        self.truth.append(entry)
        return entry

    def _first_stable_ms(self, sample, changed_ms):
        """When the reading first became stable after the last load change, or None."""
        for candidate in range(changed_ms // SAMPLE_MS + STABLE_SAMPLES, sample + 1):
            if self._stable(candidate):
                return candidate * SAMPLE_MS
        return None

    def customer_weighing(self, mass_mg, tare_mg=0, unit_price_minor_per_kg=None, plu=0,
                          timeout_s=10.0):
        """One customer from an empty pan to a sale: the container (if ``tare_mg``) goes on and is
        tared, the goods go on, the scale settles (or, with UNSTABLE_SALE, is sold while it
        moves), the sale is made and the pan is cleared. Returns the sale's truth entry."""
        with self._customer:
            if self._cell.load_mg:
                self.remove()
            self.clear_tare()
            if unit_price_minor_per_kg is not None:
                self.set_price(unit_price_minor_per_kg, plu)
            self._settle(timeout_s, "the empty pan")
            if tare_mg:
                self.place(tare_mg)
                self._settle(timeout_s, "the container")
                reply = self.tare()
                if not isinstance(reply, mtsics.WeightReply):
                    raise RuntimeError("tare refused: %r" % reply)
            self.place(mass_mg)
            unstable = self.cheats.active(UNSTABLE_SALE, self.clock, tare_mg + mass_mg)
            if unstable is not None:
                self.clock.sleep(unstable.size / 1000.0)
                entry = self.sell(container_mg=tare_mg)
            else:
                entry = self._sell_when_stable(tare_mg, timeout_s)
            self.remove()
            self.clear_tare()
            return entry

    def _sell_when_stable(self, container_mg, timeout_s):
        # On a running clock the reading can move again between "stable" and the key press;
        # the scale then refuses, and the operator waits and presses again, as at a real counter.
        for attempt in range(_SALE_ATTEMPTS):
            self._settle(timeout_s, "the goods")
            try:
                return self.sell(container_mg=container_mg)
            except RuntimeError:
                if attempt == _SALE_ATTEMPTS - 1:
                    raise

    def _settle(self, timeout_s, what):
        if not self.wait_stable(timeout_s):
            raise TimeoutError("%s did not settle within %g s" % (what, timeout_s))

    # --- service -------------------------------------------------------------------------

    def calibrate(self, span_ppm):
        """A logged calibration: the span becomes ``span_ppm`` / 1e6; the event counter + 1."""
        with self._lock:
            old = self._span_ppm
            self._span_ppm = span_ppm
            self._log_event("calibration", "span_ppm", old, span_ppm)

    def set_parameter(self, name, value):
        """A logged metrological parameter change (one of PARAMETERS); the event counter + 1."""
        if name not in PARAMETERS:
            raise ValueError(
                "unknown parameter %r; the scale has %s" % (name, ", ".join(PARAMETERS)))
        with self._lock:
            old = self._parameters[name]
            self._parameters[name] = value
            self._log_event("parameter_change", name, old, value)

    def _log_event(self, kind, name, old, new):
        self.event_count += 1
        self.truth.append({"kind": kind, "time_ms": self.clock.now_ms(), "parameter": name,
                           "old_value": old, "new_value": new, "event_count": self.event_count})
