import time

import pytest

from meterseal.hil import cheats
from meterseal.hil.simclock import DEFAULT_EPOCH_S, SimClock


def test_stepped_clock_moves_only_when_told():
    clock = SimClock(speed=0)
    first = clock.now()
    time.sleep(0.02)
    assert clock.now() == first == DEFAULT_EPOCH_S
    clock.sleep(90)
    assert clock.now() == first + 90
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_running_clock_is_accelerated():
    clock = SimClock(speed=1000)
    start = clock.now()
    time.sleep(0.05)
    assert clock.now() - start >= 40


def test_local_hour_uses_the_utc_offset():
    clock = SimClock(start_s=DEFAULT_EPOCH_S, speed=0, utc_offset_h=8)
    assert clock.local_hour() == 8.0  # 00:00 UTC is 08:00 in China
    clock.advance(17 * 3600)
    assert clock.local_hour() == 1.0


@pytest.mark.parametrize(
    "schedule, hour, draw, expected",
    [
        (cheats.always(), 3, None, True),
        (cheats.between_hours(22, 6), 23, None, True),
        (cheats.between_hours(22, 6), 5.5, None, True),
        (cheats.between_hours(22, 6), 12, None, False),
        (cheats.between_hours(9, 17), 9, None, True),
        (cheats.between_hours(9, 17), 17, None, False),
        (cheats.draws_above(20000), 12, 20001, True),
        (cheats.draws_above(20000), 12, 20000, False),
        (cheats.draws_above(20000), 12, None, False),
        (cheats.remote(), 12, None, False),
    ],
)
def test_schedules(schedule, hour, draw, expected):
    assert schedule.applies(hour, draw) is expected


def test_board_fits_toggles_and_reports_active_cheats():
    clock = SimClock(speed=0)
    board = cheats.CheatBoard(["pulse_scaling", "k_factor"])
    board.fit("pulse_scaling", 3.0, cheats.remote())
    assert board.active("pulse_scaling", clock) is None
    board.toggle("pulse_scaling", True)
    assert board.active("pulse_scaling", clock).size == 3.0
    assert board.active("k_factor", clock) is None
    board.remove("pulse_scaling")
    assert board.active("pulse_scaling", clock) is None
    with pytest.raises(ValueError, match="unknown cheat 'offset'"):
        board.fit("offset", 1)
    with pytest.raises(ValueError, match="not fitted with a remote schedule"):
        board.toggle("k_factor", True)


@pytest.mark.parametrize(
    "text, hour, draw, expected",
    [
        ("always", 12, None, True),
        ("remote", 12, None, False),
        ("hours:22-6", 23, None, True),
        ("hours:22-6", 12, None, False),
        ("draws_above:20000", 12, 30000, True),
        ("draws_above:20000", 12, 100, False),
    ],
)
def test_schedules_from_text(text, hour, draw, expected):
    assert cheats.parse_schedule(text).applies(hour, draw) is expected


@pytest.mark.parametrize("text", ["sometimes", "hours:22", "hours:5-5", "draws_above:many", "always:1"])
def test_bad_schedule_text_is_a_clear_error(text):
    with pytest.raises(ValueError, match="schedule"):
        cheats.parse_schedule(text)
