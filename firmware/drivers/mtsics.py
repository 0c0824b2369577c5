"""Retail price scale: MT-SICS with the meterseal price extension (docs/drivers/scale-and-tank.md).

The gateway is the host on the scale's RS-232 line: one command, one reply line.

    connect   I2, I4, MSI, MSC     model, serial, metrology, event counter -> recorder.device_facts
    poll      MST every poll_ms    a sale number not yet recorded -> recorder.weighing, once
              MSC every facts_ms   a moved event counter -> MSI again -> recorder.device_facts

Every link loss makes the next successful exchange a reconnect, so the facts are read again before
any sale is recorded: a scale recalibrated while the gateway was away is noticed at once. MST shows
only the last sale; its sale number says how many sales passed unseen, and those are reported as a
``records_dropped`` event for the scale (the last one is still recorded).

A line that does not parse, or an ES/ET/EL, is never turned into a value: it counts as a framing
error. An unanswered command is retried up to _ATTEMPTS times, then counts as a timeout.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from meterseal.firmware.drivers.link import NOTHING, LinkHealth, drain, wait_reply
from meterseal.firmware.aio import sleep_ms as _sleep_ms
from meterseal.firmware.timing import ticks_diff, ticks_ms
from meterseal.protocol import mtsics
from meterseal.protocol.errors import MTSICSError

LINK = "scale"
_ATTEMPTS = const(3)  # sends of one command before it counts as unanswered
_READ_POLL_MS = const(10)  # a 115-byte reply takes 120 ms at 9600 baud
_MAX_U32 = const(0xFFFFFFFF)


def sale_news(last_sale_number, sale_number):
    """(is_new, missed) for the sale number MST shows, given the last one recorded (None: none
    recorded yet, so the shown sale is recorded and nothing before it counts as missed). A lower
    number means the numbering restarted (a wrap after MAX_TXN, or another scale): the sales from
    1 up to it are new, all but the shown one missed."""
    if last_sale_number is None:
        return True, 0
    if sale_number == last_sale_number:
        return False, 0
    if sale_number > last_sale_number:
        return True, sale_number - last_sale_number - 1
    return True, sale_number - 1


def weighing_body(sale, metrology):
    """A scale.weighing body from an MST sale and the MSI metrology in force: the scale's own
    values, in mg, nothing recomputed. PLU 0 means none and is left out."""
    body = {
        "gross_mg": sale.gross.mg,
        "tare_mg": sale.tare.mg,
        "net_mg": sale.net.mg,
        "tare_mode": sale.tare_mode,
        "e_mg": metrology.e.mg,
        "d_mg": metrology.d.mg,
        "max_mg": metrology.max.mg,
        "stable": sale.stable,
        "centre_of_zero": sale.centre_of_zero,
        "start_reading_mg": sale.start.mg,
        "unit_price_minor_per_kg": sale.unit_price_minor_per_kg,
        "amount_minor": sale.amount_minor,
        "load_to_stable_ms": sale.load_to_stable_ms,
        # The scale's own numbering lets the host see sales the gateway never received.
        "sale_number": sale.txn,
    }
    if sale.plu:
        body["plu"] = sale.plu
    return body


def identity_text(model_text, serial):
    """The device identity: model (first word of I2, whose rest repeats Max) and I4 serial."""
    return "%s/%s" % (model_text.split(" ")[0], serial)


def param_text(event_count, metrology):
    """The metrological parameters as one short text: event counter, Max, e, d in mg, class. Any
    change (above all the counter) is what the recorder turns into a parameter_change event."""
    return "MSC %d MSI %d %d %d %s" % (event_count, metrology.max.mg, metrology.e.mg,
                                      metrology.d.mg, metrology.accuracy_class)


def _answers(reply, reply_id, expected_type):
    """Whether ``reply`` answers a command whose reply is ``reply_id`` / ``expected_type``: an
    error, a failure status, or the value. The MS replies carry no id attribute."""
    if isinstance(reply, mtsics.ErrorReply):
        return True
    if getattr(reply, "id", reply_id) != reply_id:
        return False
    return isinstance(reply, expected_type) or isinstance(reply, mtsics.StatusReply)


class ScaleDriver:
    """Reads one price scale on ``port`` (HAL serial: non-blocking ``read()``, ``write()``) and
    feeds ``recorder``. ``last_sale_number`` is the persisted sale number of the last weighing
    recorded (None when none was); the attribute of the same name is its current value, for the
    caller to persist."""

    def __init__(self, port, recorder, scale_id, poll_ms=500, facts_ms=60000,
                 reply_timeout_ms=1000, lost_after=3, error_report_ms=60000,
                 last_sale_number=None, supervisor=None):
        self._port = port
        self._recorder = recorder
        self.device = {"scale_id": scale_id}
        self._poll_ms = poll_ms
        self._facts_ms = facts_ms
        self._reply_timeout_ms = reply_timeout_ms
        self._supervisor = supervisor
        self.link = LinkHealth(recorder, LINK, self.device, lost_after, error_report_ms)
        self.last_sale_number = last_sale_number
        self._reader = mtsics.LineReader()
        self._metrology = None  # None: (re)connect first
        self._event_count = None
        self._facts_at_ms = 0

    async def run(self):
        while True:
            await self.poll_once()
            if self._supervisor is not None:
                self._supervisor.check_in("scale:" + self.device["scale_id"])
            await _sleep_ms(self._poll_ms)

    async def poll_once(self):
        """One cycle: (re)connect if needed, check the event counter when due, read the sale."""
        if self._metrology is None or self.link.up is not True:
            await self._connect()
        elif ticks_diff(ticks_ms(), self._facts_at_ms) >= self._facts_ms:
            await self._check_counter()
        if self._metrology is not None and self.link.up:
            await self._read_sale()
        self.link.report()

    async def _connect(self):
        self._metrology = None
        model = await self._ask("I2", mtsics.TextReply)
        serial = model and await self._ask("I4", mtsics.TextReply)
        metrology = serial and await self._ask("MSI", mtsics.MetrologyReply)
        counter = metrology and await self._ask("MSC", mtsics.CounterReply)
        if counter is None:
            return
        self._metrology = metrology
        self._event_count = counter.count
        self._facts_at_ms = ticks_ms()
        self._recorder.device_facts(self.device, identity=identity_text(model.text, serial.text),
                                    param_checksum=param_text(counter.count, metrology))

    async def _check_counter(self):
        counter = await self._ask("MSC", mtsics.CounterReply)
        if counter is None:
            return
        self._facts_at_ms = ticks_ms()
        if counter.count == self._event_count:
            return
        metrology = await self._ask("MSI", mtsics.MetrologyReply)
        if metrology is None:
            self._metrology = None  # sales wait until the new metrology is known
            return
        self._metrology = metrology
        self._event_count = counter.count
        self._recorder.device_facts(self.device, param_checksum=param_text(counter.count,
                                                                           metrology))

    async def _read_sale(self):
        sale = await self._ask("MST", mtsics.SaleReply)
        if sale is None:  # MST I (no sale yet) or no answer
            return
        is_new, missed = sale_news(self.last_sale_number, sale.txn)
        if not is_new:
            return
        if missed:
            self._recorder.event("records_dropped", self.device, dropped_count=min(missed,
                                                                                  _MAX_U32))
        self._recorder.weighing(self.device, weighing_body(sale, self._metrology))
        self.last_sale_number = sale.txn

    async def _ask(self, name, expected_type):
        """Send ``name``; the reply if it is an ``expected_type``, else None. A failure status
        (MST I before the first sale, I while busy) is an answer, just not a value."""
        reply_id = mtsics.REPLY_IDS[name]
        command = mtsics.Command(name).encode()
        # While the link is down one send per cycle is enough to notice it is back.
        for _ in range(_ATTEMPTS if self.link.up else 1):
            drain(self._port, self._reader, self._next_reply)
            try:
                self._port.write(command)
            except OSError:
                self.link.unanswered()
                return None
            reply = await wait_reply(
                self._port, self._reader, self._next_reply,
                lambda reply: _answers(reply, reply_id, expected_type),
                self._reply_timeout_ms, _READ_POLL_MS)
            if reply is None:
                self.link.unanswered()
                continue
            self.link.answered()
            if isinstance(reply, mtsics.ErrorReply):
                # ET: our command arrived damaged, send it again; ES/EL: it will not work now.
                self.link.framing_errors += 1
                if reply.code == "ET":
                    continue
                return None
            return reply if isinstance(reply, expected_type) else None
        return None

    def _next_reply(self):
        """The next parsed reply, None for a bad line (counted), NOTHING when no line is ready."""
        try:
            line = self._reader.next_line()
            if line is None:
                return NOTHING
            return mtsics.parse_reply(line)
        except MTSICSError:
            self.link.framing_errors += 1
            return None

