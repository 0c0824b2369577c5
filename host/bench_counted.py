"""The detectors' cost in the ingest counted rather than timed (`meterseal bench --part counted`).

On a shared machine one upload's CPU time differs from the next by a third, so a change of a few
per cent in the detectors' cost cannot be told from noise by timing (bench_ingest). Here the
ingest host runs under valgrind's callgrind, with the detectors off and on, over the same load
as the timed bench: the instructions it executes for the upload, and a cycle estimate from
callgrind's cache and branch-predictor models (KCachegrind's formula: instructions + 10 ×
mispredicted branches + 10 × first-level misses + 100 × last-level misses), agree from one run
to the next within 0.3 % whatever else the machine does (not exactly: hash randomisation
reorders dicts and sets). Only the upload is counted (callgrind_control zeroes the counters
after each gateway's first batch and dumps them after the last ACK), so start-up and shutdown
are left out.

What the counts do not see: the real machine's caches, branch predictor and instructions per
cycle, which the models only approximate. The interpreter's branchy work (the detectors) runs at
fewer instructions per cycle than OpenSSL's verify (most of the bare ingest), so the timed share
is larger than the instructions'; the mispredicted branches (the interpreter's dispatch) are
the part of that the estimate can see. The budget is on the timed share; the counts are for
comparing code with code.
"""

import asyncio
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meterseal.host import bench_ingest
from meterseal.host.bench_ingest import BenchError

# valgrind runs the host some 50-100 times slower: a batch can wait for many others.
_ANSWER_TIMEOUT_S = 900
_START_TIMEOUT_S = 600
# Callgrind's events with --cache-sim=yes: instructions, then the first-level (I1, D1 read and
# write) and last-level (LL) misses; with --branch-sim=yes, the mispredicted conditional and
# indirect branches.
_FIRST_LEVEL = ("I1mr", "D1mr", "D1mw")
_LAST_LEVEL = ("ILmr", "DLmr", "DLmw")
_MISPREDICTED = ("Bcm", "Bim")
_CALLGRIND = ("--tool=callgrind", "--cache-sim=yes", "--branch-sim=yes")


@dataclass(frozen=True)
class Counts:
    """Callgrind's counts for one arm's upload, per record."""

    records: int
    instructions: float
    first_level_misses: float
    last_level_misses: float
    mispredicted_branches: float

    @property
    def cycle_estimate(self):
        return (self.instructions + 10 * self.mispredicted_branches
                + 10 * self.first_level_misses + 100 * self.last_level_misses)


def parse_dump(text, records):
    """Counts per record from a callgrind dump: its ``events:`` line and the ``summary:`` line,
    the cost since the counters were zeroed (callgrind leaves out trailing zero counts)."""
    events = summary = None
    for line in text.splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            summary = [int(value) for value in line.split()[1:]]
    if events is None or summary is None or len(summary) > len(events):
        raise BenchError("the callgrind dump has no events and summary lines")
    counts = dict(zip(events, summary + [0] * (len(events) - len(summary))))
    missing = [event for event in ("Ir",) + _FIRST_LEVEL + _LAST_LEVEL + _MISPREDICTED
               if event not in counts]
    if missing:
        raise BenchError(f"the callgrind dump lacks {', '.join(missing)}: were the cache and "
                         "branch simulations on?")
    if records < 1:
        raise BenchError("no record was counted: the load fits in each gateway's first batch")
    return Counts(records=records, instructions=counts["Ir"] / records,
                  first_level_misses=sum(counts[e] for e in _FIRST_LEVEL) / records,
                  last_level_misses=sum(counts[e] for e in _LAST_LEVEL) / records,
                  mispredicted_branches=sum(counts[e] for e in _MISPREDICTED) / records)


def _tools():
    """(valgrind, callgrind_control) paths; BenchError naming the package when missing."""
    found = [shutil.which(tool) for tool in ("valgrind", "callgrind_control")]
    if None in found:
        raise BenchError("the counted bench needs valgrind (Debian: apt-get install valgrind)")
    return found


def _control(tool, pid, flag):
    done = subprocess.run([tool, flag, str(pid)], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {flag} failed: "
                         f"{(done.stderr or done.stdout).strip() or done.returncode}")


@contextmanager
def _counted(control, pid):
    """Callgrind's counters zeroed on entry and dumped on exit."""
    _control(control, pid, "--zero")
    yield
    _control(control, pid, "--dump")


async def _both_arms(hosts, load, control):
    """The records counted on each host (each gateway's first batch is before the count)."""
    uploads = await asyncio.gather(*(
        bench_ingest.upload_load(host, load, _counted(control, host.pid), _ANSWER_TIMEOUT_S)
        for host in hosts))
    return [counted for _, counted in uploads]


def run(plan, workdir, say):
    """The counts of ``plan``'s load uploaded with the detectors off and on: {"plan",
    "without", "with"} (Counts). Both hosts run at once, one per core: counts do not depend on
    what else runs."""
    valgrind, control = _tools()
    workdir = Path(workdir)
    say(f"signing {plan.gateways * plan.records_per_gateway} fuel sales of {plan.gateways} "
        "gateways ...")
    load = bench_ingest.make_load(plan)
    available = sorted(os.sched_getaffinity(0))
    hosts = []
    try:
        for detection in (False, True):
            arm = "with" if detection else "without"
            db = workdir / f"counted-{arm}.db"
            bench_ingest.provision_load(db, load)
            out = workdir / f"callgrind-{arm}.out"
            host = bench_ingest.HostProcess(
                db, available[detection % len(available)],
                workdir / f"counted-{arm}.log", detection=detection,
                wrapper=[valgrind, *_CALLGRIND, f"--callgrind-out-file={out}"],
                start_timeout_s=_START_TIMEOUT_S)
            say(f"starting the ingest host under callgrind, detectors "
                f"{'on' if detection else 'off'} ...")
            host.start()
            hosts.append((host, out))
        say("uploading the load to both hosts (callgrind runs them 50-100 times slower) ...")
        records = asyncio.run(_both_arms([host for host, _ in hosts], load, control))
    finally:
        for host, _ in hosts:
            host.stop(_START_TIMEOUT_S)
    figures = {"plan": plan}
    for (host, out), counted in zip(hosts, records):
        dump = Path(f"{out}.1")  # callgrind_control --dump's file: the upload alone
        if not dump.exists():
            raise BenchError(f"callgrind wrote no dump at {dump}")
        figures["with" if host.detection else "without"] = parse_dump(dump.read_text(), counted)
    figures["detectors"] = bench_ingest.logged_detection(workdir / "counted-with.log")[1]
    return figures


def report(figures):
    plan, without, with_ = figures["plan"], figures["without"], figures["with"]

    def line(label, off, on):
        return (f"  {label:<44} {off:11,.0f} without them, {on:11,.0f} with them: "
                f"{on - off:+9,.0f}, {(on - off) / off:+.1%}")

    return [
        f"detectors' cost in the ingest counted by callgrind: {plan.gateways} gateways x "
        f"{plan.records_per_gateway} fuel sales ({without.records} counted per arm), detectors "
        f"{figures['detectors']}, per record",
        line("instructions", without.instructions, with_.instructions),
        line("cycle estimate (callgrind's models)", without.cycle_estimate,
             with_.cycle_estimate),
        line("mispredicted branches", without.mispredicted_branches,
             with_.mispredicted_branches),
        line("first-level cache misses", without.first_level_misses,
             with_.first_level_misses),
        line("last-level cache misses", without.last_level_misses, with_.last_level_misses),
        "  (the +20 % budget is on CPU time, `--part ingest`; these counts compare code with code "
        "on a noisy machine)",
    ]
