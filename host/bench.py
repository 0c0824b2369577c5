"""`meterseal bench`: the signing and verification budgets of DESIGN.md section 10, measured in one
run so the ratios compare like with like on this machine.

- ES256 sign p50/p90 on the MicroPython unix port, with the fixed-base table (default heap) and
  without it under -X heapsize=192K.
- The gateway's record path on the unix port (recorder, signer, journal): records per second,
  and the heap in use after a collection before and after the run.
- The image size per port.
- The bare `cryptography` P-256 verify rate, and the host's verify-and-parse rate (COSE parse,
  signature check over the received bytes, record schema parse) as a ratio of it.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from meterseal.hil import micropython
from meterseal.host import demo, verify
from meterseal.protocol import cose

SIGN_SCRIPT = Path(micropython.__file__).parent / "gateway_scripts" / "bench_sign.py"
RECORDER_SCRIPT = Path(micropython.__file__).parent / "gateway_scripts" / "bench_recorder.py"


def _sign_figures(image, mode, count, heapsize, interpreter="micropython"):
    if interpreter == "micropython":
        result = micropython.run(SIGN_SCRIPT, image, args=[mode, count], heapsize=heapsize)
    else:
        result = subprocess.run(
            [sys.executable, str(SIGN_SCRIPT), mode, str(count)], capture_output=True, text=True
        )
    if result.returncode != 0:
        raise demo.DemoError(
            f"sign benchmark ({mode}, {interpreter}) failed: {micropython.last_line(result)}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _recorder_figures(image, workdir, count, mode, heapsize):
    workdir.mkdir()
    result = micropython.run(RECORDER_SCRIPT, image, args=[workdir, count, mode], heapsize=heapsize)
    if result.returncode != 0:
        raise demo.DemoError(f"gateway benchmark ({mode}) failed: {micropython.last_line(result)}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rate(operation, items, rounds):
    """Operations per second over ``rounds`` passes through ``items``."""
    start = time.perf_counter()
    for _ in range(rounds):
        for item in items:
            operation(item)
    return rounds * len(items) / (time.perf_counter() - start)


def run(args):
    with tempfile.TemporaryDirectory(prefix="meterseal-bench-") as tmp:
        tmp = Path(tmp)
        image = tmp / "image"
        print("building the gateway image ...", flush=True)
        micropython.build_image(image)
        facts = micropython.image_facts(image)
        print(f"signing {args.sign_count} messages per mode on MicroPython ...", flush=True)
        with_table = _sign_figures(image, "table", args.sign_count, None)
        no_table = _sign_figures(image, "no_table", args.sign_count, "192K")
        cpython = _sign_figures(image, "table", args.sign_count, None, interpreter="cpython")
        print(f"recording {args.records} sales through the gateway's recorder, signer and journal ...", flush=True)
        gateway_table = _recorder_figures(image, tmp / "gw-table", args.records, "table", None)
        gateway_small = _recorder_figures(image, tmp / "gw-small", args.records, "no_table", "192K")
        board_images = {}
        for port in ("esp32", "rp2"):
            micropython.build_image(tmp / f"image-{port}", port)
            board_images[port] = micropython.image_facts(tmp / f"image-{port}")["bytes"]

        print(f"signing {args.records} records on the MicroPython gateway for the host side ...", flush=True)
        envelopes, summary, _ = demo.run_gateway(tmp, args.records, use_table=True, image=image)
        public_key = bytes.fromhex(summary["public_key"])
        key = verify.load_public_key(public_key)
        keyring = {cose.kid_for(public_key): key}

        # The bare rate: signature check only, on pre-built messages and DER signatures.
        prepared = []
        for envelope in envelopes:
            parsed = cose.parse_sign1(envelope)
            r, s = parsed.signature[:32], parsed.signature[32:]
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            prepared.append((parsed.to_be_signed(), der))
        algorithm = ec.ECDSA(hashes.SHA256())
        print("measuring host verification ...", flush=True)
        bare = _rate(lambda m: key.verify(m[1], m[0], algorithm), prepared, args.rounds)
        ours = _rate(lambda e: verify.verify_record(e, keyring), envelopes, args.rounds)
        record_bytes = sum(len(e) for e in envelopes) / len(envelopes)

    print()
    print(f"gateway image: {facts['files']} modules, {facts['bytes']} bytes of .mpy on the unix port; "
          f"esp32 {board_images['esp32']}, rp2 {board_images['rp2']} bytes (budget 200 KB)")
    print()
    print("ES256 sign on the MicroPython unix port      p50 ms   p90 ms   table build ms   budget")
    print(f"  fixed-base table, default heap           {with_table['p50_ms']:7.2f}  {with_table['p90_ms']:7.2f}"
          f"   {with_table['table_build_ms']:14.1f}   p50 <= 5 ms")
    print(f"  no table, -X heapsize=192K               {no_table['p50_ms']:7.2f}  {no_table['p90_ms']:7.2f}"
          f"   {no_table['table_build_ms']:14.1f}   p50 <= 30 ms")
    print(f"  (same code on CPython, with table)       {cpython['p50_ms']:7.2f}  {cpython['p90_ms']:7.2f}")
    print(f"  heap free after the 192K run: {no_table['mem_free_after']} bytes")
    print()
    print("gateway record path on the unix port (observation -> record -> COSE -> journal)")
    for label, figures in (("fixed-base table, default heap", gateway_table),
                           ("no table, -X heapsize=192K", gateway_small)):
        print(f"  {label:<40} {figures['records_per_s']:7.0f} records/s; heap in use after gc "
              f"{figures['heap_used_before']} -> {figures['heap_used_after']} bytes "
              f"of {figures['heap_total']}")
    print()
    print(f"host verification, {len(envelopes)} records of {record_bytes:.0f} bytes on average, x{args.rounds}")
    print(f"  cryptography P-256 verify (bare)         {bare:9.0f} /s")
    print(f"  meterseal verify + parse                 {ours:9.0f} /s   ratio {ours / bare:.2f}")
    return 0


def add_parser(sub):
    parser = sub.add_parser("bench", help="measure signing and verification speed")
    parser.add_argument("--sign-count", type=int, default=200, help="signatures per mode (default 200)")
    parser.add_argument("--records", type=int, default=500, help="records for the host-side rates (default 500)")
    parser.add_argument("--rounds", type=int, default=4, help="passes over the records per rate (default 4)")
    parser.set_defaults(run=run)
