"""Reproducible measurement noise for the scale and tank gauge emulators.

Each noise sample is a pure function of (seed, channel, sample index), not the next draw of a
shared generator. A reading can then be computed for any sample time, in any order, as often as
the emulator's thread happens to ask, and the same seed still gives the same numbers. Channels
are small integers, one per measured quantity (Python's ``hash`` of a string is salted per
process, so it cannot serve).
"""

import math

_MASK64 = (1 << 64) - 1


def _mix64(value):
    # SplitMix64's finaliser: a bijection on 64 bits that spreads every input bit.
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK64
    return value ^ (value >> 31)


def uniform(seed, channel, index):
    """A number in [0, 1)."""
    key = _mix64((seed & _MASK64) ^ _mix64((channel << 40) ^ (index & _MASK64)))
    return (key >> 11) / float(1 << 53)


def symmetric(seed, channel, index, half_width):
    """Uniform in [-half_width, +half_width): bounded noise, so tests can state exact limits."""
    return (2.0 * uniform(seed, channel, index) - 1.0) * half_width


def gaussian(seed, channel, index):
    """A standard normal sample (Box-Muller over two independent uniforms)."""
    u1 = uniform(seed, channel, 2 * index)
    u2 = uniform(seed, channel, 2 * index + 1)
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)
