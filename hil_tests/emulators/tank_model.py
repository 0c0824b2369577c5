"""Physics of an underground storage tank for the tank gauge emulator: the strapping of a
horizontal cylinder (volume <-> liquid height) and thermal expansion of the product. No threads,
no I/O.

Strapping. A horizontal cylinder of radius r and length L filled to height h holds

    V(h) = L (r^2 acos((r - h) / r) - (r - h) sqrt(2 r h - h^2))

so a level change near the middle of the tank moves far more volume than one near the bottom or
top. A real gauge reads V(h) from a strapping chart measured at installation; the emulator uses
the exact formula (flat ends, no tilt), and inverts it by bisection.

Temperature compensation. Petroleum expands with temperature; sales are metered at the product
temperature, but stock is compared at a reference temperature (TC volume):

    V_ref = V (1 - alpha (T - T_ref))

a linear volume correction factor, with alpha about 0.00095 per degC for gasoline and 0.00083
per degC for diesel. China states product volumes at 20 degC (GB/T 1885, the national
petroleum measurement tables); 15 degC is the ISO 91 / API reference elsewhere.
"""

import math

GASOLINE_EXPANSION_PER_C = 0.00095
DIESEL_EXPANSION_PER_C = 0.00083
REFERENCE_TEMPERATURE_C = 20.0  # China, GB/T 1885
_BISECTION_STEPS = 60  # halves the diameter to far below a micrometre


class HorizontalCylinder:
    def __init__(self, capacity_ml, diameter_mm):
        self.capacity_ml = capacity_ml
        self.diameter_mm = float(diameter_mm)
        self.radius_mm = self.diameter_mm / 2
        # 1 mL = 1000 mm^3.
        self.length_mm = capacity_ml * 1000.0 / (math.pi * self.radius_mm**2)

    def volume_ml(self, height_mm):
        """Liquid volume at ``height_mm`` above the bottom (clamped to the tank)."""
        r = self.radius_mm
        h = min(max(height_mm, 0.0), self.diameter_mm)
        half_chord_mm = math.sqrt(max(2 * r * h - h * h, 0.0))
        segment_mm2 = r * r * math.acos((r - h) / r) - (r - h) * half_chord_mm
        return segment_mm2 * self.length_mm / 1000.0

    def height_mm(self, volume_ml):
        """Liquid height holding ``volume_ml`` (clamped to empty and full)."""
        if volume_ml <= 0:
            return 0.0
        if volume_ml >= self.capacity_ml:
            return self.diameter_mm
        low, high = 0.0, self.diameter_mm
        for _ in range(_BISECTION_STEPS):
            middle = (low + high) / 2
            if self.volume_ml(middle) < volume_ml:
                low = middle
            else:
                high = middle
        return (low + high) / 2


def tc_volume_ml(volume_ml, temperature_c, expansion_per_c, reference_c=REFERENCE_TEMPERATURE_C):
    """Volume at the reference temperature (linear volume correction factor)."""
    return volume_ml * (1.0 - expansion_per_c * (temperature_c - reference_c))
