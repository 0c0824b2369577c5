"""The physics of one emulated fuelling point: flow through each nozzle's meter, the encoder's
pulses, and what the dispenser CPU makes of them. No threads and no I/O: ``dispenser.py`` drives
it on a fixed simulated time step, so the same seed and the same customer actions always give
the same numbers.

One nozzle, from the tank to the display::

    pump motor -> valve -> meter -> encoder ==A/B==> [pulse board] ==> CPU: volume = pulses / K
                                     (true pulses      (only if        (display, price computing,
                                     per kL of fuel)    fitted)         totalizers, DART)

- The *meter* turns with the fuel. Its *encoder* gives ``meter_pulses_per_kl`` pulses per
  kilolitre (nominally 100 000, i.e. 100 per litre); a worn meter drifts from that honestly.
- The *CPU* counts pulses and divides by its sealed calibration, the K-factor
  (``k_factor_pulses_per_kl``). Calibration sets the K-factor equal to the meter's pulses per kL,
  so an honest dispenser indicates the true volume to within one pulse.
- Cheats act at three places: a doctored encoder gives more pulses per litre (the A/B pulser
  line and the CPU both see them), a board between encoder and CPU adds pulses (only the CPU
  sees them), and a changed K-factor makes each pulse count as more volume.

Flow: the valve opens when the fuelling point is filling and the customer squeezes the trigger.
Flow ramps towards the demanded rate (ramp-up over ``ramp_up_s``, faster ramp-down), carries
AR(1) hydraulic noise from the dispenser's seeded RNG, never exceeds the nozzle's maximum, and
slows to a creep before a preset so the CPU can close the valve on the exact pulse.

Counting is exact: integer pulse counts, integer parts-per-million gains, and the CPU's volume
as a Fraction of a millilitre. The display shows whole centilitres (10 mL), truncated, as a
meter register does; the amount is price-computed from the displayed volume, rounded half up to
one minor unit.
"""

import math
from fractions import Fraction

# Physics time step. Every quantity advances on this fixed grid of simulated time, however the
# emulator's thread happens to be scheduled; that is what makes runs repeatable.
STEP_S = 0.1
NOMINAL_PULSES_PER_KL = 100000
DISPLAY_STEP_ML = 10
PPM = 1000000

# At full trigger a nozzle runs a little below its nominal maximum; noise rides on top and is
# clipped at the maximum, as the pump's bypass valve does.
_FULL_TRIGGER_FRACTION = 0.92
_NOISE_MEMORY = 0.8
_NOISE_SIGMA = 0.015
# Before a preset the CPU throttles the valve to a creep so it can shut on the exact pulse.
PRESET_SLOWDOWN_ML = 500
_CREEP_FLOW_LPM = 6.0


def amount_minor(volume_ml, unit_price_minor_per_kl):
    """Price computing: volume x unit price, rounded half up to one minor unit."""
    return (volume_ml * unit_price_minor_per_kl + PPM // 2) // PPM


def displayed_ml(cpu_volume_ml):
    """What the display shows for the CPU's exact volume: whole centilitres, truncated."""
    return math.floor(cpu_volume_ml / DISPLAY_STEP_ML) * DISPLAY_STEP_ML


def volume_for_amount_ml(preset_amount_minor, unit_price_minor_per_kl):
    """The largest displayable volume whose price does not exceed a prepaid amount."""
    if unit_price_minor_per_kl <= 0:
        return None
    steps = (preset_amount_minor * PPM) // (unit_price_minor_per_kl * DISPLAY_STEP_ML) + 1
    while steps > 0 and amount_minor(steps * DISPLAY_STEP_ML, unit_price_minor_per_kl) > (
        preset_amount_minor
    ):
        steps -= 1
    return steps * DISPLAY_STEP_ML


def gain_ppm(percent):
    """A cheat's size in percent as an exact pulse gain in parts per million (3 -> 1 030 000)."""
    return PPM + round(percent * 10000)


class Nozzle:
    """Configuration of one nozzle and its meter. Its logical number on the fuelling point is
    its position in the dispenser's ``nozzles`` (first = 1).

    grade                      product code (92, 95, 0 = diesel, ...), as the records carry it
    max_flow_lpm               nominal maximum flow: 40 for cars, up to 130 for a diesel HGV nozzle
    k_factor_pulses_per_kl     the sealed calibration in the CPU
    meter_pulses_per_kl        what the encoder really gives per kL; defaults to the K-factor
                               (freshly calibrated). A different value is honest meter drift.
    unit_price_minor_per_kl    price held in the CPU's memory; None = not programmed until CD5
    totalizer_ml, amount_totalizer_minor   the electronic totalizers at start
    ramp_up_s, ramp_down_s     time for the flow to go from 0 to maximum and back
    """

    def __init__(
        self,
        grade=92,
        max_flow_lpm=40.0,
        k_factor_pulses_per_kl=NOMINAL_PULSES_PER_KL,
        meter_pulses_per_kl=None,
        unit_price_minor_per_kl=None,
        totalizer_ml=0,
        amount_totalizer_minor=0,
        ramp_up_s=2.0,
        ramp_down_s=0.5,
    ):
        if not 1 <= grade <= 99:
            raise ValueError("grade must be 1..99 (DC7 uses 0 for 'no nozzle'), got %r" % grade)
        if max_flow_lpm <= 0:
            raise ValueError("max_flow_lpm must be > 0")
        if k_factor_pulses_per_kl <= 0:
            raise ValueError("k_factor_pulses_per_kl must be > 0")
        if totalizer_ml % DISPLAY_STEP_ML:
            raise ValueError("totalizer_ml must be whole centilitres (the display resolution)")
        self.grade = grade
        self.max_flow_lpm = float(max_flow_lpm)
        self.k_factor_pulses_per_kl = int(k_factor_pulses_per_kl)
        self.meter_pulses_per_kl = float(meter_pulses_per_kl or k_factor_pulses_per_kl)
        self.unit_price_minor_per_kl = unit_price_minor_per_kl
        self.totalizer_ml = totalizer_ml
        self.amount_totalizer_minor = amount_totalizer_minor
        self.ramp_up_s = ramp_up_s
        self.ramp_down_s = ramp_down_s


class Meter:
    """One nozzle's hydraulic path and pulse counting, stepped by ``step``.

    Lifetime state (survives sales and power cuts): the encoder's cumulative pulses, which the
    pulser channel reports. Per-sale state: true volume, encoder and CPU pulses, CPU volume.
    """

    def __init__(self, nozzle, rng):
        self.nozzle = nozzle
        self._rng = rng
        self.flow_lpm = 0.0
        self._noise = 0.0
        # Encoder phase in pulses (fractional part = the vane between two slots) and the whole
        # pulses it has put on the A/B lines since power-up of the emulator.
        self._encoder_phase = 0.0
        self.encoder_pulses_total = 0
        # Pulses the board owes the CPU, in millionths of a pulse (exact integer arithmetic).
        self._board_residue_ppm = 0
        self.new_sale()

    def new_sale(self):
        self.sale_true_ml = 0.0
        self.sale_encoder_pulses = 0
        self.sale_cpu_pulses = 0
        self.sale_cpu_volume_ml = Fraction(0)
        self.peak_flow_lpm = 0.0

    @property
    def moving(self):
        return self.flow_lpm > 0.0

    @property
    def sale_displayed_ml(self):
        return displayed_ml(self.sale_cpu_volume_ml)

    def step(self, dt_s, trigger, encoder_gain_ppm, board_gain_ppm, k_factor, limits):
        """Advance ``dt_s`` with the trigger squeezed ``trigger`` (0 = valve shut, 1 = full).

        ``limits``: (true_limit_ml, displayed_limit_ml), either None. The true limit is the
        customer's tank (an auto shut-off); the displayed limit is a preset or the max amount,
        which the CPU enforces on the pulse that reaches it. Returns the limit that stopped the
        flow this step ("true" or "displayed"), else None.
        """
        nozzle = self.nozzle
        demand_lpm = nozzle.max_flow_lpm * _FULL_TRIGGER_FRACTION * trigger
        if demand_lpm <= 0.0 and self.flow_lpm <= 0.0:
            # Valve shut and still: nothing moves. The noise process draws only while fuel is
            # on the move, so idle time never shifts a later delivery's random sequence.
            self._noise = 0.0
            return None
        true_limit_ml, displayed_limit_ml = limits
        if displayed_limit_ml is not None and (
            displayed_limit_ml - self.sale_displayed_ml <= PRESET_SLOWDOWN_ML
        ):
            demand_lpm = min(demand_lpm, _CREEP_FLOW_LPM)
        if demand_lpm > self.flow_lpm:
            rise = nozzle.max_flow_lpm / nozzle.ramp_up_s * dt_s
            self.flow_lpm = min(demand_lpm, self.flow_lpm + rise)
        else:
            fall = nozzle.max_flow_lpm / nozzle.ramp_down_s * dt_s
            self.flow_lpm = max(demand_lpm, self.flow_lpm - fall)
        self._noise = _NOISE_MEMORY * self._noise + self._rng.gauss(0.0, _NOISE_SIGMA)
        if self.flow_lpm <= 0.0:
            return None
        actual_lpm = min(nozzle.max_flow_lpm, max(0.0, self.flow_lpm * (1.0 + self._noise)))
        self.peak_flow_lpm = max(self.peak_flow_lpm, actual_lpm)
        volume_ml = actual_lpm * 1000.0 / 60.0 * dt_s
        stopped_by = None
        if true_limit_ml is not None and self.sale_true_ml + volume_ml >= true_limit_ml:
            volume_ml = max(0.0, true_limit_ml - self.sale_true_ml)
            stopped_by = "true"
        pulses_per_ml = nozzle.meter_pulses_per_kl * encoder_gain_ppm / PPM / 1e6
        new_phase = self._encoder_phase + volume_ml * pulses_per_ml
        encoder_pulses = math.floor(new_phase) - math.floor(self._encoder_phase)
        cpu_pulses = (self._board_residue_ppm + encoder_pulses * board_gain_ppm) // PPM
        if displayed_limit_ml is not None:
            cut = self._cut_at_display_limit(
                displayed_limit_ml, k_factor, board_gain_ppm, pulses_per_ml, cpu_pulses
            )
            if cut is not None:
                volume_ml, encoder_pulses = cut
                # The valve shuts on the pulse edge itself.
                new_phase = math.floor(self._encoder_phase) + encoder_pulses
                stopped_by = "displayed"
        self._count(volume_ml, new_phase, encoder_pulses, board_gain_ppm, k_factor)
        if stopped_by:
            self.flow_lpm = 0.0
        return stopped_by

    def _cut_at_display_limit(self, limit_ml, k_factor, board_gain_ppm, pulses_per_ml, cpu_pulses):
        # The CPU pulses that bring the display to the limit; None if this step stays short.
        needed_cpu = max(0, math.ceil((limit_ml - self.sale_cpu_volume_ml) * k_factor / 1000000))
        if needed_cpu > cpu_pulses:
            return None
        # Encoder pulses the board needs to pass that many, and the fuel that turns them out.
        needed_encoder = max(0, -(-(needed_cpu * PPM - self._board_residue_ppm) // board_gain_ppm))
        to_edge = math.floor(self._encoder_phase) + needed_encoder - self._encoder_phase
        return max(0.0, to_edge / pulses_per_ml), needed_encoder

    def _count(self, volume_ml, new_phase, encoder_pulses, board_gain_ppm, k_factor):
        self._encoder_phase = new_phase
        board_total_ppm = self._board_residue_ppm + encoder_pulses * board_gain_ppm
        cpu_pulses = board_total_ppm // PPM
        self._board_residue_ppm = board_total_ppm % PPM
        self.sale_true_ml += volume_ml
        self.encoder_pulses_total += encoder_pulses
        self.sale_encoder_pulses += encoder_pulses
        self.sale_cpu_pulses += cpu_pulses
        if cpu_pulses:
            self.sale_cpu_volume_ml += Fraction(cpu_pulses * 1000000, k_factor)
