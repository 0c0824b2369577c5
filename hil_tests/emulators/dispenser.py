"""An emulated fuel dispenser: one DART fuelling point as a pump (slave) on a serial line, with
its meters, its encoder's pulser channel, switchable cheats and a ground-truth log.

Usage::

    clock = SimClock(speed=60)
    port = PtyPort()                         # or SharedLine().attach_local("pump-50")
    pump = Dispenser(port, clock, address=0x50, seed=7, nozzles=(
        Nozzle(grade=1, max_flow_lpm=40, unit_price_minor_per_kl=789000),    # 7.890 per litre
        Nozzle(grade=3, max_flow_lpm=130, unit_price_minor_per_kl=721000),   # diesel
    ))
    pump.start()
    draw = pump.customer_draw(1, 25000)      # lift nozzle 1, wait for authorization, take 25 L
    draw.wait(timeout=30)                    # a DART master must authorize meanwhile
    draw.entry                               # the TruthLog entry of that sale
    pump.cheats.fit(PULSE_SCALING_BOARD, 3)  # 3 % more pulses reach the CPU than the encoder gives
    pump.stop(); port.close()

API
    Dispenser(port, clock, address=0x50, nozzles=(Nozzle(),), seed=0, identity=None,
              swap_identity=None, software_version="0231", max_amount_minor=999999,
              pulser_interval_s=0.5, pulser_heartbeat_s=5.0)
        .start()  .stop()               thread life; stop() also closes the pulser pty. The DART
                                        port belongs to the caller, who closes it.
        .address  .pulser_path          the pulser channel's device (docs/protocols/pulser.md)
        .cheats   CheatBoard over KINDS .truth  TruthLog, one entry per sale (see _end_sale)
        .errors   tracebacks of anything that went wrong inside the thread
        .link_stats  counters: frames_in, bad_frames_in, unknown_transactions, naks_sent,
                     data_frames_out, retransmissions, faults_injected, reports_dropped,
                     pulser_lines_dropped
        customer:  .lift(nozzle)  .hang_up(nozzle)  .customer_draw(nozzle, target_ml, ...) -> Draw
        site:      .power_fail()  .power_restore()  .inject_fault(kind, count=1)   FAULTS
        readings:  .status  .nozzle_out  .totalizers() -> [(volume_ml, amount_minor)] per nozzle
    Nozzle (from hydraulics): grade, max_flow_lpm, k_factor_pulses_per_kl, meter_pulses_per_kl,
        unit_price_minor_per_kl, totalizer_ml, amount_totalizer_minor, ramp_up_s, ramp_down_s

One Dispenser is one DART fuelling point, i.e. one pump address, with 1..4 nozzles (logical
nozzle numbers 1..4, one meter each). A two-sided dispenser is two Dispensers at two addresses
on the same line, each with its own pulser channel.

Pump states (DC1) and what moves them here:

    NOT PROGRAMMED --CD5 prices for every nozzle--> RESET --CD1 authorize--> AUTHORIZED
    AUTHORIZED --allowed nozzle out--> FILLING (a sale starts: display reset, price and presets
                                               taken, valve open while the trigger is squeezed)
    FILLING --suspend--> SUSPENDED --resume--> FILLING
    FILLING/SUSPENDED --nozzle hung up, stop--> FILLING COMPLETED
    FILLING --preset or max amount reached--> MAX REACHED
    FILLING/AUTHORIZED/... --switch off--> SWITCHED OFF
    FILLING COMPLETED / MAX REACHED / SWITCHED OFF / AUTHORIZED --reset--> RESET

Authorizing while a nozzle is already out starts filling at once. A power cut ends a sale in
progress (end status power_fail); when power returns the pump reports DC5 "power failure" and
FILLING COMPLETED, and DC2/DC3 still give that sale until the next filling starts. Prices,
totalizers and the last sale are kept in non-volatile memory; link state is not.

Link behaviour (DART level 2, as a slave): a POLL is answered with the pending DATA block, else
EOT; a DATA block from the master is executed and answered with ACK (NAK if it does not decode,
ACK again without re-executing for a retransmission of the last block); the pump's own DATA
block is sent again on every POLL until the master ACKs it (ACK or ACKPOLL); a NAK from the
master changes nothing, the next POLL gets the block again. Unsolicited reports, queued in the
order they happen so a slow master misses no nozzle movement: DC3 on every nozzle change, DC1 on
every state change (and in answer to every command), DC2 while the display moves (sent first in
a block, with the latest value). Frames for other addresses are ignored.

The pump's own unit conventions: volume with 2 decimals (cL), amount with 2 (minor units),
unit price with 3 (0.001 per litre); so a price in minor units per kL must be a multiple of 100.

DC7 reserved bytes: DART leaves 28 bytes of DC7 to the manufacturer. This pump puts its
legally relevant parameters there (offsets into the 50-byte DC7 payload):

    0..15   K-factor of nozzles 1..4, pulses per kL, 8 BCD digits each (0 for absent nozzles)
    16..17  software version, 4 BCD digits ("0231" = 2.31)
    18..19  calibration counter, 4 BCD digits: +1 on each logged K-factor change
    20..21  parameter checksum, CRC-16/ARC (high byte first) over payload bytes 0..19 and 22..49
"""

import logging
import math
import random
import threading

from meterseal.hil.cheats import CheatBoard
from meterseal.hil.emulators.base import EmulatorThread
from meterseal.hil.emulators.hydraulics import (
    DISPLAY_STEP_ML,
    PPM,
    STEP_S,
    Meter,
    Nozzle,
    amount_minor,
    gain_ppm,
    volume_for_amount_ml,
)
from meterseal.hil.ground_truth import TruthLog
from meterseal.hil.serial_link import PtyPort
from meterseal.protocol import dart
from meterseal.protocol.crc import crc16_arc

_log = logging.getLogger(__name__)

# Cheat kinds and what their size means.
PULSE_SCALING_BOARD = "pulse_scaling_board"  # percent extra pulses, between encoder and CPU
PULSE_SCALING_ENCODER = "pulse_scaling_encoder"  # percent extra pulses, in the encoder itself
K_FACTOR_LOGGED = "k_factor_logged"  # percent over-registration, DC7 shows it (counter + 1)
K_FACTOR_SILENT = "k_factor_silent"  # percent over-registration, DC7 shows the sealed value
BOARD_SWAP = "board_swap"  # DC9 identity changes; percent over-registration of the new board
BACKOFFICE_REWRITE = "backoffice_rewrite"  # percent the reported sale is cut below the totals
KINDS = (
    PULSE_SCALING_BOARD,
    PULSE_SCALING_ENCODER,
    K_FACTOR_LOGGED,
    K_FACTOR_SILENT,
    BOARD_SWAP,
    BACKOFFICE_REWRITE,
)

# Link faults for inject_fault; each applies to the pump's next `count` DATA frames (bad_crc,
# drop_byte) or received frames (silence), or cuts the next DATA frame halfway and then ignores
# `count` frames (disconnect).
FAULTS = ("bad_crc", "drop_byte", "silence", "disconnect")

VOLUME_DECIMALS = 2
AMOUNT_DECIMALS = 2
PRICE_DECIMALS = 3
# Minor units per kL carry 5 decimals of the major unit per litre (currency exponent 2).
_PRICE_PER_KL_DECIMALS = 5
_ML_DECIMALS = 3
MAX_NOZZLES = 4

# Real time the thread waits for line bytes before it looks at the clock again.
_IDLE_WAIT_S = 0.005
_ALARM_POWER_FAILURE = 0x0A
# Reports a pump keeps for a master that does not poll; the oldest go first.
_MAX_REPORTS = 32
# A customer who finds the pump already stopped hangs up after this long.
_DEFAULT_HANGUP_DELAY_S = 3.0
_DC7_K_FACTORS = 0
_DC7_SOFTWARE = 16
_DC7_COUNTER = 18
_DC7_CHECKSUM = 20
_DC7_RESERVED_HEAD = 22


class _StepTime:
    """What CheatBoard.active needs of a clock, pinned to one physics step's time, so a
    time-of-day schedule switches on the same step however late the thread catches up."""

    def __init__(self, now_s, utc_offset_h):
        self._now_s = now_s
        self._utc_offset_h = utc_offset_h

    def local_hour(self):
        return ((self._now_s / 3600.0) + self._utc_offset_h) % 24.0


class Draw:
    """A customer's visit to one nozzle, started by Dispenser.customer_draw.

    Phases: waiting (nozzle out, waiting for authorization), filling (trigger squeezed),
    hanging (done or stopped, about to hang up), done. ``outcome`` is "delivered",
    "not_authorized" (gave up after ``patience_s``) or "stopped" (the pump ended the sale before
    the target: preset, stop, switch-off or power cut); ``entry`` is the sale's truth entry.
    """

    def __init__(self, nozzle, target_ml, trigger, patience_s, hangup_delay_s, lifted_s):
        self.nozzle = nozzle
        self.target_ml = target_ml
        self.trigger = trigger
        self.patience_s = patience_s
        self.hangup_delay_s = hangup_delay_s
        self.lifted_s = lifted_s
        self.phase = "waiting"
        self.hang_at_s = None
        self.outcome = None
        self.entry = None
        self._done = threading.Event()

    @property
    def done(self):
        return self._done.is_set()

    def wait(self, timeout=None):
        """Block until the nozzle is back on its hook (real seconds); True if it is."""
        return self._done.wait(timeout)

    def _finish(self, outcome):
        self.phase = "done"
        self.outcome = self.outcome or outcome
        self._done.set()


class _Sale:
    def __init__(self, nozzle, started_s, unit_price_minor_per_kl, preset_volume_ml,
                 preset_amount_minor, totalizer_ml, amount_totalizer_minor):
        self.nozzle = nozzle
        self.started_s = started_s
        self.unit_price_minor_per_kl = unit_price_minor_per_kl
        self.preset_volume_ml = preset_volume_ml
        self.preset_amount_minor = preset_amount_minor
        self.totalizer_start_ml = totalizer_ml
        self.amount_totalizer_start_minor = amount_totalizer_minor
        self.cheats = {}  # kind -> description, for every cheat that touched this sale
        self.k_factors_used = set()


class Dispenser(EmulatorThread):
    def __init__(
        self,
        port,
        clock,
        address=0x50,
        nozzles=(Nozzle(),),
        seed=0,
        identity=None,
        swap_identity=None,
        software_version="0231",
        max_amount_minor=999999,
        pulser_interval_s=0.5,
        pulser_heartbeat_s=5.0,
    ):
        if not dart.ADDRESS_MIN <= address <= dart.ADDRESS_MAX:
            raise ValueError("address must be 0x50..0x6F, got 0x%02X" % address)
        nozzles = tuple(nozzles)
        if not 1 <= len(nozzles) <= MAX_NOZZLES:
            raise ValueError(
                "a fuelling point has 1..%d nozzles, got %d" % (MAX_NOZZLES, len(nozzles))
            )
        for number, nozzle in enumerate(nozzles, 1):
            if nozzle.unit_price_minor_per_kl is not None:
                _price_to_dart(nozzle.unit_price_minor_per_kl, "nozzle %d price" % number)
        self.identity = identity or "10%08d" % address
        self.swap_identity = swap_identity or "%010d" % ((int(self.identity) + 7919) % 10**10)
        for value in (self.identity, self.swap_identity):
            dart.DC9PumpIdentity(value)  # validates: 10 decimal digits
        if len(software_version) != 4 or not software_version.isdigit():
            raise ValueError("software_version must be 4 digits, e.g. '0231' for 2.31")
        if not 1 <= max_amount_minor <= 99999999:
            raise ValueError("max_amount_minor must be 1..99999999 (8 BCD digits in DC7)")
        super().__init__("dispenser-%02X" % address)
        self.address = address
        self.software_version = software_version
        self.max_amount_minor = max_amount_minor
        self.cheats = CheatBoard(KINDS)
        self.truth = TruthLog()
        self.link_stats = dict.fromkeys(
            ("frames_in", "bad_frames_in", "unknown_transactions", "naks_sent", "data_frames_out",
             "retransmissions", "faults_injected", "reports_dropped", "pulser_lines_dropped"),
            0)
        self._port = port
        self._clock = clock
        self._nozzles = nozzles
        # One RNG per meter, so one nozzle's deliveries never shift another's noise.
        self._meters = [
            Meter(nozzle, random.Random(seed * 1000003 + address * 16 + number))
            for number, nozzle in enumerate(nozzles, 1)
        ]
        self._prices = [n.unit_price_minor_per_kl for n in nozzles]
        self._totals_ml = [n.totalizer_ml for n in nozzles]
        self._totals_minor = [n.amount_totalizer_minor for n in nozzles]
        self._fillings = [0] * len(nozzles)
        self._calibration_count = 0
        self._reported_k = None
        self._logged_k_was_active = False
        self._lock = threading.RLock()
        self._pulser = PtyPort()
        self.pulser_path = self._pulser.path
        self.pulser_interval_s = pulser_interval_s
        self.pulser_heartbeat_s = pulser_heartbeat_s
        self._pulser_sent = [None] * len(nozzles)  # counts last put on the channel, per meter
        self._pulser_due_s = 0.0
        self._heartbeat_due_s = 0.0
        self._pulser_rx = b""
        # Simulated time moves in whole physics steps from here.
        self._origin_s = clock.now()
        self._steps_done = 0
        self._powered = True
        self._status = (
            dart.STATUS_RESET if all(p is not None for p in self._prices)
            else dart.STATUS_NOT_PROGRAMMED
        )
        self._nozzle_out = 0
        self._draws = {}  # nozzle number -> Draw in progress
        self._sale = None
        self._last_sale = None  # (reported volume mL, reported amount, price, nozzle)
        self._sale_number = 0
        self._allowed = None
        self._preset_volume_ml = None
        self._preset_amount_minor = None
        self._faults = []  # [kind, remaining count]
        self._silent_frames = 0
        self._reset_link()
        self._update_reported_k(self._now_s())

    # --- life -----------------------------------------------------------------------------

    def _serve_once(self):
        data = self._port.read(_IDLE_WAIT_S)
        with self._lock:
            self._catch_up()
            if data:
                self._receive(data)
            self._serve_pulser()

    def _shut_down(self):
        self._pulser.close()

    # --- readings -------------------------------------------------------------------------

    @property
    def status(self):
        """The DC1 state code (dart.STATUS_*)."""
        with self._lock:
            self._catch_up()
            return self._status

    @property
    def nozzle_out(self):
        """The logical number of the nozzle out of its holster, 0 if none."""
        with self._lock:
            return self._nozzle_out

    def totalizers(self):
        """(volume_ml, amount_minor) electronic totalizers per nozzle, nozzle 1 first."""
        with self._lock:
            self._catch_up()
            return list(zip(self._totals_ml, self._totals_minor))

    # --- the customer ---------------------------------------------------------------------

    def lift(self, nozzle):
        """Take a nozzle out of its holster. While filling, the trigger is held fully open."""
        with self._lock:
            self._catch_up()
            self._lift(self._check_nozzle(nozzle))

    def hang_up(self, nozzle):
        with self._lock:
            self._catch_up()
            self._hang_up(self._check_nozzle(nozzle))

    def customer_draw(self, nozzle, target_ml, trigger=1.0, patience_s=120.0,
                      hangup_delay_s=_DEFAULT_HANGUP_DELAY_S):
        """A customer lifts ``nozzle``, waits up to ``patience_s`` (simulated) for authorization,
        squeezes the trigger (``trigger`` = fraction of full flow) until the tank has taken
        ``target_ml`` of real fuel (its auto shut-off) or the pump stops (preset), then hangs up
        ``hangup_delay_s`` later. Everything runs on the physics steps, so it is repeatable.
        Returns the Draw at once; ``draw.wait()`` blocks until the nozzle is back."""
        if target_ml <= 0 or not 0.0 < trigger <= 1.0:
            raise ValueError("target_ml must be > 0 and trigger in (0, 1]")
        with self._lock:
            self._catch_up()
            number = self._check_nozzle(nozzle)
            draw = Draw(number, target_ml, trigger, patience_s, hangup_delay_s, self._now_s())
            self._lift(number)
            self._draws[number] = draw
            self._customers_step(self._now_s())
            return draw

    def _check_nozzle(self, nozzle):
        if not 1 <= nozzle <= len(self._nozzles):
            raise ValueError("nozzle must be 1..%d, got %r" % (len(self._nozzles), nozzle))
        return nozzle

    def _lift(self, nozzle):
        if self._nozzle_out:
            raise ValueError(
                "nozzle %d is already out; one fuelling point serves one nozzle at a time"
                % self._nozzle_out
            )
        self._nozzle_out = nozzle
        self._say(self._dc3())
        if self._status == dart.STATUS_AUTHORIZED:
            self._start_filling_if_allowed()

    def _hang_up(self, nozzle):
        if self._nozzle_out != nozzle:
            return
        self._nozzle_out = 0
        self._say(self._dc3())
        if self._sale is not None:
            self._end_sale("completed", dart.STATUS_FILLING_COMPLETED)
        draw = self._draws.pop(nozzle, None)
        if draw is not None:
            draw._finish("delivered")

    # --- the site -------------------------------------------------------------------------

    def power_fail(self):
        """Mains off: the valve shuts, a sale in progress ends (kept in non-volatile memory),
        the pump stops answering on the line."""
        with self._lock:
            self._catch_up()
            if not self._powered:
                return
            if self._sale is not None:
                self._end_sale("power_fail", dart.STATUS_FILLING_COMPLETED)
            elif self._status == dart.STATUS_AUTHORIZED:
                self._set_status(dart.STATUS_RESET)  # an authorization does not survive
            self._powered = False
            self._reset_link()

    def power_restore(self):
        """Mains back: the CPU boots, keeps prices, totals and the last sale, and raises the
        power-failure alarm with its status on the first poll."""
        with self._lock:
            self._catch_up()
            if self._powered:
                return
            self._powered = True
            self._reset_link(alarm=_ALARM_POWER_FAILURE)

    def inject_fault(self, kind, count=1):
        """Corrupt the link on purpose; see FAULTS."""
        if kind not in FAULTS:
            raise ValueError("unknown fault %r; known: %s" % (kind, ", ".join(FAULTS)))
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            if kind == "silence":
                self._silent_frames += count
            else:
                self._faults.append([kind, count])

    # --- physics --------------------------------------------------------------------------

    def _now_s(self):
        return self._origin_s + self._steps_done * STEP_S

    def _catch_up(self):
        target = int(math.floor((self._clock.now() - self._origin_s) / STEP_S + 1e-9))
        while self._steps_done < target:
            if self._idle():
                # Nothing moves and nobody waits on a timer: jump straight to now.
                self._steps_done = target
                break
            self._steps_done += 1
            self._step(self._now_s())
        self._pulser_tick(self._now_s())

    def _idle(self):
        return not self._draws and not any(m.moving for m in self._meters) and (
            self._sale is None or self._nozzle_out == 0
        )

    def _step(self, now_s):
        self._customers_step(now_s)
        when = _StepTime(now_s, self._clock.utc_offset_h)
        for number, meter in enumerate(self._meters, 1):
            trigger = 0.0
            limits = (None, None)
            sale = self._sale
            flowing = (
                self._powered and sale is not None and sale.nozzle == number
                and self._status == dart.STATUS_FILLING and self._nozzle_out == number
            )
            draw = self._draws.get(number)
            if flowing:
                # Without a scripted customer (lift/hang_up by hand) the trigger is held open.
                trigger = 1.0
                true_limit_ml = None
                if draw is not None:
                    trigger = draw.trigger if draw.phase == "filling" else 0.0
                    true_limit_ml = draw.target_ml
                limits = (true_limit_ml, self._display_limit_ml(sale))
            if trigger <= 0.0 and not meter.moving:
                continue
            own_sale = sale if sale is not None and sale.nozzle == number else None
            gains = self._gains(when, meter, own_sale)
            stopped_by = meter.step(STEP_S, trigger, *gains, limits)
            if flowing and meter.sale_displayed_ml != self._displayed_before[number - 1]:
                self._displayed_before[number - 1] = meter.sale_displayed_ml
                self._report_filling = True
            if not meter.moving:
                self._pulser_emit(number, meter)  # the last pulses of a delivery, at once
            if stopped_by == "displayed":
                self._end_sale("preset_reached", dart.STATUS_MAX_REACHED)
            elif stopped_by == "true" and draw is not None and draw.phase == "filling":
                draw.phase = "hanging"
                draw.hang_at_s = now_s + draw.hangup_delay_s
        self._update_reported_k(now_s)

    def _gains(self, when, meter, sale):
        """(encoder gain ppm, board gain ppm, K-factor in use) for this step, noting in the sale
        every cheat that applied."""
        draw_ml = int(meter.sale_true_ml)
        encoder = self._cheat_gain(PULSE_SCALING_ENCODER, when, draw_ml, sale)
        board = self._cheat_gain(PULSE_SCALING_BOARD, when, draw_ml, sale)
        k_divisor = PPM
        for kind in (K_FACTOR_LOGGED, K_FACTOR_SILENT, BOARD_SWAP):
            k_divisor = k_divisor * self._cheat_gain(kind, when, draw_ml, sale) // PPM
        k_factor = round(meter.nozzle.k_factor_pulses_per_kl * PPM / k_divisor)
        if sale is not None:
            sale.k_factors_used.add(k_factor)
        return encoder, board, k_factor

    def _cheat_gain(self, kind, when, draw_ml, sale):
        cheat = self.cheats.active(kind, when, draw_ml)
        if cheat is None:
            return PPM
        if sale is not None:
            sale.cheats[kind] = cheat.describe()
        return gain_ppm(cheat.size)

    def _display_limit_ml(self, sale):
        limits = [volume_for_amount_ml(self.max_amount_minor, sale.unit_price_minor_per_kl)]
        if sale.preset_volume_ml is not None:
            limits.append(sale.preset_volume_ml)
        if sale.preset_amount_minor is not None:
            limits.append(
                volume_for_amount_ml(sale.preset_amount_minor, sale.unit_price_minor_per_kl)
            )
        limits = [limit for limit in limits if limit is not None]
        return min(limits) if limits else None

    def _customers_step(self, now_s):
        for number, draw in list(self._draws.items()):
            if draw.phase == "waiting" and draw.entry is not None:
                # Stopped before the customer even squeezed the trigger.
                draw.phase = "hanging"
                draw.hang_at_s = now_s + draw.hangup_delay_s
            elif draw.phase == "waiting":
                if (self._sale is not None and self._sale.nozzle == number
                        and self._status == dart.STATUS_FILLING):
                    draw.phase = "filling"
                elif now_s - draw.lifted_s >= draw.patience_s:
                    draw.outcome = "not_authorized"
                    self._hang_up(number)
            elif draw.phase == "filling" and self._sale is None:
                # The pump ended the sale under the customer: preset, stop, power cut.
                draw.phase = "hanging"
                draw.hang_at_s = now_s + draw.hangup_delay_s
            elif draw.phase == "hanging" and now_s >= draw.hang_at_s:
                self._hang_up(number)

    # --- sales ----------------------------------------------------------------------------

    def _start_filling_if_allowed(self):
        nozzle = self._nozzle_out
        if not nozzle or (self._allowed is not None and nozzle not in self._allowed):
            return
        price = self._prices[nozzle - 1]
        meter = self._meters[nozzle - 1]
        meter.new_sale()
        self._displayed_before = [0] * len(self._meters)
        self._sale_number += 1
        self._sale = _Sale(
            nozzle, self._now_s(), price, self._preset_volume_ml, self._preset_amount_minor,
            self._totals_ml[nozzle - 1], self._totals_minor[nozzle - 1],
        )
        self._set_status(dart.STATUS_FILLING)
        self._report_filling = True

    def _end_sale(self, end_status, new_status):
        """Close the sale in progress: totals move by what the CPU counted, DART reports the
        (possibly rewritten) sale, and the ground truth gets one entry."""
        sale = self._sale
        index = sale.nozzle - 1
        meter = self._meters[index]
        meter.flow_lpm = 0.0
        self._pulser_emit(sale.nozzle, meter)
        now_s = self._now_s()
        price = sale.unit_price_minor_per_kl
        indicated_ml = meter.sale_displayed_ml
        indicated_minor = amount_minor(indicated_ml, price)
        reported_ml, reported_minor = indicated_ml, indicated_minor
        rewrite = self.cheats.active(
            BACKOFFICE_REWRITE, _StepTime(now_s, self._clock.utc_offset_h), indicated_ml
        )
        if rewrite is not None:
            sale.cheats[BACKOFFICE_REWRITE] = rewrite.describe()
            kept_ppm = gain_ppm(-rewrite.size)  # (100 - size) % of the sale survives
            reported_ml = indicated_ml * kept_ppm // PPM // DISPLAY_STEP_ML * DISPLAY_STEP_ML
            reported_minor = amount_minor(reported_ml, price)
        self._totals_ml[index] += indicated_ml
        self._totals_minor[index] += indicated_minor
        self._fillings[index] += 1
        self._last_sale = (reported_ml, reported_minor, price, sale.nozzle)
        self._sale = None
        draw = self._draws.get(sale.nozzle)
        entry = {
            "sale_number": self._sale_number,
            "address": self.address,
            "nozzle": sale.nozzle,
            "grade": meter.nozzle.grade,
            "start_s": sale.started_s,
            "end_s": now_s,
            "duration_s": round(now_s - sale.started_s, 3),
            "end_status": end_status,
            "true_volume_ml": round(meter.sale_true_ml, 3),
            "pulser_pulses": meter.sale_encoder_pulses,
            "cpu_pulses": meter.sale_cpu_pulses,
            "indicated_volume_ml": indicated_ml,
            "indicated_amount_minor": indicated_minor,
            "reported_volume_ml": reported_ml,
            "reported_amount_minor": reported_minor,
            "unit_price_minor_per_kl": price,
            "preset_volume_ml": sale.preset_volume_ml,
            "preset_amount_minor": sale.preset_amount_minor,
            "totalizer_start_ml": sale.totalizer_start_ml,
            "totalizer_end_ml": self._totals_ml[index],
            "amount_totalizer_start_minor": sale.amount_totalizer_start_minor,
            "amount_totalizer_end_minor": self._totals_minor[index],
            "k_factor_pulses_per_kl": meter.nozzle.k_factor_pulses_per_kl,
            "k_factors_used": sorted(sale.k_factors_used),
            "meter_pulses_per_kl": meter.nozzle.meter_pulses_per_kl,
            "peak_flow_lpm": round(meter.peak_flow_lpm, 3),
            "identity": self._identity(),
            "cheats": [
                {"kind": kind, "description": text} for kind, text in sorted(sale.cheats.items())
            ],
        }
        self.truth.append(entry)
        if draw is not None:
            draw.entry = entry
            if end_status != "completed":
                draw.outcome = "stopped"
        self._report_filling = True
        self._set_status(new_status)

    def _set_status(self, status):
        if status != self._status:
            self._status = status
            self._say(dart.DC1PumpStatus(status))

    def _say(self, transaction):
        """Queue a report for the master's next POLL. Reports are kept in order, so a master
        that polls slowly still sees a nozzle go back and come out again."""
        if len(self._reports) >= _MAX_REPORTS:
            self._reports.pop(0)
            self.link_stats["reports_dropped"] += 1
        self._reports.append(transaction)

    # --- DART application level -----------------------------------------------------------

    def _execute(self, transaction):
        if isinstance(transaction, dart.CD1Command):
            self._command(transaction.command)
        elif isinstance(transaction, dart.CD2AllowedNozzles):
            self._allowed = set(transaction.nozzles)
        elif isinstance(transaction, dart.CD3PresetVolume):
            self._preset_volume_ml = dart.rescale(
                transaction.volume, VOLUME_DECIMALS, _ML_DECIMALS
            )
        elif isinstance(transaction, dart.CD4PresetAmount):
            self._preset_amount_minor = transaction.amount
        elif isinstance(transaction, dart.CD5PriceUpdate):
            for index, price in enumerate(transaction.prices[: len(self._prices)]):
                self._prices[index] = dart.rescale(price, PRICE_DECIMALS, _PRICE_PER_KL_DECIMALS)
            if self._status == dart.STATUS_NOT_PROGRAMMED and None not in self._prices:
                self._set_status(dart.STATUS_RESET)
            else:
                self._say(dart.DC1PumpStatus(self._status))
        elif isinstance(transaction, dart.CD101RequestTotalCounters):
            self._say(self._dc101(transaction.counter))
        else:
            self.link_stats["unknown_transactions"] += 1

    def _command(self, command):
        status = self._status
        if command == dart.CMD_RETURN_PUMP_PARAMETERS:
            self._say(self._dc7())
        elif command == dart.CMD_RETURN_PUMP_IDENTITY:
            self._say(dart.DC9PumpIdentity(self._identity()))
        elif command == dart.CMD_RETURN_FILLING_INFORMATION:
            self._report_filling = True
            self._say(self._dc3())
        elif command == dart.CMD_RESET:
            if status in (dart.STATUS_FILLING_COMPLETED, dart.STATUS_MAX_REACHED,
                          dart.STATUS_SWITCHED_OFF, dart.STATUS_AUTHORIZED, dart.STATUS_RESET):
                self._allowed = None
                self._preset_volume_ml = None
                self._preset_amount_minor = None
                self._set_status(dart.STATUS_RESET)
        elif command == dart.CMD_AUTHORIZE:
            if status == dart.STATUS_RESET:
                self._set_status(dart.STATUS_AUTHORIZED)
                self._start_filling_if_allowed()
        elif command == dart.CMD_STOP:
            if status in (dart.STATUS_FILLING, dart.STATUS_SUSPENDED):
                self._end_sale("stopped", dart.STATUS_FILLING_COMPLETED)
            elif status == dart.STATUS_AUTHORIZED:
                self._set_status(dart.STATUS_RESET)
        elif command == dart.CMD_SWITCH_OFF:
            if self._sale is not None:
                self._end_sale("stopped", dart.STATUS_SWITCHED_OFF)
            elif status != dart.STATUS_NOT_PROGRAMMED:
                self._set_status(dart.STATUS_SWITCHED_OFF)
        elif command == dart.CMD_SUSPEND:
            if status == dart.STATUS_FILLING:
                self._set_status(dart.STATUS_SUSPENDED)
        elif command == dart.CMD_RESUME:
            if status == dart.STATUS_SUSPENDED:
                self._set_status(dart.STATUS_FILLING)
        if self._status == status:
            # Every command is answered with the status it leaves the pump in.
            self._say(dart.DC1PumpStatus(status))

    def _identity(self):
        swapped = self.cheats.active(BOARD_SWAP, self._clock)
        return self.swap_identity if swapped else self.identity

    def _k_factors_reported(self, when):
        """The K-factors the CPU admits to: the sealed ones, or what a logged change or a
        swapped board put in their place. A silent change never shows here."""
        divisor = PPM
        for kind in (K_FACTOR_LOGGED, BOARD_SWAP):
            cheat = self.cheats.active(kind, when)
            if cheat is not None:
                divisor = divisor * gain_ppm(cheat.size) // PPM
        return [round(n.k_factor_pulses_per_kl * PPM / divisor) for n in self._nozzles]

    def _update_reported_k(self, now_s):
        when = _StepTime(now_s, self._clock.utc_offset_h)
        reported = self._k_factors_reported(when)
        logged = self.cheats.active(K_FACTOR_LOGGED, when) is not None
        if self._reported_k is not None and reported != self._reported_k and (
            logged or self._logged_k_was_active
        ):
            self._calibration_count = (self._calibration_count + 1) % 10000
        self._reported_k = reported
        self._logged_k_was_active = logged

    def _dc7(self):
        self._update_reported_k(self._now_s())
        head = bytearray(_DC7_RESERVED_HEAD)
        for index, k_factor in enumerate(self._reported_k):
            at = _DC7_K_FACTORS + 4 * index
            head[at : at + 4] = dart.bcd_encode(k_factor, 4)
        head[_DC7_SOFTWARE : _DC7_SOFTWARE + 2] = dart.bcd_encode(int(self.software_version), 2)
        head[_DC7_COUNTER : _DC7_COUNTER + 2] = dart.bcd_encode(self._calibration_count, 2)
        grades = [n.grade for n in self._nozzles] + [0] * (15 - len(self._nozzles))
        fields = (VOLUME_DECIMALS, AMOUNT_DECIMALS, PRICE_DECIMALS, self.max_amount_minor, grades)
        unsigned = dart.DC7PumpParameters(*fields, bytes(head) + bytes(6)).payload()
        checksum = crc16_arc(unsigned[:_DC7_CHECKSUM] + unsigned[_DC7_RESERVED_HEAD:])
        head[_DC7_CHECKSUM : _DC7_CHECKSUM + 2] = checksum.to_bytes(2, "big")
        return dart.DC7PumpParameters(*fields, bytes(head) + bytes(6))

    def _outgoing(self):
        """The next DATA block's transactions: the display (DC2) first, as real pumps send it,
        then the queued reports in order, as many as fit in one frame."""
        out = []
        size = 0
        if self._report_filling:
            self._report_filling = False
            out.append(dart.DC2FilledVolumeAmount(*self._filling_values()))
            size = len(out[0].encode())
        while self._reports:
            size += len(self._reports[0].encode())
            if size > dart.MAX_DATA_BYTES:
                break
            out.append(self._reports.pop(0))
        return out

    def _filling_values(self):
        """DC2 (volume in cL, amount in minor units): the live display during a sale, else the
        last sale as reported."""
        if self._sale is not None:
            meter = self._meters[self._sale.nozzle - 1]
            volume_ml = meter.sale_displayed_ml
            amount = amount_minor(volume_ml, self._sale.unit_price_minor_per_kl)
        elif self._last_sale is not None:
            volume_ml, amount = self._last_sale[0], self._last_sale[1]
        else:
            volume_ml, amount = 0, 0
        return dart.rescale(volume_ml, _ML_DECIMALS, VOLUME_DECIMALS), amount

    def _dc3(self):
        if self._nozzle_out:
            nozzle = self._nozzle_out
            price = (self._sale.unit_price_minor_per_kl
                     if self._sale is not None and self._sale.nozzle == nozzle
                     else self._prices[nozzle - 1])
        else:
            nozzle = 0
            price = self._last_sale[2] if self._last_sale else self._prices[0]
        return dart.DC3NozzleStatusPrice(_price_to_dart(price or 0, "price"), nozzle,
                                         bool(self._nozzle_out))

    def _dc101(self, counter):
        index = (counter & 0x0F) - 1
        if not 0 <= index < len(self._nozzles) or counter & 0xE0:
            return dart.DC101TotalCounters(counter, 0, 0, 0)
        if counter & 0x10:
            return dart.DC101TotalCounters(counter, self._totals_minor[index],
                                           self._fillings[index], 0)
        total = dart.rescale(self._totals_ml[index], _ML_DECIMALS, VOLUME_DECIMALS)
        return dart.DC101TotalCounters(counter, total, total, 0)

    # --- DART line level ------------------------------------------------------------------

    def _reset_link(self, alarm=None):
        # Volatile: lost at a power cut. The reports restart with the nozzle, any alarm raised
        # at boot, and the status.
        self._decoder = dart.FrameDecoder()
        self._tx_block = None
        self._unacked = None  # (block, transactions) of our DATA block awaiting ACK
        self._last_rx = None  # (block, data) of the master's last DATA block we executed
        self._report_filling = False
        self._reports = []
        self._say(self._dc3())
        if alarm is not None:
            self._say(dart.DC5AlarmCode(alarm))
        self._say(dart.DC1PumpStatus(self._status))
        self._displayed_before = [0] * len(self._meters)

    def _receive(self, data):
        position = 0
        while position < len(data):
            used, result = self._decoder.feed(data, position)
            position += used
            if result is dart.BAD_FRAME:
                self.link_stats["bad_frames_in"] += 1
            elif isinstance(result, dart.Frame) and result.address == self.address:
                self.link_stats["frames_in"] += 1
                if not self._powered:
                    continue
                if self._silent_frames:
                    self._silent_frames -= 1
                    continue
                self._on_frame(result)

    def _on_frame(self, frame):
        kind = frame.kind
        if kind in (dart.ACK, dart.ACKPOLL):
            if self._unacked is not None and self._unacked[0] == frame.block:
                self._unacked = None
        if kind in (dart.POLL, dart.ACKPOLL):
            self._answer_poll()
        elif kind == dart.DATA:
            self._on_data(frame)

    def _on_data(self, frame):
        if self._last_rx == (frame.block, frame.data):
            # Our ACK was lost and the master sent the block again: confirm, do not repeat it.
            self._send(dart.encode_short(self.address, dart.ACK, frame.block))
            return
        try:
            transactions = frame.transactions(dart.TO_PUMP)
        except dart.DARTError as exc:
            self.link_stats["naks_sent"] += 1
            _log.info("dispenser 0x%02X: NAK block %d: %s", self.address, frame.block, exc)
            self._send(dart.encode_short(self.address, dart.NAK, frame.block))
            return
        self._last_rx = (frame.block, frame.data)
        for transaction in transactions:
            self._execute(transaction)
        self._send(dart.encode_short(self.address, dart.ACK, frame.block))

    def _answer_poll(self):
        if self._unacked is not None:
            self.link_stats["retransmissions"] += 1
            block, transactions = self._unacked
        else:
            transactions = self._outgoing()
            if not transactions:
                self._send(dart.encode_short(self.address, dart.EOT, self._tx_block or 0))
                return
            block = 0 if self._tx_block is None else dart.next_block(self._tx_block)
            self._tx_block = block
            self._unacked = (block, transactions)
        self.link_stats["data_frames_out"] += 1
        self._send_data(dart.encode_data(self.address, block, transactions))

    def _send_data(self, raw):
        if self._faults:
            self.link_stats["faults_injected"] += 1
            fault = self._faults[0]
            if fault[0] == "disconnect":
                # The cable comes off halfway through the frame and stays off a while.
                self._faults.pop(0)
                self._send(raw[: len(raw) // 2])
                self._silent_frames += fault[1]
                return
            fault[1] -= 1
            if not fault[1]:
                self._faults.pop(0)
            raw = _flip_one_bit(raw) if fault[0] == "bad_crc" else _drop_one_byte(raw)
        self._send(raw)

    def _send(self, raw):
        self._port.write(raw)

    # --- pulser channel -------------------------------------------------------------------

    def _pulser_tick(self, now_s):
        if now_s >= self._heartbeat_due_s:
            self._heartbeat_due_s = now_s + self.pulser_heartbeat_s
            self._pulser_due_s = now_s + self.pulser_interval_s
            for number, meter in enumerate(self._meters, 1):
                self._pulser_emit(number, meter, force=True)
        elif now_s >= self._pulser_due_s:
            self._pulser_due_s = now_s + self.pulser_interval_s
            for number, meter in enumerate(self._meters, 1):
                self._pulser_emit(number, meter)

    def _pulser_emit(self, number, meter, force=False):
        count = meter.encoder_pulses_total & 0xFFFFFFFF
        if not force and self._pulser_sent[number - 1] == count:
            return
        self._pulser_sent[number - 1] = count
        # The emulated encoder is healthy and never runs backwards: A, B and the quadrature
        # position move together.
        line = b"P %02X %d %d %d %d\n" % (self.address, number, count, count, count)
        if not self._pulser.closed:
            if self._pulser.write_nowait(line):
                self.link_stats["pulser_lines_dropped"] += 1
                # Counts are cumulative: send this meter's again at the next tick, so a reader
                # that fell behind catches up within one interval, not at the next heartbeat.
                self._pulser_sent[number - 1] = None

    def _serve_pulser(self):
        if self._pulser.closed:
            return
        self._pulser_rx = (self._pulser_rx + self._pulser.read(0))[-64:]
        while b"\n" in self._pulser_rx:
            line, self._pulser_rx = self._pulser_rx.split(b"\n", 1)
            if line.strip() == b"R":
                for number, meter in enumerate(self._meters, 1):
                    self._pulser_emit(number, meter, force=True)


def _price_to_dart(price_minor_per_kl, what):
    try:
        return dart.rescale(price_minor_per_kl, _PRICE_PER_KL_DECIMALS, PRICE_DECIMALS)
    except dart.DARTError:
        raise ValueError(
            "%s %d minor units per kL is not a whole 0.001 per litre (a multiple of 100)"
            % (what, price_minor_per_kl)
        ) from None


def _flip_one_bit(raw):
    """The frame with one bit of its data or CRC flipped, as line noise would; the stuffing
    is left intact so the receiver still finds the frame and must reject it on its CRC."""
    out = bytearray(raw)
    # From the first byte after CTRL up to CRC hi; never a stuffing byte, never into one.
    for i in range(2, len(out) - 2):
        if out[i] not in _STUFFING_BYTES and out[i] ^ 1 not in _STUFFING_BYTES:
            out[i] ^= 1
            break
    return bytes(out)


_STUFFING_BYTES = (dart.DLE, dart.SF)


def _drop_one_byte(raw):
    """The frame with one byte lost in the middle (a UART overrun)."""
    i = len(raw) // 2
    return raw[:i] + raw[i + 1 :]
