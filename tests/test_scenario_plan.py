import copy
import tomllib
from pathlib import Path

import pytest

from meterseal.hil import scenario

DAY = Path(scenario.__file__).parent / "scenarios" / "forecourt_day.toml"


@pytest.fixture
def day():
    return scenario.load(DAY)


def _raw():
    with open(DAY, "rb") as f:
        return tomllib.load(f)


def test_same_seed_same_day_other_seed_other_day(day):
    assert scenario.plan(day) == scenario.plan(scenario.load(DAY))
    other = scenario.check(dict(_raw(), seed=day["seed"] + 1))
    assert scenario.plan(other) != scenario.plan(day)


def test_plan_respects_opening_hours_duration_and_limits(day):
    visits = scenario.plan(day)
    assert [v.at_s for v in visits] == sorted(v.at_s for v in visits)
    end_s = day["start_s"] + day["duration_hours"] * 3600
    for visit in visits:
        assert day["start_s"] <= visit.at_s < end_s
        hour = (visit.at_s / 3600 + 8) % 24
        if visit.kind == "fuel":
            assert 6 <= hour < 22
            if "target_ml" in visit.params:
                assert 2000 <= visit.params["target_ml"] <= 90000
            else:
                assert visit.params["preset_amount_minor"] in (10000, 20000, 30000)
        elif visit.kind == "weighing":
            assert 7 <= hour < 19 and visit.params["mass_mg"] % 1000 == 0
        else:
            assert visit.params == {"tank": 1, "volume_ml": 10000000} and hour == 3.0


def test_arrival_rate_is_roughly_as_configured(day):
    fuel = [v for v in scenario.plan(day) if v.kind == "fuel"]
    expected = 14 * 16  # per hour x opening hours
    assert 0.75 * expected < len(fuel) < 1.25 * expected


def _broken(mutate):
    data = copy.deepcopy(_raw())
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("seed"), "scenario.seed: missing"),
        (lambda d: d.update(start="yesterday"), "not an ISO 8601"),
        (lambda d: d.update(start="2026-03-02T00:00:00"), "give a UTC offset"),
        (lambda d: d.update(duration_hours=-1), "duration_hours: -1.0 is outside"),
        (lambda d: d["forecourt"]["dispensers"][0].update(address=0x20), r"dispensers\[0\].address"),
        (lambda d: d["forecourt"]["dispensers"][1]["nozzles"][0].update(grade=0), r"nozzles\[0\].grade"),
        (lambda d: d["forecourt"].update(opening_hours=[22, 6]), "opening_hours"),
        (lambda d: d["forecourt"]["draw_ml"].update(median=1), "median 1 must lie within"),
        (lambda d: d["tank_gauge"]["deliveries"][0].update(tank=9), "no tank 9"),
        (lambda d: d["market"]["items"][0].update(plu="apples"), r"items\[0\].plu: expected int"),
    ],
)
def test_bad_scenarios_are_rejected_naming_the_key(mutate, message):
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.check(_broken(mutate))


def test_bad_toml_is_a_scenario_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("seed = [")
    with pytest.raises(scenario.ScenarioError, match="not valid TOML"):
        scenario.load(path)
