"""A retail scale's load cell as its ADC sees it: every change of the load on the pan rings in
with a damped second-order response (the pan's mass on the cell's spring, damped by the filter),
and white noise rides on top. No threads and no I/O; ``scale.py`` samples it.

    signal(t) = settled load + sum over recent load steps of step x (h(t - t_step) - 1) + noise

    h(t) = 1 - exp(-zeta wn t) (cos wd t + zeta / sqrt(1 - zeta^2) sin wd t)
    wn = 4 / (zeta settle_s)       (settled to 2 % after settle_s)      wd = wn sqrt(1 - zeta^2)

With the default damping 0.6 a step overshoots by 9.5 % at about 0.6 x settle_s and is within
0.4 % of its final value after about 1.4 x settle_s, which is when a 5 g motion window on a
15 kg scale first reports a 1.2 kg load stable.

The signal is a pure function of the sample time, so it can be evaluated for any sample, in any
order, from any thread, with the same result (noise comes from ``noise.gaussian``).
"""

import math

from meterseal.hil.emulators import noise

# The ADC converts this often (10 per second, a typical retail scale update rate).
SAMPLE_MS = 100
# Steps older than this many settling times have rung out below float resolution.
_SETTLED_AFTER = 20
_NOISE_CHANNEL = 1


class LoadCell:
    def __init__(self, seed=0, noise_mg=500.0, settle_ms=800, damping=0.6):
        if not 0 < damping < 1:
            raise ValueError("damping must be in (0, 1): the cell rings before it settles")
        self.seed = seed
        self.noise_mg = noise_mg
        self.settle_ms = settle_ms
        self._decay_per_ms = 4.0 / settle_ms  # zeta wn, in 1/ms
        self._ring_per_ms = self._decay_per_ms / damping * math.sqrt(1 - damping * damping)
        self._ring_phase_gain = damping / math.sqrt(1 - damping * damping)
        self._settled_mg = 0  # load of every step that has rung out
        self._steps = []  # (time_ms, change_mg) still ringing
        self.load_mg = 0

    def set_load(self, time_ms, load_mg):
        """The load on the pan becomes ``load_mg`` at ``time_ms`` (times never go backwards)."""
        # Fold steps that have rung out; done here, at deterministic times, never while reading.
        horizon_ms = time_ms - _SETTLED_AFTER * self.settle_ms
        while self._steps and self._steps[0][0] < horizon_ms:
            self._settled_mg += self._steps.pop(0)[1]
        if load_mg != self.load_mg:
            self._steps.append((time_ms, load_mg - self.load_mg))
            self.load_mg = load_mg

    def response_mg(self, time_ms):
        """The noiseless cell output at ``time_ms``."""
        total = float(self._settled_mg)
        for step_ms, change_mg in self._steps:
            elapsed = time_ms - step_ms
            if elapsed < 0:
                continue
            envelope = math.exp(-self._decay_per_ms * elapsed)
            angle = self._ring_per_ms * elapsed
            total += change_mg * (1.0 - envelope * (math.cos(angle)
                                                    + self._ring_phase_gain * math.sin(angle)))
        return total

    def signal_mg(self, sample):
        """The ADC's reading at sample number ``sample`` (taken at sample x SAMPLE_MS)."""
        return self.response_mg(sample * SAMPLE_MS) + self.noise_mg * noise.gaussian(
            self.seed, _NOISE_CHANNEL, sample)
