"""The whole gateway (`gateway run` on the MicroPython unix port, devices emulated over real
ptys, a loopback host on 127.0.0.1) under faults: a host unreachable until the journal is full,
a noisy and broken DART line, and a simulated day of sales cross-checked against the pulser."""

import hashlib
import os
import random
import time

import pytest

from meterseal.firmware.journal import FRAME_OVERHEAD
from meterseal.hil.emulators.dispenser import Dispenser
from meterseal.hil.emulators.hydraulics import Nozzle
from meterseal.hil.emulators.scale import PriceScale
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock
from meterseal.host import chain
from meterseal.protocol import dart

from gateway_site import (HostThread, chain_findings, events, free_port, gateway_key,
                          kill_gateway, kind, label, start_gateway, wait_for, write_config)

_SEGMENT_BYTES = 8192  # two small segments: full after a few dozen weighings
_SEGMENTS = 2
_CAPACITY = _SEGMENT_BYTES * _SEGMENTS
_RESERVE_BYTES = 1024  # journal.Journal's default, held back for journal_full / records_dropped
_WEIGHING_FRAME_BYTES = 400  # a signed weighing (about 330 bytes) and its journal frame
_WEIGHING_INDICATED = ("gross_mg", "tare_mg", "net_mg", "amount_minor",
                       "unit_price_minor_per_kg", "stable", "tare_mode", "plu")


def _wait(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for " + what)
        time.sleep(0.05)


def _real_utc_ms():
    return int(time.time() * 1000)


class _Scales:
    """Price scales on ptys, each weighing one customer per round; a round ends only once the
    gateway has read every scale's sale (MST shows only the last sale, so an unread one would
    be a sale the scale driver reports as missed, not one the journal dropped)."""

    def __init__(self, count, clock):
        self.ports = [PtyPort() for _ in range(count)]
        self.scales = [PriceScale(port, clock, seed=i, serial_number="MS%08d" % (i + 1))
                       for i, port in enumerate(self.ports)]
        for scale in self.scales:
            scale.start()
        self.weighings = 0

    def devices(self):
        return [{"name": "deli%d" % i, "protocol": "mtsics", "port": port.path}
                for i, port in enumerate(self.ports)]

    def wait_connected(self, timeout_s=60):
        # I2, I4, MSI, MSC, then the first MST: the driver is polling sales.
        _wait(lambda: all(s.link_stats["lines_in"] >= 5 for s in self.scales), timeout_s,
              "the gateway to connect to every scale")

    def round(self, n):
        seen = []
        for i, scale in enumerate(self.scales):
            scale.customer_weighing(200_000 + 37_000 * ((n * 7 + i * 3) % 40), tare_mg=10_000,
                                    unit_price_minor_per_kg=1000 + 10 * i, plu=i + 1)
            self.weighings += 1
            seen.append(scale.link_stats["lines_in"])
        # Two lines after the sale: the first was answered with it (MSC, every 60 s, may come
        # between), and the driver sends the next only once it has taken the reply.
        _wait(lambda: all(s.link_stats["lines_in"] >= n0 + 2
                          for s, n0 in zip(self.scales, seen)), 30,
              "the gateway to read every scale's sale")

    def close(self):
        for scale in self.scales:
            scale.stop()
        for port in self.ports:
            port.close()


def _journal_bytes(root):
    journal = root / "journal"
    return sum(os.path.getsize(journal / name) for name in os.listdir(journal)
               if name.endswith(".jnl"))


def test_host_unreachable_until_the_journal_is_full_loses_only_what_it_signs_as_dropped(
        tmp_path, device_image):
    """The host is down from the start (its port is chosen, nobody listens on it) while four
    price scales keep selling, until the journal (2 x 8 KB) is full and sales are being
    dropped; only then does the host come up. The heartbeat is set to a day, so every
    observation in the full spell is a weighing: the signed records_dropped count must equal
    the weighings the scales made minus those signed, and the seqs missing at the host must be
    exactly the dropped ones. Everything journaled arrives, in order, once, chained."""
    clock = SimClock(speed=20)
    scales = _Scales(4, clock)
    root = tmp_path / "gateway"
    root.mkdir()
    host_thread = HostThread(gateway_key(root), port=free_port(), start=False,
                             clock_ms=_real_utc_ms)  # no time_set: nothing else is signed
    host = host_thread.host
    config = write_config(tmp_path / "gateway.json", {
        "gateway_id": "MS-GW-FULL",
        "host": {"address": "127.0.0.1", "port": host.port, "tls": False},
        "devices": scales.devices(),
        "intervals": {"heartbeat_s": 86400},
        "paths": {"storage_root": str(root)},
        "journal": {"segment_bytes": _SEGMENT_BYTES, "segments": _SEGMENTS,
                    "commit_records": 4, "commit_ms": 200},
        "watchdog": {"timeout_ms": 20000, "checkin_ms": 10000},
    })
    gateway = start_gateway(config, device_image)
    try:
        scales.wait_connected()
        rounds = 0
        # Fill the journal until it has room for at most 3 weighings more (what is on storage
        # lags by a group commit at most), then 3 rounds more: 12 weighings, most dropped.
        while _journal_bytes(root) < _CAPACITY - _RESERVE_BYTES - 3 * _WEIGHING_FRAME_BYTES:
            assert rounds < 40, "the journal does not fill: %d bytes" % _journal_bytes(root)
            scales.round(rounds)
            rounds += 1
            time.sleep(0.3)
        for _ in range(3):
            scales.round(rounds)
            rounds += 1

        host_up_ms = _real_utc_ms()
        host_thread.start()
        wait_for(host, gateway, lambda rs: [
            r for r in events(rs, "records_dropped") if "device" not in r])
        # Room is back and the loss is signed; the scales are read and signed as before.
        scales.round(rounds)
        last_txns = {"deli%d" % i: s.truth.entries()[-1]["txn"]
                     for i, s in enumerate(scales.scales)}
        held = wait_for(host, gateway, lambda rs: all(
            any(w["device"]["scale_id"] == name and w["body"]["sale_number"] == txn
                for w in kind(rs, "scale.weighing")) for name, txn in last_txns.items()))
    finally:
        kill_gateway(gateway)
        host_thread.close()
        scales.close()

    seqs = [r["seq"] for _, r in held]
    assert held[0][1]["seq"] == 0 and held[0][1]["body"]["event_type"] == "boot"
    # Delivered once each, in order, and never two records under one seq.
    assert host.forks == []
    assert host.received_seqs == sorted(set(host.received_seqs)) == seqs

    full = events(held, "journal_full")
    assert len(full) == 1, full
    # Full while the host was still down (the gateway's clock is the host's: no time_set).
    assert full[0]["wall_time_ms"] < host_up_ms
    assert full[0]["body"]["journal_capacity_bytes"] == _CAPACITY
    # The normal appends stopped only when the last segment had less than the reserve left
    # after one more frame (and the first segment wasted less than a frame at its end).
    largest_frame = max(len(envelope) for envelope, _ in held) + FRAME_OVERHEAD
    assert full[0]["body"]["journal_used_bytes"] >= _CAPACITY - _RESERVE_BYTES - 2 * largest_frame
    dropped = [r for r in events(held, "records_dropped") if "device" not in r]
    assert len(dropped) == 1, dropped
    count = dropped[0]["body"]["dropped_count"]
    first, last = dropped[0]["body"]["first_dropped_seq"], dropped[0]["body"]["last_dropped_seq"]
    assert count > 0
    # The spell starts with a dropped record, then journal_full from the reserve; the loss is
    # reported before anything else once there is room.
    assert full[0]["seq"] == first + 1
    assert dropped[0]["seq"] == last + 1

    # Exactly the dropped seqs are missing at the host: everything journaled arrived.
    missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
    assert missing == [s for s in range(first, last + 1) if s != full[0]["seq"]]
    assert len(missing) == count
    findings = chain_findings(held)
    assert [f.kind for f in findings] == [chain.GAP] * len(findings)
    # The prev chain runs unbroken through the journaled records, across the gaps.
    for (before, _), (_, record) in zip(held, held[1:]):
        assert record["prev"] == hashlib.sha256(before).digest(), record["seq"]

    # Every weighing is either signed, exactly as indicated, or among the dropped.
    signed = kind(held, "scale.weighing")
    assert [r for r in events(held, "records_dropped") if "device" in r] == []
    for i, scale in enumerate(scales.scales):
        truth = {entry["txn"]: entry for entry in scale.truth.entries()}
        for weighing in (w for w in signed if w["device"]["scale_id"] == "deli%d" % i):
            entry = truth[weighing["body"]["sale_number"]]
            assert {k: weighing["body"][k] for k in _WEIGHING_INDICATED} == \
                {k: entry[k] for k in _WEIGHING_INDICATED}
    assert scales.weighings == sum(len(s.truth) for s in scales.scales)
    assert count == scales.weighings - len(signed)
    assert [label(r) for _, r in held if r["kind"] not in ("scale.weighing",)] == \
        ["boot", "journal_full", "records_dropped"]


class _Forecourt:
    """One DART fuelling point with two nozzles and its pulser channel wired to the gateway's
    pulse input (as in the end-to-end test), the gateway as its master, a loopback host."""

    def __init__(self, tmp_path, image, clock, seed):
        self.clock = clock
        self.port = PtyPort()
        self.pump = Dispenser(self.port, clock, address=0x50, seed=seed, nozzles=(
            Nozzle(grade=1, max_flow_lpm=40, unit_price_minor_per_kl=789000),
            Nozzle(grade=2, max_flow_lpm=60, unit_price_minor_per_kl=832000),
        )).start()
        root = tmp_path / "gateway"
        root.mkdir()
        self.host_thread = HostThread(gateway_key(root))
        self.host = self.host_thread.host
        config = write_config(tmp_path / "gateway.json", {
            "gateway_id": "MS-GW-FORECOURT",
            "host": {"address": "127.0.0.1", "port": self.host.port, "tls": False},
            "devices": [{"name": "forecourt", "protocol": "dart", "port": self.port.path,
                         "mode": "master", "addresses": [0x50],
                         "pulse_input": {"port": self.pump.pulser_path,
                                         "pulses_per_litre": 100}}],
            "intervals": {"heartbeat_s": 10},
            "paths": {"storage_root": str(root)},
            "journal": {"commit_records": 4, "commit_ms": 200},
            "watchdog": {"timeout_ms": 20000, "checkin_ms": 10000},
        })
        self.gateway = start_gateway(config, image)

    def sale(self, nozzle, target_ml, during=None):
        """One customer; ``during()`` runs once the fuel flows. Returns when the gateway has
        read the sale: it resets the pump only after recording it."""
        draw = self.pump.customer_draw(nozzle, target_ml, patience_s=6 * 3600)
        if during is not None:
            _wait(lambda: self.pump.status == dart.STATUS_FILLING or draw.done, 30,
                  "the fuel to flow")
            during()
        assert draw.wait(60) and draw.outcome == "delivered", draw.outcome
        _wait(lambda: self.pump.status == dart.STATUS_RESET, 30,
              "the gateway to read the sale and reset the pump")
        return draw.entry

    def wait_for(self, predicate):
        return wait_for(self.host, self.gateway, predicate)

    def close(self):
        kill_gateway(self.gateway)
        self.host_thread.close()
        self.pump.stop()
        self.port.close()


@pytest.fixture
def forecourt(tmp_path, device_image):
    sites = []

    def make(clock, seed=3):
        sites.append(_Forecourt(tmp_path, device_image, clock, seed))
        return sites[-1]

    yield make
    for site in sites:
        site.close()


def _assert_signed_as_indicated(sales, truths):
    """Every fuel.sale carries exactly what the pump indicated, and the gateway's own pulse
    count equals the encoder's."""
    assert len(sales) == len(truths)
    for sale, truth in zip(sales, truths):
        body = sale["body"]
        assert sale["device"] == {"dispenser_address": 0x50, "nozzle": truth["nozzle"]}
        assert body["grade"] == truth["grade"]
        assert body["end_status"] == truth["end_status"] == "completed"
        assert body["volume_ml"] == truth["indicated_volume_ml"]
        assert body["amount_minor"] == truth["indicated_amount_minor"]
        assert body["unit_price_minor_per_kl"] == truth["unit_price_minor_per_kl"]
        assert body["totalizer_start_ml"] == truth["totalizer_start_ml"]
        assert body["totalizer_end_ml"] == truth["totalizer_end_ml"]
        assert body["amount_totalizer_start_minor"] == truth["amount_totalizer_start_minor"]
        assert body["amount_totalizer_end_minor"] == truth["amount_totalizer_end_minor"]
        assert "pulses_counted" in body and body["pulses_counted"] == truth["pulser_pulses"]


def test_dart_link_faults_sign_nothing_wrong_and_readings_resume(forecourt):
    """Line noise (a flipped bit, a lost byte) during a sale, the pump falling silent while
    idle, and the cable coming off halfway through a frame in the middle of a sale: every sale
    is still signed exactly as the pump indicated, the gateway signs link_errors for the bad
    frames and link_lost / link_restored for each outage, and a sale after the faults is read
    as before."""
    site = forecourt(SimClock(speed=20))
    pump = site.pump
    site.wait_for(lambda rs: events(rs, "boot"))
    truths = []

    def noise():
        # One bad frame at a time, each followed by a good one (the pump sends the block again
        # on the next poll): errors, but never the 5 failed polls in a row of a lost link.
        stats = pump.link_stats
        for fault in ("bad_crc", "drop_byte", "bad_crc", "drop_byte"):
            faulty = stats["faults_injected"]
            pump.inject_fault(fault)
            _wait(lambda: stats["faults_injected"] > faulty, 30, "the bad DATA frame")
            clean = stats["data_frames_out"] - stats["faults_injected"]
            _wait(lambda: stats["data_frames_out"] - stats["faults_injected"] > clean, 30,
                  "a good DATA frame after it")

    truths.append(site.sale(1, 40_000, during=noise))
    held = site.wait_for(lambda rs: kind(rs, "fuel.sale") and events(rs, "link_errors"))
    first_errors = events(held, "link_errors")[0]["body"]
    assert first_errors["crc_errors"] + first_errors["framing_errors"] >= 1, first_errors
    assert not events(held, "link_lost")

    # Silent while idle: the polls go unanswered until the link is declared lost.
    pump.inject_fault("silence", 15)
    held = site.wait_for(lambda rs: events(rs, "link_restored"))
    assert len(events(held, "link_lost")) == 1

    def cable_off():
        before = pump.link_stats["faults_injected"]
        pump.inject_fault("disconnect", 15)
        _wait(lambda: pump.link_stats["faults_injected"] > before, 30, "the cut frame")

    truths.append(site.sale(2, 25_000, during=cable_off))
    truths.append(site.sale(1, 9_000))
    held = site.wait_for(lambda rs: len(kind(rs, "fuel.sale")) == 3
                         and len(events(rs, "link_restored")) == 2)

    _assert_signed_as_indicated(kind(held, "fuel.sale"), truths)
    assert truths == pump.truth.entries()
    lost, restored = events(held, "link_lost"), events(held, "link_restored")
    assert len(lost) == len(restored) == 2
    for down, up in zip(lost, restored):
        assert down["seq"] < up["seq"] and up["body"]["outage_ms"] > 0
        assert down["device"] == up["device"] == {"dispenser_address": 0x50}
    assert not events(held, "pulse_mismatch")
    assert chain_findings(held) == []
    # 4 bad frames, and at least 5 unanswered polls per outage, are on the dispenser link's
    # error count as the next heartbeat reports it.
    held = site.wait_for(lambda rs: any(
        r["seq"] > restored[-1]["seq"] for r in kind(rs, "status")))
    (link,) = [r for r in kind(held, "status") if r["seq"] > restored[-1]["seq"]][0]["body"]["links"]
    assert link["link"] == "dispenser" and link["up"] is True
    assert link["error_count"] >= 4 + 2 * 5, link
    assert pump.errors == []


def test_honest_pump_gives_no_pulse_mismatch_over_a_simulated_day(forecourt):
    """A trading day on one fuelling point: 160 customers arriving at random between 06:00 and
    22:00 local, buying 1 L to 70 L on either nozzle. The pump's clock runs 300 times real time
    while fuel flows and jumps to the next arrival when the pump is idle, as `meterseal
    scenario` replays a day (at one speed a day would take minutes even at 300x). The gateway
    counts the pulser itself on every sale and, the pump being honest, never signs a
    pulse_mismatch."""
    opening_s = 1767225600 - 2 * 3600  # 2025-12-31 22:00 UTC, 06:00 China Standard Time
    clock = SimClock(start_s=opening_s, speed=300)
    site = forecourt(clock, seed=11)
    pump = site.pump
    rng = random.Random(20260101)
    arrivals = sorted(rng.uniform(0, 16 * 3600) for _ in range(160))
    site.wait_for(lambda rs: events(rs, "boot"))
    truths = []
    for arrival in arrivals:
        wait_s = opening_s + arrival - clock.now()
        if wait_s > 0:
            clock.advance(wait_s)
        truths.append(site.sale(rng.choice((1, 1, 2)), rng.randrange(1_000, 70_000)))
    # The sales really spread over the day.
    assert truths[-1]["end_s"] - truths[0]["start_s"] > 14 * 3600
    held = site.wait_for(lambda rs: len(kind(rs, "fuel.sale")) == len(truths))

    assert truths == pump.truth.entries()
    _assert_signed_as_indicated(kind(held, "fuel.sale"), truths)
    # Every sale carries its pulses, and what they imply agrees with the display within a
    # display step and a pulse (the MPE share of the rule is not even needed).
    sales = [sale["body"] for sale in kind(held, "fuel.sale")]
    for body in sales:
        assert body["pulse_volume_ml"] == body["pulses_counted"] * 10  # 100 pulses per litre
        assert abs(body["pulse_volume_ml"] - body["volume_ml"]) <= 20
    # Most sales are above the 5 L the rule judges from, and not one of them is flagged.
    assert len([body for body in sales if body["volume_ml"] >= 5000]) >= 140
    assert not events(held, "pulse_mismatch")
    assert chain_findings(held) == []
    assert pump.errors == []
