"""The emulated price scale over a real pty, driven by a pyserial client as the gateway would:
weighings to a priced sale, every cheat against the ground truth, range limits and the event
counter. The clock is stepped, so every number is repeatable; no test times anything."""

import pytest
import serial

from meterseal.hil import cheats
from meterseal.hil.emulators import scale as scale_module
from meterseal.hil.emulators.scale import PriceScale, amount_minor
from meterseal.hil.serial_link import PtyPort
from meterseal.hil.simclock import SimClock
from meterseal.protocol import mtsics

MAX_MG = 15_000_000
E_MG = 5_000


@pytest.fixture
def clock():
    return SimClock(speed=0)


@pytest.fixture
def rig(clock):
    """A started scale on a pty and a pyserial client on the other end."""
    port = PtyPort()
    scale = PriceScale(port, clock, max_mg=MAX_MG, e_mg=E_MG, seed=11)
    scale.start()
    client = serial.Serial(port.path, 9600, timeout=2)
    yield scale, client
    client.close()
    scale.stop()
    port.close()
    assert scale.errors == []


def ask(client, line):
    client.write(line + b"\r\n")
    return mtsics.parse_reply(read_line(client))


def read_line(client):
    data = client.read_until(b"\r\n")
    assert data.endswith(b"\r\n"), f"no reply line, got {data!r}"
    return data[:-2]


def settle(scale):
    assert scale.wait_stable()


def weight(mg):
    return mtsics.Weight(mg, "kg", 3)


def test_weighing_with_tare_to_a_priced_sale(rig):
    scale, client = rig
    assert ask(client, b"MSU 1280 123") == mtsics.PriceReply(1280, 123)
    scale.place(40_000)  # a 40 g tray
    settle(scale)
    assert ask(client, b"T") == mtsics.WeightReply("T", "S", weight(40_000))
    scale.place(1_234_000)
    assert ask(client, b"S") == mtsics.StatusReply("S", "I")  # still moving
    assert ask(client, b"SI").status == "D"
    settle(scale)
    reply = ask(client, b"S")
    assert reply.status == "S" and abs(reply.weight.mg - 1_234_000) <= E_MG
    assert ask(client, b"MST") == mtsics.StatusReply("MST", "I")  # nothing sold yet
    entry = scale.sell(container_mg=40_000)
    sale = ask(client, b"MST")
    assert sale == scale.last_sale
    assert (sale.txn, sale.stable, sale.tare_mode, sale.plu) == (1, True, "weighed", 123)
    assert (sale.gross.mg, sale.tare.mg, sale.net.mg) == (
        entry["gross_mg"], entry["tare_mg"], entry["net_mg"])
    assert sale.net.mg == reply.weight.mg
    assert sale.amount_minor == amount_minor(sale.net.mg, 1280) == entry["amount_minor"]
    assert sale.start == weight(0) and sale.centre_of_zero
    assert 500 < sale.load_to_stable_ms < 3000


def test_honest_weighings_agree_with_the_truth_within_rounding(rig):
    scale, client = rig
    for mass_mg, tare_mg, price in [(1_234_000, 0, 1280), (87_000, 12_000, 5990),
                                    (5_432_100, 250_000, 1999), (14_000_000, 0, 100)]:
        entry = scale.customer_weighing(mass_mg, tare_mg, unit_price_minor_per_kg=price, plu=7)
        assert entry["cheats"] == {} and entry["stable"]
        assert abs(entry["gross_mg"] - entry["true_load_mg"]) <= E_MG
        assert abs(entry["tare_mg"] - tare_mg) <= E_MG
        assert abs(entry["net_mg"] - mass_mg) <= E_MG
        assert entry["amount_minor"] == amount_minor(entry["net_mg"], price)
        # The amount is off by at most the price of e, plus the price interval.
        assert abs(entry["amount_minor"] - entry["true_amount_minor"]) <= price * E_MG / 1e6 + 1
        honest = ("gross_mg", "tare_mg", "net_mg", "amount_minor")
        assert [entry[k] for k in honest] == [entry["honest_" + k] for k in honest]
        assert ask(client, b"MST") == scale.last_sale
    assert [e["txn"] for e in scale.truth.entries()] == [1, 2, 3, 4]


# Each cheat alone: (kind, size, schedule, container_mg, check(entry)).
def _offset_g(entry):
    assert entry["gross_mg"] - entry["honest_gross_mg"] == 20_000
    assert entry["net_mg"] - entry["honest_net_mg"] == 20_000
    assert entry["amount_minor"] > entry["honest_amount_minor"]


def _offset_percent(entry):
    assert abs(entry["gross_mg"] - entry["honest_gross_mg"] * 1.02) <= E_MG


def _gain(percent):
    def check(entry):
        assert abs(entry["gross_mg"] - entry["honest_gross_mg"] * (1 + percent / 100)) <= E_MG
        assert entry["net_mg"] > entry["honest_net_mg"]
    return check


def _retained_base(entry):
    assert entry["gross_mg"] - entry["honest_gross_mg"] == 10_000
    assert entry["start_reading_mg"] == 10_000 and not entry["centre_of_zero"]


def _tare_abuse(entry):
    assert entry["honest_tare_mg"] - entry["tare_mg"] == 5_000
    assert entry["net_mg"] - entry["honest_net_mg"] == 5_000
    assert entry["gross_mg"] == entry["honest_gross_mg"]


def _unstable(entry):
    assert not entry["stable"] and entry["load_to_stable_ms"] == 500
    # Sold at the overshoot: more than the load really weighs.
    assert entry["net_mg"] > entry["true_net_mg"] + E_MG


CHEATS = [
    (scale_module.REMOTE_OFFSET_G, 20, cheats.remote, 0, _offset_g),
    (scale_module.REMOTE_OFFSET_PERCENT, 2, cheats.always, 0, _offset_percent),
    (scale_module.STEP_GAIN, 1.5, cheats.remote, 0, _gain(1.5)),
    (scale_module.RETAINED_BASE, 10, cheats.always, 0, _retained_base),
    (scale_module.TARE_ABUSE, 5, cheats.always, 30_000, _tare_abuse),
    (scale_module.UNSTABLE_SALE, 500, cheats.always, 0, _unstable),
    (scale_module.SILENT_CALIBRATION, 0.5, cheats.always, 0, _gain(0.5)),
]


@pytest.mark.parametrize("kind, size, schedule, container_mg, check", CHEATS,
                         ids=[c[0] for c in CHEATS])
def test_each_cheat_diverges_from_the_truth_as_configured(rig, kind, size, schedule,
                                                          container_mg, check):
    scale, client = rig
    scale.cheats.fit(kind, size, schedule())
    if schedule is cheats.remote:
        off = scale.customer_weighing(2_000_000, container_mg, unit_price_minor_per_kg=1280)
        assert off["cheats"] == {} and off["net_mg"] == off["honest_net_mg"]
        scale.cheats.toggle(kind, True)
    entry = scale.customer_weighing(2_000_000, container_mg, unit_price_minor_per_kg=1280)
    assert entry["cheats"] == {kind: size}
    check(entry)
    sale = ask(client, b"MST")
    assert (sale.gross.mg, sale.net.mg, sale.stable) == (
        entry["gross_mg"], entry["net_mg"], entry["stable"])
    # No cheat moves the event counter.
    assert ask(client, b"MSC") == mtsics.CounterReply(0)


def test_every_cheat_at_once(rig):
    scale, client = rig
    sizes = {scale_module.REMOTE_OFFSET_G: 20, scale_module.REMOTE_OFFSET_PERCENT: 2,
             scale_module.STEP_GAIN: 1.5, scale_module.RETAINED_BASE: 10,
             scale_module.TARE_ABUSE: 5, scale_module.UNSTABLE_SALE: 500,
             scale_module.SILENT_CALIBRATION: 0.5}
    for kind, size in sizes.items():
        scale.cheats.fit(kind, size)
    # A 30 g container reads about 40 g with the base: below the remote offsets' 10 e threshold.
    entry = scale.customer_weighing(1_500_000, 30_000, unit_price_minor_per_kg=1280)
    assert entry["cheats"] == sizes
    gain = 1.005 * 1.015
    expected_tare = round((entry["honest_tare_mg"] * gain + 10_000) / E_MG) * E_MG - 5_000
    assert abs(entry["tare_mg"] - expected_tare) <= E_MG
    expected_gross = (entry["honest_gross_mg"] * gain + 10_000) * 1.02 + 20_000
    assert abs(entry["gross_mg"] - expected_gross) <= 2 * E_MG
    assert not entry["stable"]
    assert entry["net_mg"] - entry["true_net_mg"] > 80_000  # the customer pays for >80 g extra
    assert ask(client, b"MSC") == mtsics.CounterReply(0)


def test_time_of_day_and_size_schedules(rig, clock):
    scale, _ = rig
    scale.cheats.fit(scale_module.REMOTE_OFFSET_G, 20, cheats.draws_above(1_000_000))
    small = scale.customer_weighing(500_000, unit_price_minor_per_kg=1000)
    large = scale.customer_weighing(2_000_000, unit_price_minor_per_kg=1000)
    assert small["cheats"] == {} and large["cheats"] == {scale_module.REMOTE_OFFSET_G: 20}
    scale.cheats.fit(scale_module.REMOTE_OFFSET_G, 20, cheats.between_hours(22, 6))
    day = scale.customer_weighing(2_000_000, unit_price_minor_per_kg=1000)  # 08:00 local
    clock.advance(15 * 3600)  # 23:00
    night = scale.customer_weighing(2_000_000, unit_price_minor_per_kg=1000)
    assert day["cheats"] == {} and night["cheats"] == {scale_module.REMOTE_OFFSET_G: 20}


def test_over_range_and_under_range(rig):
    scale, client = rig
    scale.place(MAX_MG + 8 * E_MG)
    settle(scale)
    assert ask(client, b"S").weight.mg == MAX_MG + 8 * E_MG  # above Max, still shown
    scale.place(2 * E_MG)  # Max + 10 e
    settle(scale)
    for command in (b"S", b"SI", b"T"):
        assert ask(client, command).status == "+"
    with pytest.raises(RuntimeError, match="'\\+'"):
        scale.sell()
    scale.remove()
    settle(scale)
    assert ask(client, b"S") == mtsics.WeightReply("S", "S", weight(0))


def test_zero_setting_limits(rig):
    scale, client = rig
    scale.place(200_000)  # 1.3 % of Max: within +-2 %
    settle(scale)
    assert ask(client, b"Z") == mtsics.StatusReply("Z", "A")
    assert ask(client, b"S") == mtsics.WeightReply("S", "S", weight(0))
    scale.place(200_000)  # 2.7 % from the initial zero: refused
    settle(scale)
    assert ask(client, b"Z") == mtsics.StatusReply("Z", "+")
    assert ask(client, b"ZI") == mtsics.StatusReply("ZI", "+")
    scale.remove()
    settle(scale)
    # Zero moved 200 g up: the empty pan reads -200 g, below -9 e.
    assert ask(client, b"S") == mtsics.StatusReply("S", "-")
    assert ask(client, b"ZI") == mtsics.StatusReply("ZI", "S")
    scale.place(100_000)
    assert ask(client, b"Z") == mtsics.StatusReply("Z", "I")  # moving: no zero-setting


@pytest.mark.parametrize("load_mg, zeroed", [(1_000_000, True), (2_000_000, False)])
def test_initial_zero_setting_range(clock, load_mg, zeroed):
    # 1 kg is 6.7 % of Max (within +-10 %): zeroed at power on. 2 kg is 13 %: not zeroed.
    port = PtyPort()
    scale = PriceScale(port, clock, max_mg=MAX_MG, e_mg=E_MG, seed=2)
    try:
        scale.place(load_mg)
        clock.advance(5)
        scale.start()
        client = serial.Serial(port.path, 9600, timeout=2)
        assert ask(client, b"S") == (mtsics.WeightReply("S", "S", weight(0)) if zeroed
                                     else mtsics.StatusReply("S", "I"))
        scale.remove()
        settle(scale)
        # Cleared pan: the zeroed scale reads minus the load (underload); the other zeroes now.
        assert ask(client, b"S") == (mtsics.StatusReply("S", "-") if zeroed
                                     else mtsics.WeightReply("S", "S", weight(0)))
        client.close()
    finally:
        scale.stop()
        port.close()


def test_event_counter_counts_calibrations_and_parameter_changes(rig):
    scale, client = rig
    assert ask(client, b"MSI") == mtsics.MetrologyReply(weight(MAX_MG), weight(E_MG),
                                                       weight(E_MG), "III")
    assert ask(client, b"MSC") == mtsics.CounterReply(0)
    scale.calibrate(1_000_400)
    assert ask(client, b"MSC") == mtsics.CounterReply(1)
    scale.set_parameter("price_interval_minor", 10)
    assert ask(client, b"MSC") == mtsics.CounterReply(2)
    events = [e for e in scale.truth.entries() if e["kind"] != "weighing"]
    assert [(e["kind"], e["event_count"]) for e in events] == [
        ("calibration", 1), ("parameter_change", 2)]
    entry = scale.customer_weighing(1_234_000, unit_price_minor_per_kg=1280)
    assert entry["amount_minor"] % 10 == 0  # the new price interval
    with pytest.raises(ValueError, match="unknown parameter"):
        scale.set_parameter("k_factor", 1)
    # Prices are commercial, not metrological: no event.
    ask(client, b"MSU 999 1")
    assert ask(client, b"MSC") == mtsics.CounterReply(2)


def test_tare_commands_identity_and_line_errors(rig, clock):
    scale, client = rig
    assert ask(client, b"TA 0.125 kg") == mtsics.WeightReply("TA", "A", weight(125_000))
    assert ask(client, b"TA 0.123 kg") == mtsics.StatusReply("TA", "L")  # not a multiple of d
    assert ask(client, b"TA 125 g") == mtsics.StatusReply("TA", "L")  # not the scale's unit
    assert ask(client, b"S") == mtsics.WeightReply("S", "S", weight(-125_000))
    assert ask(client, b"TAC") == mtsics.StatusReply("TAC", "A")
    assert ask(client, b"TA") == mtsics.WeightReply("TA", "A", weight(0))
    assert ask(client, b"I4") == mtsics.TextReply("I4", "MS00000001")
    assert ask(client, b"I2") == mtsics.TextReply("I2", "MS-PS15 15.000 kg")
    assert ask(client, b"@") == mtsics.TextReply("I4", "MS00000001")
    assert ask(client, b"HELLO") == mtsics.ErrorReply("ES")
    client.write(b"S" * 500 + b"\r\n")
    assert mtsics.parse_reply(read_line(client)) == mtsics.ErrorReply("ET")
    client.write(b"S\n")
    assert mtsics.parse_reply(read_line(client)) == mtsics.ErrorReply("ET")
    assert ask(client, b"SI").status == "S"  # the line recovers
    assert scale.link_stats["bad_lines_in"] == 2 and scale.link_stats["unknown_commands"] == 1


def test_sir_repeats_once_per_sample_until_the_next_command(rig, clock):
    scale, client = rig
    assert ask(client, b"SIR").status == "S"
    for _ in range(3):
        clock.advance(0.1)
        assert mtsics.parse_reply(read_line(client)).status == "S"
    client.write(b"I4\r\n")
    assert mtsics.parse_reply(read_line(client)) == mtsics.TextReply("I4", "MS00000001")
    clock.advance(1)
    client.timeout = 0.2
    assert client.read(1) == b""


def _run_scenario(seed):
    clock = SimClock(speed=0)
    port = PtyPort()
    scale = PriceScale(port, clock, seed=seed)
    scale.cheats.fit(scale_module.UNSTABLE_SALE, 400, cheats.draws_above(3_000_000))
    try:
        scale.start()
        for mass_mg in (250_000, 3_300_000, 1_010_000):
            scale.customer_weighing(mass_mg, 15_000, unit_price_minor_per_kg=2390, plu=5)
        return scale.truth.entries(), scale.last_sale.encode()
    finally:
        scale.stop()
        port.close()


def test_same_seed_same_weighings():
    first = _run_scenario(seed=5)
    assert _run_scenario(seed=5) == first
    assert first[0][1]["cheats"] == {scale_module.UNSTABLE_SALE: 400}


def test_load_cell_noise_depends_on_the_seed():
    from meterseal.hil.emulators.load_cell import LoadCell

    signals = [[LoadCell(seed=seed).signal_mg(k) for k in range(10)] for seed in (1, 1, 2)]
    assert signals[0] == signals[1] != signals[2]
