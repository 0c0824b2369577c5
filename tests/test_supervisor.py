"""The supervisor: it feeds the watchdog only while every task checks in. Unit tests run on a
simulated clock; the end-to-end tests run the real unix HAL under MicroPython, where an unfed
watchdog kills the process and the next boot reports "watchdog"."""

import asyncio
import signal
import time
from pathlib import Path

import pytest

from meterseal.firmware import supervisor
from meterseal.firmware.drivers import dart
from meterseal.hil import micropython

SCRIPTS = Path(__file__).parent / "mpy"


class Watchdog:
    def __init__(self):
        self.fed_at = []


class Board:
    def __init__(self, cause="power_on"):
        self.now = 0
        self.cause = cause
        self.dog = Watchdog()
        self.timeout_ms = None

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def reset_cause(self):
        return self.cause

    def watchdog(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.dog.feed = lambda: self.dog.fed_at.append(self.now)
        return self.dog


def _drive(monkeypatch, board, sup, until_ms, on_tick):
    """Run sup.run() on the simulated clock: each sleep advances the clock, then on_tick(now)
    plays the tasks; the loop ends at until_ms."""

    class Done(Exception):
        pass

    async def sleep_ms(ms):
        board.now += ms
        if board.now > until_ms:
            raise Done
        on_tick(board.now)

    monkeypatch.setattr(supervisor, "_sleep_ms", sleep_ms)
    with pytest.raises(Done):
        asyncio.run(sup.run())


def test_records_the_reset_cause_at_boot():
    assert supervisor.Supervisor(Board("watchdog"), 1000).reset_cause == "watchdog"


def test_feeds_while_every_task_checks_in(monkeypatch):
    board = Board()
    sup = supervisor.Supervisor(board, 1000)
    sup.register("reader", 300)
    sup.register("uplink", 600)

    def tasks(now):
        sup.check_in("reader")
        if now % 500 == 0:
            sup.check_in("uplink")

    _drive(monkeypatch, board, sup, 10000, tasks)
    assert board.timeout_ms == 1000
    assert board.dog.fed_at == list(range(0, 10001, 250))


def test_one_silent_task_stops_the_feeding(monkeypatch):
    board = Board()
    sup = supervisor.Supervisor(board, 1000)
    sup.register("reader", 300)
    sup.register("uplink", 300)

    def tasks(now):
        sup.check_in("reader")
        if now <= 1000:
            sup.check_in("uplink")

    _drive(monkeypatch, board, sup, 5000, tasks)
    # Last uplink check-in at 1000 ms, limit 300 ms: fed up to 1250, never after.
    assert board.dog.fed_at[-1] == 1250
    assert sup.stalled() == ["uplink"]


def test_a_task_limit_must_be_below_the_watchdog_timeout():
    sup = supervisor.Supervisor(Board(), 1000)
    with pytest.raises(ValueError, match="uplink"):
        sup.register("uplink", 1000)


def _run(image, root, mode):
    return micropython.run(SCRIPTS / "supervisor_run.py", image, args=[root, mode], timeout=60)


def test_on_micropython_a_stalled_task_gets_the_gateway_reset(device_image, tmp_path):
    stalled = _run(device_image, tmp_path, "stall")
    assert stalled.returncode == -signal.SIGKILL, stalled.stdout + stalled.stderr
    assert "survived" not in stalled.stdout
    after = _run(device_image, tmp_path, "healthy")
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.split() == ["boot", "watchdog", "alive"]


def test_on_micropython_healthy_tasks_keep_the_gateway_running(device_image, tmp_path):
    result = _run(device_image, tmp_path, "healthy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["boot", "power_on", "alive"]


@pytest.mark.parametrize("mode", ["tap", "master"])
def test_the_dart_driver_checks_in_while_it_runs(mode):
    """A DART driver whose loop stalls must stop the feeding: it checks in once per cycle, also
    while the line is silent (the master keeps polling a pump that never answers)."""
    board = Board()
    sup = supervisor.Supervisor(board, 1000)
    sup.register("dart:forecourt", 300)

    class SilentPort:
        def read(self, *args):
            return b""

        def write(self, data):
            pass

    class Clock:  # the driver's own clock runs in real time: its reply waits must end
        def ticks_ms(self):
            return int(time.monotonic() * 1000)

        def ticks_diff(self, a, b):
            return a - b

        def wall_ms(self):
            return int(time.time() * 1000)

    clock = Clock()
    if mode == "tap":
        driver = dart.DartTap(SilentPort().read, None, clock, supervisor=(sup, "dart:forecourt"),
                              poll_ms=10)
    else:
        driver = dart.DartMaster(SilentPort(), None, clock, supervisor=(sup, "dart:forecourt"),
                                 reply_timeout_ms=5, poll_gap_ms=10)

    async def run_for(ms):
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(ms / 1000)
        task.cancel()

    board.now = 10000  # every check-in made while running lands at this time
    asyncio.run(run_for(150))
    assert sup.stalled() == []
    board.now = 10301
    assert sup.stalled() == ["dart:forecourt"]  # and without the driver, silence shows
