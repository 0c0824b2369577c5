"""Wayne DART dispenser driver: master mode and passive tap (DESIGN.md §5, docs/drivers/dart.md).

    DartMaster(port, recorder, clock, addresses=(0x50,), policy=authorize_on_lift, **options)
        polls its pumps, authorizes per the policy, reads identity, parameters, totals and every
        sale; `port` is a HAL serial object (read() -> bytes, write(data)).
    DartTap(read, recorder, clock, addresses=(0x50,), **options)
        listens to a station controller and its pumps. It is given the port's read function
        only: it holds nothing it could transmit with.
    Both: `async run()`; options as in PumpTracker, plus the link options of each class.
    DartTap.feed(data) takes line bytes directly (run() reads them; a capture can be replayed).
    authorize_on_lift(address, nozzle)  preset_policy(volume_ml=None, amount_minor=None)
    PumpTracker  the sale logic shared by both modes: typed transactions in, observations out
    FlowProfile  the bounded per-interval volumes of a sale

`clock` is the HAL board (or anything with ticks_ms(), ticks_diff(a, b), wall_ms()). Values go
to the recorder in record units (docs/gateway.md); a frame that fails its CRC or does not decode
is only counted, never absorbed, so no corrupted byte reaches a signed value.
"""

from meterseal.firmware.drivers import pulses as pulse_rules
from meterseal.firmware.aio import sleep_ms
from meterseal.protocol import dart
from meterseal.protocol.records import MAX_FLOW_POINTS

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


LINK = "dispenser"
_ML_DECIMALS = const(3)
_PER_KL_DECIMALS = const(3)  # minor units per kL carry 3 more decimals than per litre
_U32 = const(0xFFFFFFFF)
_ALARM_POWER_FAILURE = const(0x0A)
_MAX_FLOW_INTERVAL_MS = const(3600000)
_MAX_NOZZLE = const(15)
_AMOUNT_COUNTER = const(0x10)

_FILLING_STATES = (dart.STATUS_FILLING, dart.STATUS_SUSPENDED)
_ENDED_STATES = (dart.STATUS_FILLING_COMPLETED, dart.STATUS_MAX_REACHED,
                 dart.STATUS_SWITCHED_OFF)
_IDLE_STATES = (dart.STATUS_NOT_PROGRAMMED, dart.STATUS_RESET, dart.STATUS_AUTHORIZED)


def authorize_on_lift(address, nozzle):
    """Authorize every lifted nozzle, without a preset."""
    return {}


def preset_policy(volume_ml=None, amount_minor=None):
    """Authorize with a volume or amount preset."""

    def policy(address, nozzle):
        return {"preset_volume_ml": volume_ml, "preset_amount_minor": amount_minor}

    return policy


class FlowProfile:
    """`volumes_ml[i]`: volume dispensed from i × interval_ms to (i + 1) × interval_ms after the
    start (docs/record-format.md §6.1). Fed cumulative display readings; at MAX_FLOW_POINTS the
    interval doubles and neighbours are summed, so a long sale never grows the record."""

    def __init__(self, interval_ms):
        self.interval_ms = interval_ms
        self.volumes_ml = []
        self._accounted_ml = 0

    def add(self, elapsed_ms, cumulative_ml):
        index = max(elapsed_ms, 0) // self.interval_ms
        while index >= MAX_FLOW_POINTS:
            if self.interval_ms * 2 > _MAX_FLOW_INTERVAL_MS:
                index = MAX_FLOW_POINTS - 1  # longer than the schema's interval allows: lump
                break
            self._coarsen()
            index = max(elapsed_ms, 0) // self.interval_ms
        volumes = self.volumes_ml
        while len(volumes) <= index:
            volumes.append(0)
        # A display that goes down (a rewritten final figure) adds nothing: the profile keeps
        # what was shown, and its sum above the sale's volume is itself evidence.
        if cumulative_ml > self._accounted_ml:
            volumes[index] += cumulative_ml - self._accounted_ml
            self._accounted_ml = cumulative_ml

    def _coarsen(self):
        volumes = self.volumes_ml
        merged = []
        for i in range(0, len(volumes), 2):
            merged.append(volumes[i] + (volumes[i + 1] if i + 1 < len(volumes) else 0))
        self.volumes_ml = merged
        self.interval_ms *= 2


class _Sale:
    def __init__(self, nozzle, wall_ms, measured_ms, price, preset_volume_ml, preset_amount_minor,
                 totals, pulses_start, interval_ms):
        self.nozzle = nozzle
        self.start_wall_ms = wall_ms
        self.start_ms = measured_ms  # on the HAL's measure_ms, as every signed duration
        self.price = price  # pump units; None until a DC3 for this nozzle
        self.preset_volume_ml = preset_volume_ml
        self.preset_amount_minor = preset_amount_minor
        self.totals_start = totals  # (volume, amount) in pump units, each None if unknown
        self.pulses_start = pulses_start
        self.profile = FlowProfile(interval_ms)
        self.stopped = False
        self.power_failed = False
        self.closing = False
        self.end_state = None
        self.end_wall_ms = None
        self.end_ms = None
        self.closed_ticks = None  # when closing began, on the real ticks of the close timeout
        self.final_filled = False
        self.totals_after = 0  # bit 1: volume total read after the end, bit 2: amount total
        self.pulses_end = None
        self.facts_pending = False
        self.found = None  # end status of a sale found finished, never seen running


class PumpTracker:
    """What one pump (DART address) has said and been told, and its sales.

    absorb(direction, transactions) takes every decoded block in line order (TO_PUMP or
    FROM_PUMP); tick() closes a sale whose final figures never came (tap mode). A sale opens at
    DC1 FILLING, closes at FILLING COMPLETED / MAX REACHED / SWITCHED OFF, and is recorded once
    the final DC2 (sent with or after the closing DC1) and the nozzle's volume and amount totals
    read after the end are in; or, in tap mode, when the pump is reset or close_timeout_ms
    passes, with what was seen (end_status link_lost if the final DC2 never came).

    With check_unread (master), a pump found holding a finished sale it was never seen running
    (first contact after a restart, back after an outage) has `found` set until the totals are
    in: settle_found() records that sale if the nozzle's totalizer moved since the recorder
    last kept it (recorder.last_totalizer), else it was recorded before. Totals are reported
    to the recorder only after the sale they end is recorded, so what it keeps always means
    "recorded up to here".

    Options: currency_decimals=2, flow_interval_ms=1000, pulse_input=None (count(meter)),
    sealed_k_factors=None (pulses per kL, nozzle 1 first; else DC7's vendor bytes),
    vendor_dc7=True (the pump follows the DC7 vendor layout), decimals=None and grades=None
    (registry values used until DC7 is read), mpe_fraction_percent, min_volume_ml (pulses.py),
    close_timeout_ms=None (tap mode: record after this long anyway), check_unread=False.
    """

    def __init__(self, address, recorder, clock, currency_decimals=2, flow_interval_ms=1000,
                 pulse_input=None, sealed_k_factors=None, vendor_dc7=True, decimals=None,
                 grades=None, mpe_fraction_percent=pulse_rules.DEFAULT_MPE_FRACTION_PERCENT,
                 min_volume_ml=pulse_rules.DEFAULT_MIN_VOLUME_ML, close_timeout_ms=None,
                 check_unread=False):
        self.address = address
        self.device_key = {"dispenser_address": address}
        self._recorder = recorder
        self._clock = clock
        self._currency_decimals = currency_decimals
        self._flow_interval_ms = flow_interval_ms
        self._pulse_input = pulse_input
        self._sealed_k_factors = sealed_k_factors
        self._vendor_dc7 = vendor_dc7
        self._mpe_fraction_percent = mpe_fraction_percent
        self._min_volume_ml = min_volume_ml
        self._close_timeout_ms = close_timeout_ms
        self._check_unread = check_unread
        self.decimals = decimals  # (volume, amount, price); DC7's replace them once heard
        self.grades = grades
        self.k_factors = None
        self.software_id = None
        self.param_checksum = None
        self.identity = None
        self.status = None
        self.nozzle_out = 0
        self.lifts = 0  # nozzle lifts seen: one authorization decision per lift
        self.filled = None  # (volume, amount) of the last DC2, pump units
        self._price = None  # (nozzle, price) of the last DC3
        self._volume_totals = [None] * (_MAX_NOZZLE + 1)
        self._amount_totals = [None] * (_MAX_NOZZLE + 1)
        self._preset = (None, None)  # (volume, amount) told to the pump, pump units
        # Per meter, the pulse count at rest: read at first contact, then at each sale's end.
        self._rest_counts = [None] * (_MAX_NOZZLE + 1)
        self.sale = None
        self.found = None  # the end status a found sale gets, until settled
        self._outage = False  # the link was lost since the last sale: forget() was called
        self._power_alarm = False  # DC5 power failure heard while no sale was open
        self.sales_recorded = 0
        self.sales_unrecordable = 0

    def forget(self):
        """The link was lost: what the pump says now must be heard afresh. An open sale and
        the totals stay; the next status closes the sale if it ended meanwhile."""
        self.status = None
        self.nozzle_out = 0
        self._outage = True

    # --- input ------------------------------------------------------------------------------

    def absorb(self, direction, transactions):
        if direction == dart.TO_PUMP:
            for transaction in transactions:
                self._told(transaction)
            return
        facts = False
        totals = 0
        dc2_in_block = False
        for t in transactions:
            if isinstance(t, dart.DC2FilledVolumeAmount):
                self.filled = (t.volume, t.amount)
                dc2_in_block = True
                self._on_display()
            elif isinstance(t, dart.DC1PumpStatus):
                self._on_status(t.status, dc2_in_block)
            elif isinstance(t, dart.DC3NozzleStatusPrice):
                nozzle_out = t.nozzle if t.nozzle_out else 0
                if nozzle_out and nozzle_out != self.nozzle_out:
                    self.lifts += 1
                self.nozzle_out = nozzle_out
                self._price = (t.nozzle, t.price)
                sale = self.sale
                if sale is not None and (t.nozzle == sale.nozzle or sale.closing and not t.nozzle):
                    sale.price = t.price
            elif isinstance(t, dart.DC5AlarmCode):
                if t.alarm == _ALARM_POWER_FAILURE:
                    if self.sale is not None:
                        self.sale.power_failed = True
                    else:
                        self._power_alarm = True
            elif isinstance(t, dart.DC7PumpParameters):
                self._on_parameters(t)
                facts = True
            elif isinstance(t, dart.DC9PumpIdentity):
                self.identity = t.identity
                facts = True
                if self.sale is not None and self.sale.closing:
                    self.sale.facts_pending = False  # DC7 is asked first, so it is in too
            elif isinstance(t, dart.DC101TotalCounters):
                totals |= self._on_totals(t)
        if facts:
            self._report_facts()
        if self.found:
            if totals:
                self.settle_found(False)
        else:
            sale = self.sale
            for nozzle in range(1, _MAX_NOZZLE + 1):
                # A closing sale's end totals are reported once it is recorded (_finish_if_ready).
                if (totals & (1 << nozzle) and self._volume_totals[nozzle] is not None
                        and not (sale is not None and sale.closing and sale.nozzle == nozzle)):
                    self._report_totalizer(nozzle)
        self._take_baseline()
        self._finish_if_ready(False)

    def tick(self):
        sale = self.sale
        if sale is None or not sale.closing or self._close_timeout_ms is None:
            return
        if self._clock.ticks_diff(self._clock.ticks_ms(), sale.closed_ticks) >= self._close_timeout_ms:
            self._finish_if_ready(True)

    def _told(self, t):
        if isinstance(t, dart.CD1Command):
            if t.command == dart.CMD_RESET:
                self._preset = (None, None)
                self._finish_if_ready(True)  # the controller is done with the sale
            elif t.command in (dart.CMD_STOP, dart.CMD_SWITCH_OFF) and self.sale is not None:
                self.sale.stopped = True
        elif isinstance(t, dart.CD3PresetVolume):
            self._preset = (t.volume, self._preset[1])
        elif isinstance(t, dart.CD4PresetAmount):
            self._preset = (self._preset[0], t.amount)

    def _on_status(self, status, dc2_in_block):
        previous = self.status
        self.status = status
        sale = self.sale
        if self.found and status not in _ENDED_STATES:
            self.settle_found(True)  # the pump moved on: settled with what is known
        if status in _FILLING_STATES:
            if sale is not None and sale.closing:
                self._finish_if_ready(True)
                sale = None
            if sale is None:
                self._open()
        elif status in _ENDED_STATES:
            if sale is not None and not sale.closing:
                self._close(status, dc2_in_block)
            elif (sale is None and self._check_unread and not self.found
                  and previous not in _ENDED_STATES):
                # Finished without being seen: while the link was down, else while the
                # gateway was (its power failed, or it restarted).
                self.found = "link_lost" if self._outage else "power_fail"
        elif sale is not None:
            # Back to idle: a closing sale is done; an open one ended unseen.
            if not sale.closing:
                self._close(status, False)
            self._finish_if_ready(True)

    def _on_display(self):
        sale = self.sale
        if sale is None or self.decimals is None:
            return
        if sale.closing:
            sale.final_filled = True
            return
        elapsed_ms = self._clock.ticks_diff(self._clock.measure_ms(), sale.start_ms)
        try:
            sale.profile.add(elapsed_ms, dart.rescale(self.filled[0], self.decimals[0],
                                                      _ML_DECIMALS))
        except dart.DARTError:
            pass  # a volume finer than 1 mL: the profile skips it, the sale itself refuses it

    def _on_parameters(self, dc7):
        self.decimals = (dc7.volume_decimals, dc7.amount_decimals, dc7.price_decimals)
        self.grades = dc7.grades
        if self._vendor_dc7:
            try:
                self.k_factors = dart.dc7_k_factors(dc7)
                self.software_id = dart.dc7_software_version(dc7)
                self.param_checksum = dart.dc7_param_checksum(dc7)
            except dart.DARTError:
                self.k_factors = self.software_id = self.param_checksum = None

    def _on_totals(self, t):
        nozzle = t.counter & 0x0F
        if not 1 <= nozzle <= _MAX_NOZZLE or t.counter & 0xE0:
            return 0
        amount = t.counter & _AMOUNT_COUNTER
        (self._amount_totals if amount else self._volume_totals)[nozzle] = t.total
        sale = self.sale
        if sale is not None and sale.closing and sale.nozzle == nozzle:
            sale.totals_after |= 2 if amount else 1
        return 1 << nozzle

    def _take_baseline(self):
        # A meter is still from the end of one sale to the start of the next, so its count is
        # read as early in that gap as possible: at the sale's end, or at the first idle block
        # heard. Read at the lift instead, a gateway lagging behind the line by more than the
        # lift-to-flow time would take pulses of the sale itself as its baseline.
        if (self._pulse_input is None or self.grades is None or self.sale is not None
                or self.status is None or self.status in _FILLING_STATES):
            return
        rest = self._rest_counts
        for nozzle in range(1, len(self.grades) + 1):
            if rest[nozzle] is None and self.grades[nozzle - 1]:
                rest[nozzle] = self._pulse_input.count(nozzle)

    # --- a sale -----------------------------------------------------------------------------

    def _open(self):
        nozzle = self.nozzle_out or (self._price[0] if self._price else 0)
        if not nozzle:
            return  # filling without a nozzle: nothing can be attributed
        clock = self._clock
        price = self._price[1] if self._price and self._price[0] == nozzle else None
        pulses_start = self._rest_counts[nozzle]
        self._rest_counts[nozzle] = None
        self._power_alarm = self._outage = False
        volume, amount = self._preset
        self.sale = _Sale(
            nozzle, clock.wall_ms(), clock.measure_ms(), price,
            self._scaled(volume, 0, _ML_DECIMALS), self._scaled(amount, 1, self._currency_decimals),
            (self._volume_totals[nozzle], self._amount_totals[nozzle]), pulses_start,
            self._flow_interval_ms)

    def _close(self, state, final_filled):
        sale = self.sale
        sale.closing = True
        sale.end_state = state
        sale.end_wall_ms = self._clock.wall_ms()
        sale.end_ms = self._clock.measure_ms()
        sale.closed_ticks = self._clock.ticks_ms()
        sale.final_filled = final_filled
        if self._pulse_input is not None:
            # The channel sent the final count when the meter stopped, before this DC1.
            count = self._pulse_input.count(sale.nozzle)
            self._rest_counts[sale.nozzle] = count
            if sale.pulses_start is not None:
                sale.pulses_end = count

    def _finish_if_ready(self, force):
        sale = self.sale
        if sale is None or not sale.closing:
            return
        if not force and not (sale.final_filled and sale.totals_after == 3
                              and not sale.facts_pending):
            return
        self.sale = None
        try:
            body = self._body(sale)
        except dart.DARTError:
            body = None  # a value not exact in record units: refused, never rounded
        if body is None:
            self.sales_unrecordable += 1
        else:
            device = {"dispenser_address": self.address, "nozzle": sale.nozzle}
            sale_seq = self._recorder.sale(device, body)
            self.sales_recorded += 1
            self._check_pulses(device, body, sale_seq)
        if sale.totals_after & 1:
            self._report_totalizer(sale.nozzle)

    def settle_found(self, force):
        """Decide on a found sale once every graded nozzle's volume total is in (or at once
        with `force`): the one nozzle whose totalizer moved since recorder.last_totalizer (or
        the one DC3 names) gets the sale, with the pump's last DC2 and DC3 as they stand."""
        moved = []
        for nozzle in _nozzles(self.grades):
            total = self._volume_totals[nozzle]
            if total is None:
                if not force:
                    return
                continue
            last = self._recorder.last_totalizer({"dispenser_address": self.address,
                                                  "nozzle": nozzle})
            try:
                if last is not None and last[0] != self._scaled(total, 0, _ML_DECIMALS):
                    moved.append(nozzle)
            except dart.DARTError:
                pass
        status = "power_fail" if self._power_alarm else self.found
        self.found = None
        self._power_alarm = self._outage = False
        named = self._price[0] if self._price else 0
        nozzle = named or (moved[0] if len(moved) == 1 else 0)
        if nozzle in moved:
            clock = self._clock
            sale = self.sale = _Sale(nozzle, clock.wall_ms(), clock.measure_ms(),
                                     self._price[1] if self._price else None, None, None,
                                     (None, None), None, self._flow_interval_ms)
            sale.closing = sale.final_filled = True
            sale.found = status
            sale.end_state = self.status
            sale.end_wall_ms = sale.start_wall_ms
            sale.end_ms = sale.start_ms
            sale.closed_ticks = self._clock.ticks_ms()
            sale.totals_after = 3 if self._amount_totals[nozzle] is not None else 1
            self._finish_if_ready(True)
        for nozzle in range(1, _MAX_NOZZLE + 1):
            if self._volume_totals[nozzle] is not None:
                self._report_totalizer(nozzle)

    def _end_status(self, sale):
        if sale.found:
            return sale.found
        if not sale.final_filled:
            return "link_lost"  # the figures are the last seen, not the pump's final ones
        if sale.power_failed:
            return "power_fail"
        if sale.stopped or sale.end_state == dart.STATUS_SWITCHED_OFF:
            return "stopped"
        if sale.end_state == dart.STATUS_MAX_REACHED:
            return "preset_reached"
        if sale.end_state == dart.STATUS_FILLING_COMPLETED:
            return "completed"
        return "link_lost"  # it ended while we did not hear the pump

    def _body(self, sale):
        grades = self.grades
        if (self.decimals is None or self.filled is None or sale.price is None or grades is None
                or not 1 <= grades[sale.nozzle - 1] <= 99):
            return None
        volume_ml = self._scaled(self.filled[0], 0, _ML_DECIMALS)
        if not sale.found:  # a found sale's flow was not seen: its profile stays empty
            sale.profile.add(self._clock.ticks_diff(sale.end_ms, sale.start_ms), volume_ml)
        body = {
            "grade": grades[sale.nozzle - 1],
            "volume_ml": volume_ml,
            "unit_price_minor_per_kl": self._scaled(
                sale.price, 2, self._currency_decimals + _PER_KL_DECIMALS),
            "amount_minor": self._scaled(self.filled[1], 1, self._currency_decimals),
            "start_wall_time_ms": sale.start_wall_ms,
            "end_wall_time_ms": sale.end_wall_ms,
            "duration_ms": self._clock.ticks_diff(sale.end_ms, sale.start_ms),
            "flow_interval_ms": sale.profile.interval_ms,
            "flow_profile_ml": sale.profile.volumes_ml,
            "end_status": self._end_status(sale),
        }
        optional = (
            ("preset_volume_ml", sale.preset_volume_ml),
            ("preset_amount_minor", sale.preset_amount_minor),
            ("totalizer_start_ml", self._scaled(sale.totals_start[0], 0, _ML_DECIMALS)),
            ("amount_totalizer_start_minor",
             self._scaled(sale.totals_start[1], 1, self._currency_decimals)),
            ("dispenser_param_checksum", self.param_checksum),
            ("dispenser_software_id", self.software_id),
            ("dispenser_identity", self.identity),
        )
        if sale.totals_after & 1:
            optional += (("totalizer_end_ml", self._scaled(
                self._volume_totals[sale.nozzle], 0, _ML_DECIMALS)),)
        if sale.totals_after & 2:
            optional += (("amount_totalizer_end_minor", self._scaled(
                self._amount_totals[sale.nozzle], 1, self._currency_decimals)),)
        for name, value in optional:
            if value is not None:
                body[name] = value
        k_factor = self._k_factor(sale.nozzle)
        if sale.pulses_end is not None and k_factor:
            pulses = (sale.pulses_end - sale.pulses_start) & _U32
            body["pulses_counted"] = pulses
            body["pulse_volume_ml"] = pulse_rules.pulse_volume_ml(pulses, k_factor)
        return body

    def _k_factor(self, nozzle):
        k_factors = self._sealed_k_factors or self.k_factors
        if k_factors is None or nozzle > len(k_factors):
            return None
        return k_factors[nozzle - 1]

    def _check_pulses(self, device, body, sale_seq):
        if "pulses_counted" not in body:
            return
        volume_decimals = self.decimals[0]
        display_step_ml = 10 ** (_ML_DECIMALS - volume_decimals) if volume_decimals < 3 else 1
        k_factor = self._k_factor(device["nozzle"])
        if not pulse_rules.mismatch(body["pulse_volume_ml"], body["volume_ml"], k_factor,
                                    display_step_ml, self._mpe_fraction_percent,
                                    self._min_volume_ml):
            return
        fields = {
            "pulses_counted": body["pulses_counted"],
            "pulse_volume_ml": body["pulse_volume_ml"],
            "reported_volume_ml": body["volume_ml"],
            "difference_ml": body["volume_ml"] - body["pulse_volume_ml"],
            "k_factor_pulses_per_kl": k_factor,
        }
        if isinstance(sale_seq, int):
            fields["sale_seq"] = sale_seq
        self._recorder.event("pulse_mismatch", device=device, **fields)

    # --- reports ----------------------------------------------------------------------------

    def _report_facts(self):
        # What the pump says; the sealed K-factors are the registry's and not news to it.
        self._recorder.device_facts(self.device_key, identity=self.identity,
                                    software_id=self.software_id,
                                    param_checksum=self.param_checksum, k_factors=self.k_factors)

    def _report_totalizer(self, nozzle):
        try:
            volume_ml = self._scaled(self._volume_totals[nozzle], 0, _ML_DECIMALS)
            amount = self._scaled(self._amount_totals[nozzle], 1, self._currency_decimals)
        except dart.DARTError:
            return
        if volume_ml is not None:
            # The master's are persisted for settle_found; the tap's wait for the heartbeat.
            self._recorder.totalizer({"dispenser_address": self.address, "nozzle": nozzle},
                                     volume_ml, amount, self._check_unread)

    def _scaled(self, value, which, target_decimals):
        # `which` indexes the pump's decimals: 0 volume, 1 amount, 2 unit price.
        if value is None or self.decimals is None:
            return None
        return dart.rescale(value, self.decimals[which], target_decimals)


class _Link:
    """Link health of one pump (master) or of the whole line (tap): link_lost after
    `lost_after` failed exchanges in a row, link_restored on the next good one, and link_errors
    with the counts since the previous report, at most every `errors_report_ms`."""

    def __init__(self, recorder, clock, device, lost_after, errors_report_ms):
        self._recorder = recorder
        self._clock = clock
        self._device = device
        self._lost_after = lost_after
        self._errors_report_ms = errors_report_ms
        self.up = None
        self.failures_in_row = 0
        self._lost_ticks = None
        self.crc_errors = 0
        self.timeouts = 0
        self.framing_errors = 0
        self._reported = (0, 0, 0)
        self._reported_ticks = None

    def good(self):
        self.failures_in_row = 0
        if self.up is not True:
            if self.up is False:
                outage_ms = self._clock.ticks_diff(self._clock.ticks_ms(), self._lost_ticks)
                self._recorder.event("link_restored", device=self._device, link=LINK,
                                     outage_ms=outage_ms)
            self.up = True
            self._state()
        self._report_errors()

    def failed(self):
        self.failures_in_row += 1
        if self.failures_in_row >= self._lost_after and self.up is not False:
            self.up = False
            self._lost_ticks = self._clock.ticks_ms()
            self._recorder.event("link_lost", device=self._device, link=LINK)
            self._state()
            return True
        return False

    def error_count(self):
        return self.crc_errors + self.timeouts + self.framing_errors

    def _state(self):
        self._recorder.link_state(LINK, self.up, self.error_count())

    def _report_errors(self):
        counts = (self.crc_errors, self.timeouts, self.framing_errors)
        if counts == self._reported:
            return
        now = self._clock.ticks_ms()
        if (self._reported_ticks is not None
                and self._clock.ticks_diff(now, self._reported_ticks) < self._errors_report_ms):
            return
        before = self._reported
        self._recorder.event("link_errors", device=self._device, link=LINK,
                             crc_errors=counts[0] - before[0], timeouts=counts[1] - before[1],
                             framing_errors=counts[2] - before[2])
        self._reported = counts
        self._reported_ticks = now
        self._state()


def _check_in(supervisor):
    if supervisor is not None:
        supervisor[0].check_in(supervisor[1])


def _trackers(addresses, recorder, clock, pulse_inputs, sealed_k_factors, options):
    trackers = []
    for address in addresses:
        trackers.append(PumpTracker(
            address, recorder, clock,
            pulse_input=(pulse_inputs or {}).get(address),
            sealed_k_factors=(sealed_k_factors or {}).get(address), **options))
    return trackers


class _PumpLine:
    # The master's per-pump exchange state.
    def __init__(self, tracker, link):
        self.tracker = tracker
        self.link = link
        self.tx_block = None
        self.last_rx = None
        self.reset()

    def reset(self):
        self.info_requested = False
        self.totals_requested = False
        self.prices_sent = False
        self.lift_handled = None  # tracker.lifts when we last decided
        self.awaiting_polls = 0


class DartMaster:
    """The gateway as the only DART master on the line.

    Link options: reply_timeout_ms=150 (a pump answers in ~25 ms), poll_gap_ms=20, retries=3
    (a DATA block sent again), lost_after=5 failed polls, errors_report_ms=60000, prices=None
    ({address: (minor units per kL, nozzle 1 first)}, sent by CD5 to a pump not programmed),
    answer_patience_polls=20 (polls to wait for end-of-sale answers before asking again).
    A pump found holding a finished sale it never read is reset only once the tracker settled
    that sale (PumpTracker.settle_found: recorded, or known to be recorded before).
    """

    def __init__(self, port, recorder, clock, addresses=(0x50,), policy=authorize_on_lift,
                 pulse_inputs=None, sealed_k_factors=None, prices=None, reply_timeout_ms=150,
                 poll_gap_ms=20, retries=3, lost_after=5, errors_report_ms=60000,
                 answer_patience_polls=20, supervisor=None, **options):
        self._port = port
        self._supervisor = supervisor  # (supervisor, task name): checked in once per cycle
        self._clock = clock
        self._policy = policy
        self._prices = prices or {}
        self._reply_timeout_ms = reply_timeout_ms
        self._poll_gap_ms = poll_gap_ms
        self._retries = retries
        self._patience = answer_patience_polls
        self._decoder = dart.FrameDecoder()
        self._rx = b""
        self._rx_at = 0
        options["check_unread"] = True
        self.pumps = [
            _PumpLine(tracker, _Link(recorder, clock, tracker.device_key, lost_after,
                                     errors_report_ms))
            for tracker in _trackers(addresses, recorder, clock, pulse_inputs,
                                     sealed_k_factors, options)
        ]

    async def run(self):
        while True:
            for pump in self.pumps:
                await self._serve(pump)
            _check_in(self._supervisor)
            await sleep_ms(self._poll_gap_ms)

    async def _serve(self, pump):
        if not await self._poll(pump):
            return
        block = self._next_request(pump)
        if block:
            await self._send(pump, block)

    def _next_request(self, pump):
        tracker = pump.tracker
        if not pump.info_requested:
            pump.info_requested = True
            return [dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS),
                    dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY),
                    dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION),
                    dart.CD1Command(dart.CMD_RETURN_STATUS)]
        if tracker.decimals is None or tracker.status is None:
            return None
        if not pump.totals_requested:
            pump.totals_requested = True
            return self._totals_request(tracker, _nozzles(tracker.grades))
        status = tracker.status
        prices = self._prices.get(tracker.address)
        if prices and not pump.prices_sent and status == dart.STATUS_NOT_PROGRAMMED:
            pump.prices_sent = True
            return [dart.CD5PriceUpdate(
                [dart.rescale(p, tracker._currency_decimals + _PER_KL_DECIMALS,
                              tracker.decimals[2]) for p in prices])]
        if status in _ENDED_STATES:
            return self._close_sale(pump)
        if (status == dart.STATUS_RESET and tracker.nozzle_out
                and pump.lift_handled != tracker.lifts):
            pump.lift_handled = tracker.lifts
            return self._authorization(tracker)
        return None

    def _totals_request(self, tracker, nozzles):
        block = []
        for nozzle in nozzles:
            block.append(dart.CD101RequestTotalCounters(nozzle))
            block.append(dart.CD101RequestTotalCounters(_AMOUNT_COUNTER | nozzle))
        return block

    def _close_sale(self, pump):
        tracker = pump.tracker
        sale = tracker.sale
        if tracker.found:
            # A finished sale found unread is settled by the totals (asked at first contact, and
            # here); without them within the patience, by what is known. Only then the reset.
            polls = pump.awaiting_polls
            pump.awaiting_polls += 1
            if not polls:
                return [dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION)] + \
                    self._totals_request(tracker, _nozzles(tracker.grades))
            if polls <= self._patience:
                return None
            tracker.settle_found(True)
            sale = tracker.sale
        if sale is None or not sale.closing:
            # Recorded (or never seen starting): the pump may take the next customer.
            pump.awaiting_polls = 0
            return [dart.CD1Command(dart.CMD_RESET)]
        if pump.awaiting_polls and pump.awaiting_polls <= self._patience:
            pump.awaiting_polls += 1
            return None
        pump.awaiting_polls = 1
        # Identity and parameters with every sale: a swapped board or a changed K-factor shows
        # on the sale it affects.
        sale.facts_pending = True
        return [dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS),
                dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY),
                dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION)] + self._totals_request(
                    pump.tracker, (sale.nozzle,))

    def _authorization(self, tracker):
        decision = self._policy(tracker.address, tracker.nozzle_out)
        if decision is None:
            return None
        volume_decimals, amount_decimals, _ = tracker.decimals
        block = []
        if decision.get("allowed_nozzles"):
            block.append(dart.CD2AllowedNozzles(decision["allowed_nozzles"]))
        if decision.get("preset_volume_ml") is not None:
            block.append(dart.CD3PresetVolume(
                dart.rescale(decision["preset_volume_ml"], _ML_DECIMALS, volume_decimals)))
        if decision.get("preset_amount_minor") is not None:
            block.append(dart.CD4PresetAmount(dart.rescale(
                decision["preset_amount_minor"], tracker._currency_decimals, amount_decimals)))
        block.append(dart.CD1Command(dart.CMD_AUTHORIZE))
        return block

    async def _poll(self, pump):
        address = pump.tracker.address
        self._port.write(dart.encode_short(address, dart.POLL))
        frame = await self._await(pump, (dart.DATA, dart.EOT))
        if frame is None:
            if pump.link.failed():
                pump.tracker.forget()
                pump.reset()
            return False
        pump.link.good()
        if frame.kind != dart.DATA:
            return True
        self._port.write(dart.encode_short(address, dart.ACK, frame.block))
        if pump.last_rx == (frame.block, frame.data):
            return True  # our ACK was lost and the pump sent the block again
        pump.last_rx = (frame.block, frame.data)
        try:
            transactions = frame.transactions(dart.FROM_PUMP)
        except dart.DARTError:
            pump.link.framing_errors += 1
            return True
        pump.tracker.absorb(dart.FROM_PUMP, transactions)
        return True

    async def _send(self, pump, transactions):
        address = pump.tracker.address
        block = 0 if pump.tx_block is None else dart.next_block(pump.tx_block)
        pump.tx_block = block
        raw = dart.encode_data(address, block, transactions)
        for _ in range(1 + self._retries):
            self._port.write(raw)
            frame = await self._await(pump, (dart.ACK, dart.NAK))
            if frame is not None and frame.kind == dart.ACK and frame.block == block:
                pump.tracker.absorb(dart.TO_PUMP, transactions)
                return
        # Whatever the block asked for is asked afresh once the pump answers.
        pump.reset()

    async def _await(self, pump, kinds):
        """The next frame of `kinds` from the pump, or None after the reply timeout; other
        frames are skipped, bad ones counted."""
        clock = self._clock
        address = pump.tracker.address
        started = clock.ticks_ms()
        while True:
            result = self._next_result()
            if isinstance(result, dart.Frame):
                if result.address == address and result.kind in kinds:
                    return result
            elif result is dart.BAD_FRAME:
                pump.link.crc_errors += 1
                return None  # the pump sends its block again on the next POLL
            elif clock.ticks_diff(clock.ticks_ms(), started) >= self._reply_timeout_ms:
                pump.link.timeouts += 1
                self._decoder.reset()  # a partial frame is stale now
                return None
            else:
                await sleep_ms(2)

    def _next_result(self):
        if self._rx_at >= len(self._rx):
            self._rx = self._port.read()
            self._rx_at = 0
            if not self._rx:
                return dart.NEED_MORE
        used, result = self._decoder.feed(self._rx, self._rx_at)
        self._rx_at += used
        return result


def _nozzles(grades):
    return [n for n in range(1, len(grades or ()) + 1) if grades[n - 1]]


class DartTap:
    """The gateway listening on a station's DART line. It never transmits: it is handed the
    port's read function, not the port.

    Direction: every frame carries the pump's address, so a DATA frame right after a POLL or
    ACKPOLL to that address is the pump's answer; one after EOT, ACK, NAK or DATA is the
    controller's. After a bad frame or garbage the previous frame is unknown, and the next DATA
    frame of each address is dropped rather than guessed (the exchange repeats what matters).

    Options: poll_ms=10 (how often the port is read), silence_ms=5000 (no good frame this long
    = link_lost), errors_report_ms=60000, close_timeout_ms=5000, and PumpTracker's options.
    """

    def __init__(self, read, recorder, clock, addresses=(0x50,), pulse_inputs=None,
                 sealed_k_factors=None, poll_ms=10, silence_ms=5000, errors_report_ms=60000,
                 close_timeout_ms=5000, supervisor=None, **options):
        self._read = read
        self._supervisor = supervisor  # (supervisor, task name): checked in once per cycle
        self._clock = clock
        self._poll_ms = poll_ms
        self._silence_ms = silence_ms
        options["close_timeout_ms"] = close_timeout_ms
        self.trackers = _trackers(addresses, recorder, clock, pulse_inputs, sealed_k_factors,
                                  options)
        self.link = _Link(recorder, clock, None, 1, errors_report_ms)
        self._decoder = dart.FrameDecoder()
        self._discarded = 0
        self._previous = {}  # address -> kind of the last frame for it
        self._last_rx = {}  # (address, direction) -> (block, data)
        self._heard_ticks = clock.ticks_ms()

    async def run(self):
        while True:
            data = self._read()
            if data:
                self.feed(data)
            elif self._clock.ticks_diff(self._clock.ticks_ms(),
                                        self._heard_ticks) >= self._silence_ms:
                if self.link.up is not False:
                    self.link.timeouts += 1
                    self.link.failed()
            for tracker in self.trackers:
                tracker.tick()
            _check_in(self._supervisor)
            await sleep_ms(self._poll_ms)

    def feed(self, data):
        """Take bytes off the line (run() does this; a capture can be replayed through it)."""
        position = 0
        while position < len(data):
            used, result = self._decoder.feed(data, position)
            position += used
            if result is dart.BAD_FRAME:
                self.link.crc_errors += 1
                self._previous = {}
            elif isinstance(result, dart.Frame):
                if self._decoder.discarded_bytes != self._discarded:
                    self._discarded = self._decoder.discarded_bytes
                    self.link.framing_errors += 1
                    self._previous = {}
                self._heard_ticks = self._clock.ticks_ms()
                self.link.good()
                self._on_frame(result)

    def _on_frame(self, frame):
        before = self._previous.get(frame.address)
        self._previous[frame.address] = frame.kind
        if frame.kind != dart.DATA or before is None:
            return
        tracker = None
        for candidate in self.trackers:
            if candidate.address == frame.address:
                tracker = candidate
        if tracker is None:
            return
        direction = dart.FROM_PUMP if before in (dart.POLL, dart.ACKPOLL) else dart.TO_PUMP
        key = (frame.address, direction)
        if self._last_rx.get(key) == (frame.block, frame.data):
            return  # sent again because an ACK was lost: already absorbed
        self._last_rx[key] = (frame.block, frame.data)
        try:
            transactions = frame.transactions(direction)
        except dart.DARTError:
            self.link.framing_errors += 1
            return
        tracker.absorb(direction, transactions)
