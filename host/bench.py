"""`meterseal bench`: the signing and verification budgets of DESIGN.md section 10, measured in one
run so the ratios compare like with like on this machine.

- ES256 sign p50/p90 on the MicroPython unix port, with the fixed-base table (default heap) and
  without it under -X heapsize=192K.
- The gateway's record path on the unix port (recorder, signer, journal): records per second,
  and the heap in use after a collection before and after the run.
- The whole gateway (`gateway run`, DART tap with pulse input plus tank gauge) through the first
  hours of hil_tests/scenarios/dispenser_day.toml under `-X heapsize=192wK`: the heap after a
  collection as its status records report it, lowest and highest, and its steadiness.
- The image size per port.
- The bare `cryptography` P-256 verify rate, and the host's verify-and-parse rate (COSE parse,
  signature check over the received bytes, record schema parse) as a ratio of it.
- The ingest (bench_ingest.py): records verified and stored per second by the real ingest host
  on one core, against SQLite and PostgreSQL, as a ratio of the bare verify rate; gateways held
  connected by one host and its memory per connection; record received to alert visible; the
  detectors' cost in it, and each detector's share replaying the same records.
- The backtest (bench_backtest.py): `meterseal backtest` over a month of a busy forecourt, and
  its split between reading the store and the detectors.
- ``--part counted`` only (bench_counted.py, under valgrind, about 15 minutes): the detectors'
  cost in the ingest counted in instructions and callgrind's cycle estimate, which do not vary
  with the machine's load, for comparing code with code.

``--part gateway``, ``--part ingest`` or ``--part backtest`` runs one of them; `make bench` runs
all three.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meterseal.firmware import journal, signer
from meterseal.hil import micropython
from meterseal.hil import scenario as scenarios
from meterseal.hil.site import Site
from meterseal.host import (bench_backtest, bench_counted, bench_ingest, drill, gateway_cli,
                            verify)
from meterseal.host.simulated_gateway import SITE
from meterseal.protocol import cose

SIGN_SCRIPT = Path(micropython.__file__).parent / "gateway_scripts" / "bench_sign.py"
RECORDER_SCRIPT = Path(micropython.__file__).parent / "gateway_scripts" / "bench_recorder.py"
DAY_SCENARIO = Path(scenarios.__file__).parent / "scenarios" / "dispenser_day.toml"
BOARD_HEAP = "192wK"  # a 32-bit board's 192 KB, in this 64-bit build's words
_ALL_TIME_MS = 2**62  # a backtest window's end past any record's wall time


def _sign_figures(image, mode, count, heapsize, interpreter="micropython"):
    if interpreter == "micropython":
        result = micropython.run(SIGN_SCRIPT, image, args=[mode, count], heapsize=heapsize)
    else:
        result = subprocess.run(
            [sys.executable, str(SIGN_SCRIPT), mode, str(count)], capture_output=True, text=True
        )
    if result.returncode != 0:
        raise drill.DrillError(
            f"sign benchmark ({mode}, {interpreter}) failed: {micropython.last_line(result)}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _recorder_figures(image, workdir, count, mode, heapsize):
    workdir.mkdir()
    result = micropython.run(RECORDER_SCRIPT, image, args=[workdir, count, mode], heapsize=heapsize)
    if result.returncode != 0:
        raise drill.DrillError(f"gateway benchmark ({mode}) failed: {micropython.last_line(result)}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _gateway_day_figures(image, workdir, visits):
    """Run the whole gateway against the first ``visits`` visits of the dispenser day and read
    its signed status records back from its journal. No host listens (port 9 on loopback is
    refused), so everything stays in the journal, which is sized to hold it."""
    scenario = scenarios.load(DAY_SCENARIO)
    plan = scenarios.plan(scenario)[:visits]
    site = Site(scenario, speed=200.0)
    root = workdir / "gateway"
    root.mkdir(parents=True)
    key = signer.load_or_create(str(root / "gateway.key"))
    config = workdir / "gateway.json"
    config.write_text(json.dumps({
        "gateway_id": "MS-GW-BENCH",
        "host": {"address": "127.0.0.1", "port": 9, "tls": False},
        "devices": [
            {"name": "forecourt", "protocol": "dart", "port": site.tap_path, "mode": "tap",
             "addresses": [0x50],
             "pulse_input": {"port": site.pumps[0x50].pulser_path, "pulses_per_litre": 100}},
            {"name": "tanks", "protocol": "tls", "port": site.gauge_port.path, "addresses": [1, 2, 3]},
        ],
        "intervals": {"heartbeat_s": 10, "tank_poll_s": 10},
        "paths": {"storage_root": str(root)},
        "journal": {"segment_bytes": 65536, "segments": 32},
    }))
    command, env = gateway_cli.run_command(image, config, BOARD_HEAP)
    gateway = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        time.sleep(3)  # boot, then listen while the station is idle before it opens
        with site:
            time.sleep(2)
            failures = site.replay(plan)
            time.sleep(12)  # one more heartbeat after the last sale
        alive = gateway.poll() is None
    finally:
        gateway.kill()
        output = gateway.communicate()[0]
    if not alive or failures:
        raise drill.DrillError(f"the gateway day did not run: {failures[:1]} {output[-400:]}")
    public_key = key.public_key()
    keyring = {cose.kid_for(public_key): verify.load_public_key(public_key)}
    held = journal.Journal(str(root / "journal"), segment_bytes=65536, max_segments=32)
    kinds, heap = {}, []
    for _, envelope in held.pending(10**6):
        record = verify.verify_record(envelope, keyring).record
        kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
        if record["kind"] == "status":
            body = record["body"]
            heap.append((body["heap_used_bytes"], body["heap_used_bytes"] + body["heap_free_bytes"]))
    held.close()
    if len(heap) < 3:
        raise drill.DrillError(f"only {len(heap)} status records: run more visits (--day-visits)")
    # The first status comes before the first sale has loaded everything a sale uses.
    settled = [used for used, _ in heap[1:]]
    return {"sales": kinds.get("fuel.sale", 0), "records": sum(kinds.values()),
            "statuses": len(heap), "heap_min": min(settled), "heap_max": max(settled),
            "heap_total": heap[0][1]}


def run(args):
    with tempfile.TemporaryDirectory(prefix="meterseal-bench-") as tmp:
        tmp = Path(tmp)
        if args.part in ("all", "gateway"):
            (tmp / "gateway").mkdir()
            _gateway_part(args, tmp / "gateway")
        if args.part in ("all", "ingest"):
            (tmp / "ingest").mkdir()
            _ingest_part(args, tmp / "ingest")
        if args.part in ("all", "backtest"):
            (tmp / "backtest").mkdir()
            _backtest_part(args, tmp / "backtest")
        if args.part == "counted":
            _counted_part(args, tmp)
    return 0


def _ingest_part(args, workdir):
    figures = bench_ingest.run(_ingest_plan(args), workdir, lambda line: print(line, flush=True))
    print("replaying the SQLite store's records through the detectors alone ...", flush=True)
    replayed = bench_backtest.measure(figures["detection_store"], SITE, 0, _ALL_TIME_MS)
    print()
    detection_lines = [f"    the store's {replayed['records']} records replayed through the "
                       f"detectors alone ({replayed['findings']} findings):"]
    detection_lines += ["  " + line for line in bench_backtest.detector_lines(replayed)]
    for line in bench_ingest.report(figures, detection_lines):
        print(line)


def _ingest_plan(args):
    return bench_ingest.Plan(gateways=args.ingest_gateways,
                             records_per_gateway=args.ingest_records,
                             connections=args.connections, alert_trials=args.alert_trials,
                             rounds=args.rounds, detection_rounds=args.detection_rounds,
                             flow_interval_ms=args.flow_interval_ms,
                             postgres=not args.no_postgres)


def _counted_part(args, workdir):
    figures = bench_counted.run(_ingest_plan(args), workdir, lambda line: print(line, flush=True))
    print()
    for line in bench_counted.report(figures):
        print(line)


def _backtest_part(args, workdir):
    plan = bench_backtest.Plan(days=args.backtest_days, dispensers=args.backtest_dispensers)
    figures = bench_backtest.run(plan, workdir, lambda line: print(line, flush=True))
    print()
    for line in bench_backtest.report(figures):
        print(line)


def _gateway_part(args, tmp):
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
    print(f"running the whole gateway under -X heapsize={BOARD_HEAP} through "
          f"{args.day_visits} visits of the dispenser day ...", flush=True)
    day = _gateway_day_figures(image, tmp / "day", args.day_visits)
    board_images = {}
    for port in ("esp32", "rp2"):
        micropython.build_image(tmp / f"image-{port}", port)
        board_images[port] = micropython.image_facts(tmp / f"image-{port}")["bytes"]

    print(f"signing {args.records} records on the MicroPython gateway for the host side ...", flush=True)
    envelopes, summary, _ = drill.run_gateway(tmp, args.records, use_table=True, image=image)
    public_key = bytes.fromhex(summary["public_key"])
    keyring = {cose.kid_for(public_key): verify.load_public_key(public_key)}
    print("measuring host verification ...", flush=True)
    bare = bench_ingest.bare_verify_rate(envelopes, keyring, args.rounds)
    ours = bench_ingest.rate(lambda e: verify.verify_record(e, keyring), envelopes,
                             args.rounds)
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
    print(f"whole gateway, DART tap + pulse input + tank gauge, -X heapsize={BOARD_HEAP} "
          f"({day['heap_total']} bytes)")
    print(f"  {day['sales']} sales, {day['records']} records; heap in use after gc over "
          f"{day['statuses'] - 1} settled status records: {day['heap_min']}..{day['heap_max']} "
          f"bytes (spread {day['heap_max'] - day['heap_min']}), "
          f"{100 * day['heap_max'] / day['heap_total']:.0f} % of the heap")
    print()
    print(f"host verification, {len(envelopes)} records of {record_bytes:.0f} bytes on average, x{args.rounds}")
    print(f"  cryptography P-256 verify (bare)         {bare:9.0f} /s")
    print(f"  meterseal verify + parse                 {ours:9.0f} /s   ratio {ours / bare:.2f}")


def add_parser(sub):
    parser = sub.add_parser("bench", help="measure signing and verification speed")
    parser.add_argument("--sign-count", type=int, default=200, help="signatures per mode (default 200)")
    parser.add_argument("--records", type=int, default=500, help="records for the host-side rates (default 500)")
    parser.add_argument("--day-visits", type=int, default=60,
                        help="visits of the dispenser day for the whole-gateway heap (default 60)")
    parser.add_argument("--rounds", type=int, default=4, help="passes over the records per rate (default 4)")
    parser.add_argument("--part", choices=("all", "gateway", "ingest", "backtest", "counted"),
                        default="all",
                        help="the gateway figures (MicroPython), the ingest host's, the "
                             "backtest's, all three (default), or the detectors' cost in the "
                             "ingest counted under valgrind (slow; not part of all)")
    ingest = bench_ingest.Plan()
    for option, default, help_text in (
            ("--ingest-gateways", ingest.gateways, "gateways uploading at once for the ingest rate"),
            ("--ingest-records", ingest.records_per_gateway, "fuel sales per uploading gateway"),
            ("--connections", ingest.connections, "gateways held connected to one host"),
            ("--alert-trials", ingest.alert_trials, "forged records timed until their alert shows"),
            ("--detection-rounds", ingest.detection_rounds,
             "uploads with the detectors off and with them on, alternating"),
            ("--flow-interval-ms", ingest.flow_interval_ms,
             "the load's flow profile interval in ms; a gateway records one a second")):
        parser.add_argument(option, type=int, default=default, help=f"{help_text} (default {default})")
    parser.add_argument("--no-postgres", action="store_true",
                        help="leave out the PostgreSQL ingest figures")
    backtest = bench_backtest.Plan()
    parser.add_argument("--backtest-days", type=int, default=backtest.days,
                        help=f"days of the backtested site's history (default {backtest.days})")
    parser.add_argument("--backtest-dispensers", type=int, default=backtest.dispensers,
                        help="two-nozzle dispensers of the backtested site (default "
                             f"{backtest.dispensers})")
    parser.set_defaults(run=run)
