"""The supervisor: feeds the watchdog only while every critical task is alive.

Each task registers with the longest silence it may keep (`register(name, max_silence_ms)`) and
calls `check_in(name)` from its loop. `run()` feeds the watchdog when every task has checked in
within its limit; one stuck task is enough to stop feeding, and the board resets. The reset
cause is read once at boot, before anything can disturb it, for the boot event.
"""

from meterseal.firmware.aio import sleep_ms as _sleep_ms


class Supervisor:
    def __init__(self, board, timeout_ms):
        self._board = board
        self._timeout_ms = timeout_ms
        self.reset_cause = board.reset_cause()
        self._tasks = {}  # name -> [max_silence_ms, ticks of the last check-in]

    def register(self, name, max_silence_ms):
        if max_silence_ms >= self._timeout_ms:
            raise ValueError("task %s: %d ms of silence would outlast the %d ms watchdog"
                             % (name, max_silence_ms, self._timeout_ms))
        # Registration counts as the first check-in: a task gets its full limit to start.
        self._tasks[name] = [max_silence_ms, self._board.ticks_ms()]

    def check_in(self, name):
        self._tasks[name][1] = self._board.ticks_ms()

    def stalled(self):
        """Names of the tasks past their limit, sorted."""
        now = self._board.ticks_ms()
        return sorted(name for name, (limit, last) in self._tasks.items()
                      if self._board.ticks_diff(now, last) > limit)

    async def run(self):
        """Start the watchdog and feed it, four times per timeout, while no task has stalled."""
        watchdog = self._board.watchdog(self._timeout_ms)
        while True:
            if not self.stalled():
                watchdog.feed()
            await _sleep_ms(self._timeout_ms // 4)
