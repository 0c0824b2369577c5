"""The gateway's own pulse count against the dispenser's volume, on the real MicroPython port:
a pulse-scaling board between encoder and CPU is caught on the first sale above the minimum
measured quantity; an honest pump never is; a doctored encoder is not either, because the
channel sees the same inflated pulses as the CPU (that one is for the statistical detectors and
wetstock reconciliation, DESIGN.md §11)."""

from test_gateway_dart_driver import assert_sale_is_the_truth, gateway, pump_on_pty  # noqa: F401

from meterseal.firmware.drivers import pulses
from meterseal.hil.emulators.dispenser import PULSE_SCALING_BOARD, PULSE_SCALING_ENCODER


def run_sales(pump, port, gateway, draws, **config):  # noqa: F811
    gw = gateway(dict({"mode": "master", "port": port.path,
                       "pulsers": {"80": pump.pulser_path}}, **config))
    pump.start()
    for number, (nozzle, target_ml) in enumerate(draws, 1):
        assert pump.customer_draw(nozzle, target_ml).wait(30)
        gw.wait_for(lambda: len(gw.sales()) == number, "sale %d" % number)
    truths = pump.truth.entries()
    for observation, truth in zip(gw.sales(), truths):
        assert_sale_is_the_truth(observation, truth)
        body = observation["body"]
        assert body["pulses_counted"] == truth["pulser_pulses"]
        assert body["pulse_volume_ml"] == pulses.pulse_volume_ml(truth["pulser_pulses"], 100000)
    return gw, truths


def test_a_pulse_scaling_board_is_caught_on_the_first_sale_above_the_minimum(pump_on_pty,
                                                                           gateway):  # noqa: F811
    pump, port = pump_on_pty()
    pump.cheats.fit(PULSE_SCALING_BOARD, 1)
    gw, truths = run_sales(pump, port, gateway, ((1, 3000), (2, 12000), (1, 30000)))
    mismatches = gw.events("pulse_mismatch")
    # 3 L is below the 5 L minimum measured quantity: not judged. Every sale above it is.
    assert [m["fields"]["sale_seq"] for m in mismatches] == [2, 3]
    for event, truth in zip(mismatches, truths[1:]):
        fields = event["fields"]
        assert event["device"] == {"dispenser_address": 0x50, "nozzle": truth["nozzle"]}
        assert fields["pulses_counted"] == truth["pulser_pulses"]
        assert fields["reported_volume_ml"] == truth["reported_volume_ml"]
        assert fields["difference_ml"] == fields["reported_volume_ml"] - fields["pulse_volume_ml"]
        assert fields["difference_ml"] > truth["reported_volume_ml"] // 200  # about 1 %
        assert fields["k_factor_pulses_per_kl"] == 100000


def test_an_honest_pump_never_shows_a_mismatch(pump_on_pty, gateway):  # noqa: F811
    pump, port = pump_on_pty()
    draws = [(1 + i % 2, ml) for i, ml in enumerate(
        (5000, 41230, 7770, 25000, 15555, 60000, 9990, 33333))]
    gw, truths = run_sales(pump, port, gateway, draws)
    assert len(gw.sales()) == len(truths) == len(draws)
    assert gw.events("pulse_mismatch") == []


def test_a_doctored_encoder_fools_the_pulse_check(pump_on_pty, gateway):  # noqa: F811
    pump, port = pump_on_pty()
    pump.cheats.fit(PULSE_SCALING_ENCODER, 3)
    gw, truths = run_sales(pump, port, gateway, ((1, 20000), (2, 10000)))
    assert all(t["cheats"] for t in truths)  # the cheat was active, and
    assert gw.events("pulse_mismatch") == []  # invisible here: the statistical detectors' job
