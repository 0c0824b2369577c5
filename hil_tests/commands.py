"""``meterseal emulate`` and ``meterseal scenario``: the emulators, by hand and by scenario.

``emulate DEVICE`` starts one emulated device on a fresh pty (or, for the controller, on a real
serial port), prints the device path to open, and reads commands from standard input so a
person can play customer, operator or cheat: type ``help``. It runs until ``quit``, end of
input (when input is not a terminal it keeps running until interrupted) or Ctrl-C.

``scenario FILE`` builds a whole site from a scenario file, replays its customers on an
accelerated clock with a progress bar, prints a summary and can write the ground truth (every
device's truth log and the plan) as JSON: the labels detector evaluation needs.
"""

import argparse
import json
import shlex
import signal
import sys
import threading

from meterseal.hil import cheats, scenario
from meterseal.hil.emulators import dispenser, scale
from meterseal.hil.emulators.controller import Controller
from meterseal.hil.emulators.hydraulics import Nozzle
from meterseal.hil.emulators.tank_gauge import Tank, TankGauge
from meterseal.hil.serial_link import PtyPort, SerialPort
from meterseal.hil.simclock import SimClock
from meterseal.hil.site import Site, SiteError


def _address(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not 0x50 <= value <= 0x6F:
        raise argparse.ArgumentTypeError("DART pump addresses are 0x50..0x6F")
    return value


def _nozzle(text):
    """GRADE:MAX_LPM:PRICE_MINOR_PER_KL, e.g. 1:40:789000."""
    try:
        grade, flow, price = text.split(":")
        return Nozzle(grade=int(grade), max_flow_lpm=float(flow), unit_price_minor_per_kl=int(price))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"nozzle {text!r}: expected GRADE:MAX_LPM:PRICE_MINOR_PER_KL, e.g. 1:40:789000")


def _cheat(text):
    """KIND:SIZE[:SCHEDULE], e.g. pulse_scaling_board:3:draws_above:20000."""
    kind, _, rest = text.partition(":")
    size, _, schedule = rest.partition(":")
    try:
        return kind, float(size), cheats.parse_schedule(schedule or "always")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cheat {text!r}: {exc}")


class Console:
    """A line-command loop over one device: each command is (arguments help, handler)."""

    def __init__(self, name, commands):
        self.name = name
        self.commands = dict(commands)
        self.commands["help"] = ("", self.help)

    def help(self):
        for word, (usage, _) in sorted(self.commands.items()):
            print(f"  {word} {usage}".rstrip())
        print("  quit")

    def run(self, stop):
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"{self.name}> type help for commands", flush=True)
        for line in sys.stdin:
            if stop.is_set():
                return
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "quit":
                return
            entry = self.commands.get(words[0])
            if entry is None:
                print(f"unknown command {words[0]!r}; type help", flush=True)
                continue
            try:
                result = entry[1](*words[1:])
            except (TypeError, ValueError, RuntimeError) as exc:
                print(f"error: {exc} (usage: {words[0]} {entry[0]})", flush=True)
                continue
            if result is not None:
                print(json.dumps(result, indent=2, default=str), flush=True)
        if not interactive:
            stop.wait()  # input closed: keep serving the line until interrupted


def _cheat_commands(board):
    def fit(kind, size, schedule="always"):
        board.fit(kind, float(size), cheats.parse_schedule(schedule))

    return {
        "cheat": ("KIND SIZE [SCHEDULE]", fit),
        "uncheat": ("KIND", board.remove),
        "toggle": ("KIND on|off", lambda kind, state: board.toggle(kind, state == "on")),
        "cheats": ("", lambda: {k: c.describe() for k, c in board.fitted().items()}),
    }


def _dispenser(args, clock):
    port = PtyPort()
    pump = dispenser.Dispenser(port, clock, address=args.address,
                               nozzles=tuple(args.nozzle or (Nozzle(grade=1, max_flow_lpm=40, unit_price_minor_per_kl=789000),)),
                               seed=args.seed)
    for kind, size, schedule in args.cheat or ():
        pump.cheats.fit(kind, size, schedule)
    paths = {"DART line (RS-485, 9600 8O1)": port.path, "pulser channel": pump.pulser_path}
    commands = {
        "lift": ("NOZZLE", lambda n: pump.lift(int(n))),
        "hang": ("NOZZLE", lambda n: pump.hang_up(int(n))),
        "draw": ("NOZZLE ML", lambda n, ml: {"customer_at_nozzle": pump.customer_draw(int(n), int(ml)).nozzle}),
        "power": ("off|on", lambda s: pump.power_fail() if s == "off" else pump.power_restore()),
        "fault": (f"{'|'.join(dispenser.FAULTS)} [COUNT]", lambda k, c="1": pump.inject_fault(k, int(c))),
        "status": ("", lambda: {"dc1_status": pump.status, "nozzle_out": pump.nozzle_out,
                                "totalizers": pump.totalizers()}),
        "truth": ("", lambda: pump.truth.last()),
        **_cheat_commands(pump.cheats),
    }
    return pump, [port], paths, commands


def _scale(args, clock):
    port = PtyPort()
    device = scale.PriceScale(port, clock, max_mg=args.max_g * 1000, e_mg=args.e_g * 1000, seed=args.seed)
    for kind, size, schedule in args.cheat or ():
        device.cheats.fit(kind, size, schedule)
    commands = {
        "place": ("GRAMS", lambda g: device.place(int(float(g) * 1000))),
        "remove": ("", device.remove),
        "price": ("MINOR_PER_KG [PLU]", lambda p, plu="0": device.set_price(int(p), int(plu))),
        "tare": ("", lambda: str(device.tare())),
        "zero": ("", lambda: str(device.zero())),
        "sell": ("", lambda: device.sell()),
        "weigh": ("GRAMS [TARE_GRAMS] [MINOR_PER_KG]", lambda g, t="0", p=None: device.customer_weighing(
            int(float(g) * 1000), tare_mg=int(float(t) * 1000),
            unit_price_minor_per_kg=int(p) if p else None)),
        "calibrate": ("SPAN_PPM", lambda ppm: device.calibrate(int(ppm))),
        "reading": ("", device.reading),
        "truth": ("", lambda: device.truth.last()),
        **_cheat_commands(device.cheats),
    }
    return device, [port], {"MT-SICS line (RS-232, 9600 8N1)": port.path}, commands


def _tank_gauge(args, clock):
    port = PtyPort()
    tanks = tuple(Tank(number=n, volume_ml=args.volume_ml) for n in range(1, args.tanks + 1))
    gauge = TankGauge(port, clock, tanks=tanks, seed=args.seed)
    commands = {
        "draw": ("TANK ML", lambda t, ml: gauge.draw(int(t), int(ml))),
        "deliver": ("TANK ML [SECONDS]",
                    lambda t, ml, s="1800": {"delivery_ends_at_s": gauge.deliver(int(t), int(ml), float(s))}),
        "state": ("TANK", lambda t: gauge.true_state(int(t))),
    }
    return gauge, [port], {"TLS line (RS-232, 9600 8N1)": port.path}, commands


def _controller(args, clock):
    port = SerialPort(args.port, parity="O") if args.port else PtyPort()
    station = Controller(port, clock, addresses=tuple(args.address_list or (0x50,)))
    commands = {
        "prepay": ("ADDRESS AMOUNT_MINOR", lambda a, m: station.prepay(int(a, 0), amount_minor=int(m))),
        "sales": ("", lambda: list(station.sales)),
        "links": ("", lambda: station.link_stats),
    }
    return station, [port], {"DART master on": port.path}, commands


_DEVICES = {
    "dispenser": _dispenser,
    "scale": _scale,
    "tank-gauge": _tank_gauge,
    "controller": _controller,
}


def run_emulate(args):
    clock = SimClock(speed=args.speed)
    device, ports, paths, commands = _DEVICES[args.device](args, clock)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    device.start()
    try:
        for role, path in paths.items():
            print(f"{role}: {path}", flush=True)
        Console(args.device, commands).run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        device.stop()
        for port in ports:
            port.close()
    return 0


def _progress(done, total):
    width = 40
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} visits", end=end,
          file=sys.stderr, flush=True)


def run_scenario(args):
    try:
        data = scenario.load(args.file)
    except OSError as exc:
        raise scenario.ScenarioError(f"cannot read {args.file}: {exc.strerror}")
    if args.hours:
        data["duration_hours"] = args.hours
    visits = scenario.plan(data)
    print(f"scenario {args.file}: seed {data['seed']}, {data['duration_hours']:g} h, {len(visits)} visits")
    with Site(data, speed=args.speed) as site:
        for role, path in site.ports().items():
            print(f"  {role}: {path}")
        failures = site.replay(visits, progress=_progress)
        summary = _summary(site, visits, failures)
        if args.truth:
            truth = {
                "scenario": args.file,
                "seed": data["seed"],
                "plan": [{"at_s": v.at_s, "kind": v.kind, **v.params} for v in visits],
                "dispensers": {f"0x{a:02X}": p.truth.entries() for a, p in site.pumps.items()},
                "scales": [scale.truth.entries() for scale in site.scales],
                "tank_gauge": site.gauge.truth.entries() if site.gauge else [],
                "failures": [{"visit": repr(v), "reason": r} for v, r in failures],
            }
            with open(args.truth, "w") as f:
                json.dump(truth, f, indent=1)
            print(f"ground truth written to {args.truth}")
    for line in summary:
        print(line)
    return 1 if failures or site.errors() else 0


def _summary(site, visits, failures):
    lines = []
    for address, pump in site.pumps.items():
        sales = pump.truth.entries()
        true_l = sum(s["true_volume_ml"] for s in sales) / 1000
        shown_l = sum(s["indicated_volume_ml"] for s in sales) / 1000
        cheated = sum(1 for s in sales if s["cheats"])
        lines.append(f"  pump 0x{address:02X}: {len(sales)} sales, {true_l:.2f} L delivered, "
                     f"{shown_l:.2f} L indicated, {cheated} affected by cheats")
    for number, scale in enumerate(site.scales, 1):
        sales = [e for e in scale.truth.entries() if e["kind"] == "weighing"]
        lines.append(f"  scale {number}: {len(sales)} sales, "
                     f"{sum(1 for s in sales if s['cheats'])} affected by cheats")
    if site.gauge:
        lines.append(f"  tank gauge: {len(site.gauge.truth)} deliveries completed")
    for visit, reason in failures:
        lines.append(f"  FAILED {visit}: {reason}")
    for error in site.errors():
        lines.append(f"  EMULATOR ERROR: {error.strip().splitlines()[-1]}")
    return lines


def add_parsers(sub):
    emulate = sub.add_parser("emulate", help="run one emulated device on a pty, by hand",
                             description=__doc__.split("\n\n")[1])
    emulate.add_argument("device", choices=sorted(_DEVICES))
    emulate.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
    emulate.add_argument("--seed", type=int, default=0)
    emulate.add_argument("--address", type=_address, default=0x50, help="dispenser: DART address (default 0x50)")
    emulate.add_argument("--nozzle", type=_nozzle, action="append",
                         help="dispenser: GRADE:MAX_LPM:PRICE_MINOR_PER_KL, once per nozzle (default 1:40:789000)")
    emulate.add_argument("--cheat", type=_cheat, action="append",
                         help="KIND:SIZE[:SCHEDULE], e.g. pulse_scaling_board:3:draws_above:20000")
    emulate.add_argument("--max-g", type=int, default=15000, help="scale: Max in grams (default 15000)")
    emulate.add_argument("--e-g", type=int, default=5, help="scale: e = d in grams (default 5)")
    emulate.add_argument("--tanks", type=int, default=2, help="tank gauge: number of tanks (default 2)")
    emulate.add_argument("--volume-ml", type=int, default=15000000, help="tank gauge: initial volume per tank")
    emulate.add_argument("--port", help="controller: a real serial device to drive instead of a new pty")
    emulate.add_argument("--address-list", type=_address, action="append", dest="address_list",
                         help="controller: a pump address to poll, once per pump (default 0x50)")
    emulate.set_defaults(run=run_emulate)

    run = sub.add_parser("scenario", help="replay a scenario's customers against an emulated site")
    run.add_argument("file", help="scenario TOML file, e.g. hil_tests/scenarios/forecourt_day.toml")
    run.add_argument("--speed", type=float, default=600.0, help="simulated seconds per real second while busy (default 600)")
    run.add_argument("--hours", type=float, help="replay only this many hours from the start")
    run.add_argument("--truth", help="write the ground truth as JSON to this file")
    run.set_defaults(run=run_scenario)
