"""ES256 signing benchmark for `meterseal bench`; runs on MicroPython and CPython.

Usage: bench_sign.py table|no_table COUNT

Signs COUNT distinct messages with a fixed key and prints one JSON line:

    {"mode", "n", "p50_ms", "p90_ms", "table_build_ms", "mem_free_after"}

table_build_ms is the one-off precomputation the mode needs: the 1024-entry p256.Table for
`table`, the 32-entry built-in comb for `no_table`. mem_free_after is gc.mem_free() after a
collection at the end (null where the interpreter has no such call).
"""

import gc
import json
import sys

import ticks
from meterseal.firmware import p256, signer

# RFC 6979 A.2.5's key: any fixed key will do, this one is recognisable.
_BENCH_KEY = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721

def _percentile_ms(sorted_us, percent):
    return sorted_us[min(len(sorted_us) - 1, len(sorted_us) * percent // 100)] / 1000


def main(argv):
    if len(argv) != 3 or argv[1] not in ("table", "no_table") or not argv[2].isdigit():
        print("usage: bench_sign.py table|no_table COUNT")
        return 2
    mode = argv[1]
    count = int(argv[2])
    if count < 1:
        print("COUNT must be at least 1")
        return 2

    gc.collect()
    start = ticks.now_us()
    table = p256.Table() if mode == "table" else None
    if table is None:
        p256.builtin_table()
    build_us = ticks.elapsed_us(ticks.now_us(), start)

    key = signer.SoftwareSigner(_BENCH_KEY, table)
    sign_us = []
    for i in range(count):
        message = b"bench record %d" % i
        start = ticks.now_us()
        key.sign(message)
        sign_us.append(ticks.elapsed_us(ticks.now_us(), start))
    sign_us.sort()

    gc.collect()
    mem_free = gc.mem_free() if hasattr(gc, "mem_free") else None
    print(
        json.dumps(
            {
                "mode": mode,
                "n": count,
                "p50_ms": _percentile_ms(sign_us, 50),
                "p90_ms": _percentile_ms(sign_us, 90),
                "table_build_ms": build_us / 1000,
                "mem_free_after": mem_free,
            }
        )
    )
    return 0


sys.exit(main(sys.argv))
