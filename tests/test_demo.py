"""`meterseal demo`, the README's main job: a simulated day at the station and the market with
eleven real gateways on MicroPython, uploading to the host on loopback.

Beyond the demo's own checks (it compares every signed sale and weighing with the emulators'
ground truth), this reads the database it leaves and checks what the demo does not print: the
registry it provisioned, and that the gateways signed on the site's simulated clock (sales fall
in the simulated day's opening hours, and their signed durations give physical flow rates).
"""

import contextlib
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from meterseal.host import cli
from meterseal.host.storage import open_store
from meterseal.protocol import cose, records

_CHINA = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def one_day(tmp_path_factory):
    directory = tmp_path_factory.mktemp("demo") / "meterseal-demo"
    return directory, demo_output(directory)


def demo_output(directory):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = cli.main(["demo", "--days", "1", "--dir", str(directory)])
    return status, output.getvalue()


def test_the_demo_passes_every_check_and_says_where_things_are(one_day):
    directory, (status, output) = one_day
    assert status == 0, output
    assert "FAILED" not in output and output.rstrip().endswith("every check passed.")
    assert output.count("[ok]") == 7
    # The pump's board is caught live, by the gateway's own pulse count, and nothing honest is.
    assert "0 on honest ones" in output
    assert "dispenser.pulse_crosscheck.mismatch MS-STATION-1-D3 82/" in output
    assert "11 gateways booted, authenticated and uploading" in output
    assert "pump 0x52 (MS-STATION-1-D3)" in output and "CHEATING on" in output
    assert f"meterseal serve --db {directory}" in output
    assert (directory / "meterseal.db").is_file()


def _signed(store, gateway_id, kind):
    page = store.records(gateway_id, kind=kind, limit=1000)
    assert page.next_after is None
    return [records.parse(cose.parse_sign1(row.envelope).payload) for row in page.items]


def test_the_registry_holds_every_gateway_with_its_devices_and_key(one_day):
    directory, _ = one_day
    with open_store(directory) as store:
        gateways = store.registry.gateways()
        assert len(gateways) == 11
        types = sorted(device.device_type for gateway in gateways
                       for device in store.registry.devices(gateway.gateway_id))
        assert types == ["dispenser"] * 4 + ["scale"] * 6 + ["tank_gauge"]
        for gateway in gateways:
            keys = store.registry.keys(gateway.gateway_id)
            # The key the gateway made for itself, announced by its provisioning request.
            request = (directory / "gateways" / gateway.gateway_id / "provisioning-request.json")
            assert [key.public_key.hex() for key in keys] == [
                json.loads(request.read_text())["public_key"]]


def test_records_carry_the_simulated_days_time_and_durations(one_day):
    directory, _ = one_day
    start = datetime(2026, 3, 10, tzinfo=_CHINA)
    with open_store(directory) as store:
        for number, max_flow_lpm in ((1, 40), (2, 40), (3, 40), (4, 60)):
            sales = _signed(store, f"MS-STATION-1-D{number}", "fuel.sale")
            assert len(sales) > 30
            for sale in sales:
                ended = datetime.fromtimestamp(sale["body"]["end_wall_time_ms"] / 1000, _CHINA)
                # Customers arrive 06:00-22:00 on the simulated day, not at today's real time.
                assert start + timedelta(hours=6) <= ended <= start + timedelta(hours=22.5), sale
            # The tap times a fill from the controller's polls, a few per fill at 600x, and on a
            # loaded machine it sees the start late: every real millisecond of lag is 0.6 s
            # simulated, so a signed duration can be short by half. Timed on the real clock the
            # flows would be 600 times the pump's; on the simulated clock they are its own, give
            # or take that lag (docs/host.md).
            flows = sorted(sale["body"]["volume_ml"] / max(sale["body"]["duration_ms"], 1) * 60
                           for sale in sales)
            assert max_flow_lpm * 0.3 <= flows[len(flows) // 2] <= max_flow_lpm * 3, flows


def test_a_directory_that_is_not_a_demo_is_never_wiped(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert cli.main(["demo", "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"meterseal demo: error: {tmp_path} exists and is not a "
                                       "demo directory: give --dir a new path\n")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("argv", [["--days", "0"], ["--days", "8"], ["--speed", "fast"]])
def test_bad_demo_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", *argv])
    assert exit_.value.code == 2
    assert "usage: meterseal demo" in capsys.readouterr().err
