"""Small statistics the detectors share, on JSON-able state (lists and dicts of numbers), so a
detector's state can be checkpointed as it is."""

import math


def median(values):
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def mad_sigma(values):
    """Robust standard deviation: 1.4826 × the median absolute deviation."""
    centre = median(values)
    return 1.4826 * median([abs(v - centre) for v in values])


def push_window(window, value, size):
    """Append ``value`` to the list ``window``, keeping its last ``size`` values."""
    window.append(value)
    if len(window) > size:
        del window[:len(window) - size]


def cusum(state, z, k, h):
    """One step of a two-sided tabular CUSUM on a standardised value ``z`` (reference value
    ``k``, decision interval ``h``, both in standard deviations). ``state`` is {"hi", "lo"}
    and is updated in place; returns +1 or -1 when that side crosses ``h`` (and restarts it),
    else 0."""
    state["hi"] = max(0.0, state.get("hi", 0.0) + z - k)
    state["lo"] = max(0.0, state.get("lo", 0.0) - z - k)
    if state["hi"] > h:
        state["hi"] = 0.0
        return 1
    if state["lo"] > h:
        state["lo"] = 0.0
        return -1
    return 0


def ewma(previous, value, weight):
    """Exponentially weighted moving average; ``previous`` None starts it at ``value``."""
    return value if previous is None else previous + weight * (value - previous)


def normal_sf(z):
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def linear_fit(xs, ys):
    """Least-squares slope, intercept and the slope's standard error for paired values; None
    when fewer than three points or no spread in ``xs``."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    slope_se = math.sqrt(residual / (n - 2) / sxx)
    return slope, intercept, slope_se
