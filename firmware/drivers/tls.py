"""Veeder-Root TLS automatic tank gauge (docs/drivers/scale-and-tank.md).

The gateway is the host on the console's RS-232 port, asking for every tank at once:

    every inventory_ms   <SOH>i20100   -> recorder.tank_inventory, one per tank with valid data
    every delivery_ms    <SOH>i20200   -> recorder.tank_delivery, once per delivery not seen yet

A delivery is known by its tank and its start and end time (the console's minutes). The keys of
recorded deliveries are ``seen_deliveries``, for the caller to persist and give back after a
restart; keys of deliveries the console no longer stores are forgotten, so the set stays as small
as the console's own memory (10 per tank on a TLS-350).

A frame that fails its checksum counts as a CRC error, any other bad frame and the console's
``9999`` refusal as framing errors; none is turned into a value. An unanswered command is sent
up to _ATTEMPTS times, then counts as a timeout.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


from meterseal.firmware.drivers.link import NOTHING, LinkHealth, drain, wait_reply
from meterseal.firmware.aio import sleep_ms as _sleep_ms
from meterseal.firmware.timing import ticks_diff, ticks_ms
from meterseal.protocol import records, tls
from meterseal.protocol.errors import TLSError

LINK = "tank_gauge"
_ATTEMPTS = const(3)
_READ_POLL_MS = const(20)
_MAX_TICK_MS = const(1000)  # the run loop wakes at least this often, for the supervisor

# (record field, codec field); the codec says height and water, the record product_height and
# water_height.
_INVENTORY_NAMES = (
    ("volume_ml", "volume_ml"),
    ("tc_volume_ml", "tc_volume_ml"),
    ("product_height_um", "height_um"),
    ("water_height_um", "water_um"),
    ("water_volume_ml", "water_volume_ml"),
    ("temperature_centi_c", "temperature_centi_c"),
    ("ullage_ml", "ullage_ml"),
)
_DELIVERY_NAMES = (
    ("start_volume_ml", "start_volume_ml"),
    ("end_volume_ml", "end_volume_ml"),
    ("start_tc_volume_ml", "start_tc_volume_ml"),
    ("end_tc_volume_ml", "end_tc_volume_ml"),
    ("start_product_height_um", "start_height_um"),
    ("end_product_height_um", "end_height_um"),
    ("start_water_height_um", "start_water_um"),
    ("end_water_height_um", "end_water_um"),
    ("start_temperature_centi_c", "start_temperature_centi_c"),
    ("end_temperature_centi_c", "end_temperature_centi_c"),
)


def _required(kind):
    return [field[1] for field in records.BODY_FIELDS[kind] if field[3]]


_INVENTORY_REQUIRED = _required("tank.inventory")
_DELIVERY_REQUIRED = _required("tank.delivery")


def _body(value, names, required):
    # A field the console sent as "no valid data" (None) is left out; without a required one
    # there is no record to make.
    body = {}
    for record_name, codec_name in names:
        field = getattr(value, codec_name)
        if field is not None:
            body[record_name] = field
    for name in required:
        if name not in body:
            return None
    return body


def inventory_body(tank_inventory, console_time_ms=None):
    """A tank.inventory body from one tank of an i201 report, or None if the tank reports no
    valid volume, height or temperature (an inactive probe). ``console_time_ms``: the report's
    own time, kept because the console times its deliveries by the same clock."""
    body = _body(tank_inventory, _INVENTORY_NAMES, _INVENTORY_REQUIRED)
    if body is not None and console_time_ms is not None:
        body["console_time_ms"] = console_time_ms
    return body


def delivery_body(delivery, utc_offset_s):
    """A tank.delivery body from one stored delivery of an i202 report, or None if a required
    value is missing (heights are optional: consoles that send 8 fields have none). The console's local start
    and end minutes become UTC ms with ``utc_offset_s``."""
    body = {
        "start_wall_time_ms": tls.unix_s_from_time(delivery.start_time, utc_offset_s) * 1000,
        "end_wall_time_ms": tls.unix_s_from_time(delivery.end_time, utc_offset_s) * 1000,
    }
    fields = _body(delivery, _DELIVERY_NAMES, ())
    for name in fields:
        body[name] = fields[name]
    for name in _DELIVERY_REQUIRED:
        if name not in body:
            return None
    return body


def _minutes_text(time):
    year, month, day, hour, minute = time
    return "%02d%02d%02d%02d%02d" % (year % 100, month, day, hour, minute)


def delivery_key(tank, delivery):
    """"TT:start:end" with the console's YYMMDDHHmm times: a delivery's identity."""
    return "%02d:%s:%s" % (tank, _minutes_text(delivery.start_time),
                           _minutes_text(delivery.end_time))


class DeliveryLedger:
    """Which stored deliveries were already recorded."""

    def __init__(self, seen=()):
        self._seen = set(seen)

    def fresh(self, report):
        """[(tank, delivery, key)] of an i202 report not recorded yet, oldest first per tank.
        Forgets the keys of a reported tank's deliveries that the console no longer stores."""
        found = []
        for tank_deliveries in report.tanks:
            tank = tank_deliveries.tank
            stored = set()
            for delivery in tank_deliveries.deliveries:
                key = delivery_key(tank, delivery)
                stored.add(key)
                if key not in self._seen:
                    found.append((tank, delivery, key))
            prefix = "%02d:" % tank
            self._seen = set(key for key in self._seen
                             if key in stored or not key.startswith(prefix))
        found.reverse()  # the console lists the most recent first
        return found

    def mark(self, key):
        self._seen.add(key)

    def seen(self):
        return sorted(self._seen)


class TankGaugeDriver:
    """Reads a TLS console on ``port`` (HAL serial: non-blocking ``read()``, ``write()``) and
    feeds ``recorder``. ``seen_deliveries`` are the persisted keys (``seen_deliveries()`` gives
    the current ones). ``utc_offset_s`` is the console clock's offset from UTC, ``units`` the
    codec's UNITS_METRIC or UNITS_US as the console is set up."""

    def __init__(self, port, recorder, inventory_ms=60000, delivery_ms=60000,
                 reply_timeout_ms=8000, lost_after=3, error_report_ms=60000,
                 utc_offset_s=28800, units=tls.UNITS_METRIC, security_code=None,
                 seen_deliveries=(), supervisor=None):
        self._port = port
        self._recorder = recorder
        self._inventory_ms = inventory_ms
        self._delivery_ms = delivery_ms
        # A 1 KB report takes about a second at 9600 baud; allow for big sites.
        self._reply_timeout_ms = reply_timeout_ms
        self._utc_offset_s = utc_offset_s
        self._units = units
        self._security_code = security_code
        self._supervisor = supervisor
        self.link = LinkHealth(recorder, LINK, None, lost_after, error_report_ms)
        self._ledger = DeliveryLedger(seen_deliveries)
        self._reader = tls.ReplyReader()
        self._inventory_at_ms = None  # None: due now
        self._delivery_at_ms = None

    def seen_deliveries(self):
        return self._ledger.seen()

    async def run(self):
        tick_ms = min(self._inventory_ms, self._delivery_ms, _MAX_TICK_MS)
        while True:
            await self.poll_once()
            if self._supervisor is not None:
                self._supervisor.check_in(LINK)
            await _sleep_ms(tick_ms)

    async def poll_once(self):
        """Ask for whatever is due: the inventory, the deliveries."""
        if self._due(self._inventory_at_ms, self._inventory_ms):
            self._inventory_at_ms = ticks_ms()
            await self._read_inventory()
        if self._due(self._delivery_at_ms, self._delivery_ms):
            self._delivery_at_ms = ticks_ms()
            await self._read_deliveries()
        self.link.report()

    def _due(self, last_ms, interval_ms):
        return last_ms is None or ticks_diff(ticks_ms(), last_ms) >= interval_ms

    async def _read_inventory(self):
        report = await self._ask(tls.INVENTORY, tls.InventoryReport)
        if report is None:
            return
        console_time_ms = tls.unix_s_from_time(report.time, self._utc_offset_s) * 1000
        for tank_inventory in report.tanks:
            body = inventory_body(tank_inventory, console_time_ms)
            if body is not None:
                self._recorder.tank_inventory({"tank_number": tank_inventory.tank}, body)

    async def _read_deliveries(self):
        report = await self._ask(tls.DELIVERY, tls.DeliveryReport)
        if report is None:
            return
        for tank, delivery, key in self._ledger.fresh(report):
            body = delivery_body(delivery, self._utc_offset_s)
            if body is not None:
                self._recorder.tank_delivery({"tank_number": tank}, body)
                self._ledger.mark(key)  # only once the recorder has taken it

    async def _ask(self, function, expected_type):
        """Send ``function`` for all tanks; the report if it is an ``expected_type``, else None."""
        command = tls.Command(function, 0, self._security_code).encode()
        for _ in range(_ATTEMPTS if self.link.up else 1):
            drain(self._port, self._reader, self._next_reply)
            try:
                self._port.write(command)
            except OSError:
                self.link.unanswered()
                return None
            reply = await wait_reply(
                self._port, self._reader, self._next_reply,
                lambda reply: isinstance(reply, (expected_type, tls.NotUnderstood)),
                self._reply_timeout_ms, _READ_POLL_MS)
            if reply is None:
                self.link.unanswered()
                continue
            self.link.answered()
            if isinstance(reply, tls.NotUnderstood):
                # Not a line fault, but no report either: a console without this function or
                # one that wants a security code.
                self.link.framing_errors += 1
                return None
            return reply
        return None

    def _next_reply(self):
        """The next parsed frame, None for a bad one (counted), NOTHING when none is ready."""
        try:
            frame = self._reader.next_frame()
            if frame is None:
                return NOTHING
            return tls.parse_reply(frame, self._units)
        except TLSError as error:
            # The codec's checksum message starts with the word; every other fault is framing.
            if str(error).startswith("checksum"):
                self.link.crc_errors += 1
            else:
                self.link.framing_errors += 1
            return None
