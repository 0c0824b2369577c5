"""A polled serial device's link: waiting for the reply to a command, and its health (error counts
since boot, and link_lost / link_restored / link_errors events with the recorder's link_state
kept current)."""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from meterseal.firmware.aio import sleep_ms
from meterseal.firmware.timing import ticks_diff, ticks_ms

_MAX_U32 = const(0xFFFFFFFF)
NOTHING = object()  # no complete message buffered yet (None stands for a bad one)


def drain(port, reader, next_reply):
    """Drop what arrived since the last exchange (late replies, noise) before a new command;
    ``next_reply`` counts whatever of it is bad."""
    try:
        data = port.read()
    except OSError:
        return
    if data:
        reader.feed(data)
    while next_reply() is not NOTHING:
        pass


async def wait_reply(port, reader, next_reply, accepts, timeout_ms, poll_ms):
    """The next reply for which ``accepts(reply)`` holds, within ``timeout_ms``; else None.

    ``next_reply()`` gives a parsed reply, None for a bad message (the driver counts it) or
    NOTHING when none is complete; fresh bytes from ``port`` go to ``reader.feed``. Replies not
    accepted (late answers to earlier commands) are skipped."""
    started_ms = ticks_ms()
    while True:
        reply = next_reply()
        if reply is NOTHING:
            if ticks_diff(ticks_ms(), started_ms) >= timeout_ms:
                return None
            await sleep_ms(poll_ms)
            try:
                data = port.read()
            except OSError:
                data = b""
            if data:
                reader.feed(data)
        elif reply is not None and accepts(reply):
            return reply


class LinkHealth:
    """Counts link errors since boot and turns runs of failed exchanges into link_lost /
    link_restored. The link is unknown until the first exchange, so a gateway that starts with
    the device already unplugged reports link_lost, and its first success no link_restored.
    ``device`` is the device key the events carry (None: the link as a whole)."""

    def __init__(self, recorder, link, device, lost_after, report_ms):
        self._recorder = recorder
        self.link = link
        self._device = device
        self._lost_after = lost_after
        self._report_ms = report_ms
        self.up = None
        self.crc_errors = 0
        self.timeouts = 0
        self.framing_errors = 0
        self._failures = 0  # consecutive unanswered exchanges
        self._lost_at_ms = 0
        self._reported_total = 0
        self._reported_at_ms = ticks_ms()

    def total(self):
        return self.crc_errors + self.timeouts + self.framing_errors

    def answered(self):
        self._failures = 0
        if self.up:
            return
        if self.up is False:
            outage_ms = min(ticks_diff(ticks_ms(), self._lost_at_ms), _MAX_U32)
            self._recorder.event("link_restored", self._device, link=self.link,
                                 outage_ms=outage_ms)
        self.up = True
        self._recorder.link_state(self.link, True, self.total())

    def unanswered(self):
        self.timeouts += 1
        self._failures += 1
        if self.up is not False and self._failures >= self._lost_after:
            self.up = False
            self._lost_at_ms = ticks_ms()
            self._recorder.event("link_lost", self._device, link=self.link)
            self._recorder.link_state(self.link, False, self.total())

    def report(self):
        """link_errors with the totals since boot, when they grew, at most once per report_ms."""
        total = self.total()
        if total == self._reported_total:
            return
        now_ms = ticks_ms()
        if ticks_diff(now_ms, self._reported_at_ms) < self._report_ms:
            return
        self._reported_total = total
        self._reported_at_ms = now_ms
        self._recorder.event("link_errors", self._device, link=self.link,
                             crc_errors=min(self.crc_errors, _MAX_U32),
                             timeouts=min(self.timeouts, _MAX_U32),
                             framing_errors=min(self.framing_errors, _MAX_U32))
        self._recorder.link_state(self.link, bool(self.up), min(total, _MAX_U32))
