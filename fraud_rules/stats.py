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


def trimmed_mean(values, share):
    """Mean of ``values`` without the lowest and highest ``share`` of them: near the mean's
    efficiency for normal noise, without the mean's weakness for an odd sale."""
    ordered = sorted(values)
    cut = int(len(ordered) * share)
    kept = ordered[cut:len(ordered) - cut] or ordered
    return sum(kept) / len(kept)


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


def solve_normal_equations(xtx, xty, min_pivot_ratio=1e-6):
    """Least squares from its normal equations (``xtx`` k×k, ``xty`` k): the coefficients and
    the diagonal of the inverse of ``xtx`` (times σ², the coefficients' variances). None when a
    pivot falls below ``min_pivot_ratio`` of its column's diagonal: the unknowns are not
    separable (ill-conditioned)."""
    k = len(xty)
    rows = [list(map(float, xtx[i])) + [1.0 if j == i else 0.0 for j in range(k)]
            + [float(xty[i])] for i in range(k)]
    for col in range(k):
        pivot_row = max(range(col, k), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot_row][col]) <= min_pivot_ratio * abs(xtx[col][col]) or \
                rows[pivot_row][col] == 0:
            return None
        rows[col], rows[pivot_row] = rows[pivot_row], rows[col]
        pivot = rows[col][col]
        rows[col] = [v / pivot for v in rows[col]]
        for r in range(k):
            if r != col and rows[r][col]:
                factor = rows[r][col]
                rows[r] = [v - factor * p for v, p in zip(rows[r], rows[col])]
    coefficients = [rows[i][2 * k] for i in range(k)]
    inverse_diagonal = [rows[i][k + i] for i in range(k)]
    return coefficients, inverse_diagonal


def chi_square_sf(x, df):
    """P(X > x) for a chi-square X with ``df`` degrees of freedom (Wilson–Hilferty cube-root
    normal approximation: good to a few per cent of the tail probability for df >= 3)."""
    if x <= 0:
        return 1.0
    scale = 2 / (9 * df)
    return normal_sf(((x / df) ** (1 / 3) - (1 - scale)) / math.sqrt(scale))
