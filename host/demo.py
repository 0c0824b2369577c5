"""`meterseal demo`: the whole system on one machine, on loopback.

1. Build the gateway image (mpy-cross) and start the host, ingest and REST API, on 127.0.0.1
   with a fresh SQLite database in the demo directory.
2. Provision eleven gateways: each creates its key in its own storage directory, and its
   provisioning request is imported into the registry with the devices it watches.
3. Run the site of hil_tests/scenarios/demo_site.toml: the station's controller drives four
   two-nozzle dispensers on one DART line, which four gateways tap listen-only with the pumps'
   pulse outputs wired to them; a fifth gateway polls the tank gauge; six gateways read the
   market's six price scales. Every gateway is the real firmware on the MicroPython unix port.
   One dispenser and one scale cheat.
4. Replay the days on the site's accelerated clock, which the gateways and the host share.
5. Check what the host stored against what the devices really did, and summarise.
"""

import argparse
import asyncio
import json
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from meterseal.hil import fleet
from meterseal.hil import scenario as scenarios
from meterseal.hil.site import Site
from meterseal.host import cli_store, gateway_cli, verify
from meterseal.host.api_tokens import TokenBook
from meterseal.host.ingest import IngestConfig
from meterseal.host.serve import TOKENS_FILE, HostService

SCENARIO = Path(scenarios.__file__).parent / "scenarios" / "demo_site.toml"
DETECTOR_PARAMS = SCENARIO.with_name("demo_params.toml")  # why: the file says
DEFAULT_DIRECTORY = "meterseal-demo"
MARKER_FILE = "meterseal-demo.json"  # marks a directory this command may wipe and reuse
STATION, MARKET = "STATION-1", "MARKET-1"
MAX_DAYS = 7
# Real seconds: a gateway that has signed nothing this long after its customer left is stuck.
_KEEP_UP_TIMEOUT_S = 60
_DRAIN_TIMEOUT_S = 120
_BOOT_TIMEOUT_S = 60
_DEMO_ACTOR = "demo.operator"
_DAYS_TO_CATCH_ALL = 3
# Alerts from the signatures and chains (ingest_alerts); every other rule is a detector's.
_INTEGRITY_RULES = ("chain.", "verify.", "registry.")


class DemoError(RuntimeError):
    pass


def _say(text=""):
    print(text, flush=True)


class _Progress:
    """One line that redraws itself on a terminal; a line per tenth elsewhere (a CI log)."""

    def __init__(self, clock, start_s, days, watch):
        self.clock = clock
        self.start_s = start_s
        self.days = days
        self.watch = watch
        self.tty = sys.stdout.isatty()
        self.shown_tenth = -1

    def __call__(self, done, total):
        tenth = done * 10 // max(total, 1)
        if not self.tty and tenth == self.shown_tenth:
            return
        self.shown_tenth = tenth
        day = min(int((self.clock.now() - self.start_s) // 86400) + 1, self.days)
        bar = "#" * (done * 24 // max(total, 1))
        line = (f"  day {day} of {self.days} [{bar:<24}] {done}/{total} customers, "
                f"stored: {self.watch.total('fuel.sale')} sales, "
                f"{self.watch.total('scale.weighing')} weighings, "
                f"{self.watch.total('tank.inventory')} tank readings")
        if self.tty:
            print("\r" + line, end="", flush=True)
            if done == total:
                print(flush=True)
        else:
            print(line, flush=True)


class _HostThread:
    """The host service on an event loop of its own thread, so the replay can block."""

    def __init__(self, service):
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="host", daemon=True)
        self.thread.start()
        self._call(service.start())

    def _call(self, coroutine, timeout_s=60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self):
        try:
            self._call(self.service.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


def _fresh_directory(path):
    if path.exists():
        if not (path / MARKER_FILE).exists():
            raise DemoError(f"{path} exists and is not a demo directory: give --dir a new path")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _scenario(days):
    data = scenarios.load(SCENARIO)
    data["duration_hours"] = days * 24.0
    return scenarios.check(data)


def run(args):
    directory = _fresh_directory(Path(args.dir))
    data = _scenario(args.days)
    visits = scenarios.plan(data)
    _say(f"meterseal demo: {args.days} simulated days at a petrol station and a market, "
         f"in {directory}/")
    _say()
    _say("1. Gateway image and host")
    facts = gateway_cli.build_image(directory / "image", "unix")
    _say(f"   image: {facts['files']} modules, {facts['bytes']:,} bytes of .mpy, software digest "
         f"{facts['digest'].hex()[:16]}...")
    site = Site(data, speed=args.speed)
    tokens = TokenBook()
    officer_token = tokens.issue("demo.officer", "officer")
    tokens.save(directory / TOKENS_FILE)
    (directory / MARKER_FILE).write_text(json.dumps({"scenario": str(SCENARIO), "days": args.days}))
    # Ports chosen by the system: the demo never takes a port a real host may be using.
    ingest_config = IngestConfig(port=0, clock_tolerance_ms=fleet.clock_tolerance_ms(
        args.speed, fleet.HOST_CLOCK_TOLERANCE_MS), detector_params=str(DETECTOR_PARAMS))
    service = HostService(str(directory), tokens, ingest_config=ingest_config, api_port=0,
                          clock_ms=site.clock.now_ms)
    host = _HostThread(service)
    _say(f"   host on 127.0.0.1: ingest port {service.ingest_port}, REST API port "
         f"{service.api_port}; {service.label}")
    _say(f"   detectors live in the ingest, parameters {DETECTOR_PARAMS.name}: the flow "
         f"detectors are off at {args.speed:g}x, where a gateway's timing is not physical")
    gateways = fleet.Fleet(site, directory / "image", directory, service.ingest_port,
                           station_id=STATION, market_id=MARKET)
    watch = None
    try:
        gateways.plan()
        _say()
        _say(f"2. Provisioning {len(gateways.gateways)} gateways")
        with cli_store.open_cli_store(str(directory), create=False) as store:
            store.registry.add_site(STATION, "Demo petrol station / 示范加油站", "1 Harbour Road")
            store.registry.add_site(MARKET, "Demo market row / 示范农贸市场", "3 Harbour Road")
            # Keys count from the start of the simulated days, the time the records carry.
            software_id = gateways.provision(store, valid_from_ms=int(data["start_s"] * 1000))
            _register_station_facts(store, data)
        for gateway in gateways.gateways:
            devices = ", ".join(f"{d.type} {d.ref}" for d in gateway.devices)
            _say(f"   {gateway.gateway_id:<20} {gateway.site_id:<10} {devices}")
        _say(f"   expected software id of every device's gateway: {software_id}")
        _say()
        _say("3. Gateways on the MicroPython unix port")
        watch = fleet.UploadWatch(lambda: cli_store.open_cli_store(str(directory), create=False),
                                  [g.gateway_id for g in gateways.gateways])
        gateways.start()
        deadline = time.monotonic() + _BOOT_TIMEOUT_S
        for gateway in gateways.gateways:
            while not watch.wait(gateway.gateway_id, "boot", 1, 0.5):
                gateways.check_running()
                if time.monotonic() > deadline:
                    raise DemoError(f"gateway {gateway.gateway_id} did not upload its boot "
                                    f"record in {_BOOT_TIMEOUT_S} s (log {gateway.log_path})")
        _say(f"   {len(gateways.gateways)} gateways booted, authenticated and uploading")
        _say()
        _say(f"4. Replaying {len(visits)} customers and deliveries at {args.speed:g}x")
        outcome = _replay(site, visits, gateways, watch, args)
        gateways.stop()  # nothing arrives while the summary reads
        _say()
        _say("5. What the host holds")
        ok = _summary(directory, site, gateways, outcome, args.days)
    finally:
        if watch is not None:
            watch.close()
        gateways.stop()
        site.stop()
        host.close()
    _say()
    _say(f"The database is {directory / 'meterseal.db'}; each gateway's key, configuration, "
         f"provisioning request and log are in {directory / 'gateways'}/. To look around:")
    _say(f"  meterseal status --db {directory}")
    _say(f"  meterseal records --db {directory} --gateway MS-{STATION}-D3 --kind event")
    _say(f"  meterseal serve --db {directory}     # ingest on 127.0.0.1:7455, REST API on "
         "http://127.0.0.1:8080/ (OpenAPI at /openapi.json)")
    _say(f"  curl -H 'Authorization: Bearer {officer_token}' http://127.0.0.1:8080/alerts")
    _say("     (an officer's token, made for this demo; `meterseal token issue` makes more)")
    _say()
    _say("Demo finished: every check passed." if ok else "Demo finished: some checks FAILED.")
    return 0 if ok else 1


def _register_station_facts(store, data):
    """What the station's detectors compare the records with, as its operator declares them:
    the posted prices, which tank feeds each grade, and each nozzle's rated maximum flow."""
    facts = store.detection
    start_ms = int(data["start_s"] * 1000)
    prices, tanks = {}, {}
    for dispenser in data["forecourt"]["dispensers"]:
        for number, nozzle in enumerate(dispenser["nozzles"], 1):
            prices[nozzle["grade"]] = nozzle["unit_price_minor_per_kl"]
            tanks[nozzle["grade"]] = nozzle["tank"]
            facts.set_max_flow(STATION, f"{dispenser['address']}/{number}",
                               nozzle["max_flow_lpm"], entered_by=_DEMO_ACTOR)
    for grade, price in sorted(prices.items()):
        facts.set_price(STATION, grade, price, start_ms, entered_by=_DEMO_ACTOR)
    facts.set_grade_tanks(STATION, tanks, entered_by=_DEMO_ACTOR)


def _replay(site, visits, gateways, watch, args):
    by_device = gateways.by_device()
    slow = []

    def keep_up(device):
        # The next customer steps up once the device's gateway has signed the last one's
        # sale: at this clock speed a loaded machine could otherwise run the tap a whole
        # customer behind, which a real forecourt's minutes between cars never do.
        gateway = by_device[device]
        label, done = fleet.signed_so_far(site, device)
        if not watch.wait(gateway.gateway_id, label, done, _KEEP_UP_TIMEOUT_S):
            gateways.check_running()
            slow.append(gateway.gateway_id)

    site.pace = keep_up
    site.start()
    started = time.monotonic()
    failures = site.replay(visits, progress=_Progress(site.clock, site.scenario["start_s"],
                                                      args.days, watch))
    replay_s = time.monotonic() - started
    drained = _drain(site, gateways, watch)
    return {"failures": failures, "slow": sorted(set(slow)), "replay_s": replay_s,
            "drained": drained}


def _drain(site, gateways, watch):
    """Wait for every sale, weighing and delivery the devices made to be stored."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT_S
    missing = []
    for gateway in gateways.gateways:
        label, count = fleet.signed_so_far(site, gateway.serves)
        if not watch.wait(gateway.gateway_id, label, count, max(deadline - time.monotonic(), 0)):
            missing.append(f"{gateway.gateway_id}: {label}")
    return missing


def _check(ok, text):
    _say(f"   [{'ok' if ok else 'FAILED'}] {text}")
    return ok


def _stored(store, gateway_id):
    """Every accepted record of a gateway, in seq order, re-verified here with `cryptography`
    against the registry's keys: (verdict outcome, record)."""
    keyring = {key.kid: verify.load_public_key(key.public_key)
               for key in store.registry.keys(gateway_id)}
    out, after = [], None
    while True:
        page = store.records(gateway_id, after_seq=after, limit=1000)
        for row in page.items:
            verdict = verify.verify_record(row.envelope, keyring)
            out.append((verdict.outcome, verdict.record))
        if page.next_after is None:
            return out
        after = page.next_after


def _sales_match(signed, truth):
    got = [(r["device"]["nozzle"], r["body"]["volume_ml"], r["body"]["amount_minor"],
            r["body"].get("pulses_counted")) for r in signed]
    expected = [(e["nozzle"], e["indicated_volume_ml"], e["indicated_amount_minor"],
                 e["pulser_pulses"]) for e in truth]
    return got == expected


def _weighings_match(signed, truth):
    got = [(r["body"]["net_mg"], r["body"]["amount_minor"]) for r in signed]
    expected = [(e["net_mg"], e["amount_minor"]) for e in truth]
    return got == expected


def _summary(directory, site, gateways, outcome, days):
    ok = _check(not outcome["failures"] and not site.errors(),
                f"every customer served, in {outcome['replay_s']:.0f} s of real time"
                + "".join(f"; {visit}: {reason}" for visit, reason in outcome["failures"][:3])
                + "".join(f"; emulator error: {e.strip().splitlines()[-1]}"
                          for e in site.errors()[:3]))
    ok &= _check(not outcome["drained"], "everything the devices did reached the host"
                 + (": missing " + ", ".join(outcome["drained"]) if outcome["drained"] else ""))
    with (cli_store.open_cli_store(str(directory), create=False) as store,
          store.snapshot()):  # one consistent view, whatever a last batch still commits
        outcomes = store.outcome_counts()
        total = sum(outcomes.values())
        accepted = outcomes[verify.VERIFIED] + outcomes[verify.VERIFIED_WITH_WARNINGS]
        ok &= _check(accepted == total,
                     f"{accepted:,} of {total:,} records verified at ingest (ES256 over the "
                     "received bytes, registered key, schema, chain)"
                     + (f"; {outcomes[verify.VERIFIED_WITH_WARNINGS]} signed before the gateway "
                        "had the host's time" if outcomes[verify.VERIFIED_WITH_WARNINGS] else ""))
        kinds, findings, reverified, checked = Counter(), Counter(), 0, 0
        truth_lines, truth_ok, cheating = [], True, set()
        for gateway in gateways.gateways:
            stored = _stored(store, gateway.gateway_id)
            reverified += sum(1 for outcome_, _ in stored if outcome_ == verify.VERIFIED)
            checked += len(stored)
            signed = [record for _, record in stored if record is not None]
            kinds.update(r["kind"] for r in signed)
            findings.update(f.kind for f in store.findings(gateway.gateway_id))
            line, matched, cheated = _truth_line(site, gateway, signed)
            truth_lines.append(line)
            truth_ok &= matched
            if cheated:
                cheating.add(gateway.gateway_id)
        ok &= _check(reverified == checked == total,
                     f"{reverified:,} of {checked:,} re-verified here from the database with "
                     "cryptography and the registry's keys")
        ok &= _check(not findings, "chains complete: no gap, fork, replay, rewind or clock "
                     "anomaly" + (f" (found: {dict(findings)})" if findings else ""))
        _say("       records: " + ", ".join(f"{kind} {count:,}" for kind, count
                                           in sorted(kinds.items())))
        ok &= _check(truth_ok, "every sale and weighing is signed with exactly the figures "
                     "the device showed the customer:")
        for line in truth_lines:
            _say("         " + line)
        ok &= _detections(store.alerts.ranked(limit=500), cheating, days)
        if outcome["slow"]:
            _say("   note: the replay waited the full keep-up time for "
                 + ", ".join(outcome["slow"]) + " (the machine is loaded)")
    return ok


def _detections(alerts, cheating, days):
    """The detectors' alerts: none on an honest device, and one on each cheating device once the
    run is long enough for the slowest detector to build its reference."""
    detected = [a for a in alerts if not a.rule.startswith(_INTEGRITY_RULES)]
    caught = {a.gateway_id for a in detected} & cheating
    false = [a for a in detected if a.gateway_id not in cheating]
    ok = _check(not false and (caught == cheating or days < _DAYS_TO_CATCH_ALL),
                f"the detectors raised {len(detected)} alert(s) live: on {len(caught)} of the "
                f"{len(cheating)} cheating devices, {len(false)} on honest ones")
    if caught != cheating:
        _say(f"     not caught yet: {', '.join(sorted(cheating - caught))} (the scale detector "
             "compares each article's weights across the market's scales and needs about two "
             f"days of sales to do so; {_DAYS_TO_CATCH_ALL} days and more must catch every cheat)")
    for alert in sorted(alerts, key=lambda a: (a.gateway_id not in cheating, -a.score))[:12]:
        _say(f"     #{alert.alert_id} {alert.severity:<8} {alert.rule:<28} {alert.gateway_id} "
             f"{alert.device_ref or ''}")
        _say(f"        {alert.explanation_en}")
        _say(f"        {alert.explanation_zh}")
        _say(f"        evidence: {len(alert.evidence_record_ids)} record(s), ids "
             + ", ".join(str(i) for i in alert.evidence_record_ids[:8])
             + (" ..." if len(alert.evidence_record_ids) > 8 else ""))
    return ok


def _truth_line(site, gateway, signed):
    """One line comparing a gateway's signed records with its device's ground truth, whether
    they match exactly, and whether the device cheated."""
    kind, index = gateway.serves[0], gateway.serves[-1]
    events = Counter(r["body"]["event_type"] for r in signed if r["kind"] == "event")
    if kind == "pump":
        truth = site.pumps[index].truth.entries()
        sales = [r for r in signed if r["kind"] == "fuel.sale"]
        cheated = [e for e in truth if e["cheats"]]
        line = (f"pump 0x{index:02X} ({gateway.gateway_id}): {len(sales)} sales signed of "
                f"{len(truth)} made")
        if cheated:
            short_ml = sum(e["indicated_volume_ml"] - e["true_volume_ml"] for e in cheated)
            line += (f"; CHEATING on {len(cheated)} sales ({short_ml / 1000:.1f} L charged but "
                     f"not delivered); the gateway signed {events['pulse_mismatch']} "
                     "pulse_mismatch events")
        return line, _sales_match(sales, truth), bool(cheated)
    if kind == "scale":
        truth = [e for e in site.scales[index].truth.entries() if e["kind"] == "weighing"]
        weighings = [r for r in signed if r["kind"] == "scale.weighing"]
        cheated = [e for e in truth if e["cheats"]]
        line = (f"scale {index + 1} ({gateway.gateway_id}): {len(weighings)} weighings signed "
                f"of {len(truth)} made")
        if cheated:
            extra_g = sum(e["net_mg"] - e["true_net_mg"] for e in cheated) / 1000
            line += f"; CHEATING on {len(cheated)} weighings ({extra_g:.0f} g charged but not sold)"
        return line, _weighings_match(weighings, truth), bool(cheated)
    deliveries = [r for r in signed if r["kind"] == "tank.delivery"]
    readings = [r for r in signed if r["kind"] == "tank.inventory"]
    line = (f"tank gauge ({gateway.gateway_id}): {len(readings)} inventory readings, "
            f"deliveries: {len(deliveries)} signed of {len(site.gauge.truth)} made")
    return line, len(deliveries) == len(site.gauge.truth), False


def _days(text):
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    if not 1 <= days <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_DAYS}")
    return days


def _speed(text):
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not 1 <= speed <= 2000:
        raise argparse.ArgumentTypeError("must be between 1 and 2000")
    return speed


def add_parser(sub):
    parser = sub.add_parser("demo", help="a station and a market, simulated for days, with real "
                                         "gateways and the host on loopback",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=_days, default=3,
                        help=f"simulated days, 1..{MAX_DAYS} (default 3)")
    parser.add_argument("--speed", type=_speed, default=600.0,
                        help="simulated seconds per real second while a customer is served "
                             "(default 600; idle time is skipped)")
    parser.add_argument("--dir", default=DEFAULT_DIRECTORY,
                        help=f"the demo's directory: database, gateway keys and logs "
                             f"(default ./{DEFAULT_DIRECTORY}; a previous demo's is replaced)")
    parser.set_defaults(run=run)
