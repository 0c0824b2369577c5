"""Thread life shared by every emulator.

A subclass implements ``_serve_once()``: one pass of its loop (read the line, answer, move its
physics), called until ``stop()``. It may override ``_power_on()`` (runs in ``start()`` before
the thread) and ``_shut_down()`` (runs in ``stop()`` after it). An exception inside the loop is
recorded in ``errors`` (tests and scenarios assert on it) and the loop goes on, until so many have
piled up that the emulator is plainly broken and stops instead of spinning.
"""

import logging
import threading
import traceback

MAX_ERRORS_KEPT = 100
_STOP_TIMEOUT_S = 5.0

_log = logging.getLogger(__name__)


class EmulatorThread:
    def __init__(self, name):
        self.name = name
        self.errors = []
        self._running = False
        self._thread = None

    def start(self):
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._power_on()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=_STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self._record_error(f"thread did not stop within {_STOP_TIMEOUT_S:g} s")
            self._thread = None
        self._shut_down()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self):
        while self._running:
            try:
                self._serve_once()
            except Exception:
                self._record_error(traceback.format_exc())
                if len(self.errors) >= MAX_ERRORS_KEPT:
                    return

    def _record_error(self, text):
        _log.error("%s: %s", self.name, text)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    def _power_on(self):
        pass

    def _shut_down(self):
        pass
