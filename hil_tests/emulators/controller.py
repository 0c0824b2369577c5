"""An emulated forecourt controller: the station's own DART master, as found in the shop or the
back office. It polls the pumps on its line, programs their prices, authorizes fillings per a
policy, reads each finished sale (DC1/DC2/DC3) with the nozzle's totals (CD101/DC101), resets
the pump and keeps the list of sales it read. A gateway tapping the same line
(``SharedLine.attach_pty("tap")``) sees all of it without ever transmitting.

Usage::

    line = SharedLine()
    pump = Dispenser(line.attach_local("pump-50"), clock, address=0x50, nozzles=...).start()
    station = Controller(line.attach_local("controller"), clock, addresses=(0x50,),
                         prices={0x50: (789000, 745000)}).start()
    pump.customer_draw(1, 20000).wait(30)
    station.sales[-1]   # {"address": 80, "nozzle": 1, "volume_ml": ..., "amount_minor": ...}
    station.stop(); pump.stop(); line.close()

API
    Controller(port, clock, addresses=(0x50,), prices=None, policy=authorize_on_lift,
               reply_timeout_s=0.2, poll_gap_s=0.005, retries=3)
        prices   {address: (unit price minor/kL of nozzle 1, nozzle 2, ...)}, sent with CD5
                 at first contact (again after the pump was offline) while it is idle or not
                 programmed; set_prices(address, prices) changes them at run time (a price
                 change on the line)
        policy   called as policy(address, nozzle) when a nozzle comes out of a reset pump;
                 returns None (leave it) or a dict with optional "preset_volume_ml",
                 "preset_amount_minor" and "allowed_nozzles", then the pump is authorized
        .prepay(address, amount_minor=None, volume_ml=None)  the next authorization of that
                 pump carries this preset, whatever the policy says (a customer paid first)
        .start() .stop()  .sales (list of dicts, oldest first)  .errors  .pumps[address]
        .link_stats[address]: polls, timeouts, bad_frames, naks, retries, data_blocks_in
    authorize_on_lift (the default policy), preset_policy(volume_ml=None, amount_minor=None)

Timeouts are real seconds (the line runs in real time); sale timestamps come from the clock.
The controller never drives two exchanges at once: each POLL or DATA waits for its answer or
its timeout, as a half-duplex master must.
"""

import logging
import threading
import time
import traceback

from meterseal.hil.emulators.base import EmulatorThread
from meterseal.protocol import dart

_log = logging.getLogger(__name__)

_ML_DECIMALS = 3
_PRICE_PER_KL_DECIMALS = 5
# A pump that misses this many polls in a row is offline; when it answers again everything it
# said before (status, parameters) is asked for afresh.
_OFFLINE_AFTER_TIMEOUTS = 5
# Polls to wait for the answers to an end-of-sale request before asking again.
_ANSWER_PATIENCE_POLLS = 20


def authorize_on_lift(address, nozzle):
    """Authorize every lifted nozzle, without a preset."""
    return {}


def preset_policy(volume_ml=None, amount_minor=None):
    """A policy that authorizes with a volume or amount preset (a prepaid sale)."""
    preset = {}
    if volume_ml is not None:
        preset["preset_volume_ml"] = volume_ml
    if amount_minor is not None:
        preset["preset_amount_minor"] = amount_minor

    def policy(address, nozzle):
        return dict(preset)

    return policy


class PumpView:
    """What the controller knows of one pump, from what it has said."""

    def __init__(self, address):
        self.address = address
        self.tx_block = None  # our last DATA block number to this pump
        self.last_rx = None  # (block, data) of the pump's last DATA block we processed
        self.sale_nozzle = None  # the nozzle of the filling under way or being closed
        self.last_recorded = None  # (nozzle, filling count) of the last sale recorded
        self.forget()

    def forget(self):
        """Drop what the pump said (it went offline); the sale's nozzle is still known."""
        self.status = None
        self.decimals = None  # (volume, amount, price) from DC7
        self.grades = ()
        self.identity = None
        self.nozzle_out = 0
        self.price = None
        self.filled = None  # (volume, amount) as the pump sent them
        self.totals = {}  # COUN -> (total, meter1)
        self.alarms = []
        self.lift_handled = False
        self.awaiting = None  # what an end-of-sale request still waits for
        self.awaiting_polls = 0
        self.info_requested = False
        self.prices_sent = False
        self.timeouts_in_row = 0


class Controller(EmulatorThread):
    def __init__(
        self,
        port,
        clock,
        addresses=(0x50,),
        prices=None,
        policy=authorize_on_lift,
        reply_timeout_s=0.2,
        poll_gap_s=0.005,
        retries=3,
    ):
        for address in addresses:
            if not dart.ADDRESS_MIN <= address <= dart.ADDRESS_MAX:
                raise ValueError("address must be 0x50..0x6F, got 0x%02X" % address)
        super().__init__("controller")
        self._port = port
        self._clock = clock
        self.addresses = tuple(addresses)
        self._prices = {address: tuple(p) for address, p in (prices or {}).items()}
        self._policy = policy
        self.reply_timeout_s = reply_timeout_s
        self.poll_gap_s = poll_gap_s
        self.retries = retries
        self.pumps = {address: PumpView(address) for address in self.addresses}
        self.sales = []
        self.link_stats = {
            address: dict.fromkeys(
                ("polls", "timeouts", "bad_frames", "naks", "retries", "data_blocks_in"), 0
            )
            for address in self.addresses
        }
        self._decoder = dart.FrameDecoder()
        self._frames = []  # decoded but not yet consumed
        self._prepaid = {}  # address -> preset for its next authorization
        self._lock = threading.Lock()

    def set_prices(self, address, prices):
        """New unit prices (minor units per kL, nozzle 1 first), sent on the next cycle."""
        with self._lock:
            self._prices[address] = tuple(prices)
            self.pumps[address].prices_sent = False

    def prepay(self, address, amount_minor=None, volume_ml=None):
        """Preset the next authorization of pump ``address``, as the cashier does when a
        customer pays first."""
        if (amount_minor is None) == (volume_ml is None):
            raise ValueError("give exactly one of amount_minor and volume_ml")
        if amount_minor is None:
            preset = {"preset_volume_ml": volume_ml}
        else:
            preset = {"preset_amount_minor": amount_minor}
        with self._lock:
            self._prepaid[address] = preset

    def _serve_once(self):
        for address in self.addresses:
            if not self._running:
                return
            # One pump's trouble must not starve the others of their polls.
            try:
                self._serve(self.pumps[address])
            except Exception:
                self._record_error(traceback.format_exc())
        time.sleep(self.poll_gap_s)

    # --- per pump, per cycle --------------------------------------------------------------

    def _serve(self, pump):
        if not self._poll(pump):
            return  # no answer: commands would only time out too
        with self._lock:
            block = self._next_request(pump)
        if block:
            self._send_block(pump, block)

    def _next_request(self, pump):
        """The transactions this pump needs from us now, or None."""
        if not pump.info_requested:
            pump.info_requested = True
            # Filling information too: DC3 says which nozzle is out if a sale is under way.
            return [
                dart.CD1Command(dart.CMD_RETURN_PUMP_PARAMETERS),
                dart.CD1Command(dart.CMD_RETURN_PUMP_IDENTITY),
                dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION),
                dart.CD1Command(dart.CMD_RETURN_STATUS),
            ]
        if pump.decimals is None or pump.status is None:
            return None
        prices = self._prices.get(pump.address)
        if prices and not pump.prices_sent and (
            pump.status == dart.STATUS_NOT_PROGRAMMED or pump.status == dart.STATUS_RESET
        ):
            pump.prices_sent = True
            price_decimals = pump.decimals[2]
            return [dart.CD5PriceUpdate(
                [dart.rescale(p, _PRICE_PER_KL_DECIMALS, price_decimals) for p in prices]
            )]
        if pump.status in (dart.STATUS_FILLING_COMPLETED, dart.STATUS_MAX_REACHED):
            return self._close_sale(pump)
        if pump.status == dart.STATUS_RESET and pump.nozzle_out and not pump.lift_handled:
            pump.lift_handled = True
            return self._authorization(pump)
        return None

    def _authorization(self, pump):
        decision = self._prepaid.pop(pump.address, None)
        if decision is None:
            decision = self._policy(pump.address, pump.nozzle_out)
        if decision is None:
            return None
        volume_decimals, amount_decimals, _ = pump.decimals
        block = []
        if decision.get("allowed_nozzles"):
            block.append(dart.CD2AllowedNozzles(decision["allowed_nozzles"]))
        if decision.get("preset_volume_ml") is not None:
            block.append(dart.CD3PresetVolume(
                dart.rescale(decision["preset_volume_ml"], _ML_DECIMALS, volume_decimals)
            ))
        if decision.get("preset_amount_minor") is not None:
            block.append(dart.CD4PresetAmount(
                dart.rescale(decision["preset_amount_minor"], 2, amount_decimals)
            ))
        block.append(dart.CD1Command(dart.CMD_AUTHORIZE))
        pump.sale_nozzle = pump.nozzle_out
        return block

    def _close_sale(self, pump):
        """End of a filling: ask for DC2/DC3 and the nozzle's totals; when all are in, record
        the sale and reset the pump."""
        nozzles = [pump.sale_nozzle] if pump.sale_nozzle else [
            number for number, grade in enumerate(pump.grades, 1) if grade
        ]
        if pump.awaiting is None or pump.awaiting_polls > _ANSWER_PATIENCE_POLLS:
            pump.awaiting = {"filling"}
            pump.awaiting.update(nozzle for nozzle in nozzles)
            pump.awaiting.update(0x10 + nozzle for nozzle in nozzles)
            pump.awaiting_polls = 0
            return [dart.CD1Command(dart.CMD_RETURN_FILLING_INFORMATION)] + [
                dart.CD101RequestTotalCounters(counter)
                for counter in sorted(pump.awaiting - {"filling"})
            ]
        pump.awaiting_polls += 1
        if pump.awaiting:
            return None
        self._record_sale(pump)
        pump.awaiting = None
        pump.sale_nozzle = None
        return [dart.CD1Command(dart.CMD_RESET)]

    def _record_sale(self, pump):
        volume_decimals, amount_decimals, price_decimals = pump.decimals
        nozzle = pump.sale_nozzle
        sale = {
            "address": pump.address,
            "nozzle": nozzle,
            "grade": pump.grades[nozzle - 1] if nozzle and nozzle <= len(pump.grades) else None,
            "status": pump.status,
            "volume_ml": dart.rescale(pump.filled[0], volume_decimals, _ML_DECIMALS),
            "amount_minor": dart.rescale(pump.filled[1], amount_decimals, 2),
            "unit_price_minor_per_kl": dart.rescale(
                pump.price, price_decimals, _PRICE_PER_KL_DECIMALS
            ),
            "identity": pump.identity,
            "read_at_s": self._clock.now(),
        }
        if nozzle:
            total = pump.totals[nozzle]
            sale["totalizer_ml"] = dart.rescale(total[0], volume_decimals, _ML_DECIMALS)
            sale["amount_totalizer_minor"] = dart.rescale(
                pump.totals[0x10 + nozzle][0], amount_decimals, 2
            )
            sale["fillings"] = pump.totals[0x10 + nozzle][1]
            # A reset that never arrived leaves the pump showing the same sale again; its
            # filling count says it is the one already recorded.
            if pump.last_recorded == (nozzle, sale["fillings"]):
                return
            pump.last_recorded = (nozzle, sale["fillings"])
        self.sales.append(sale)

    # --- what the pump says ---------------------------------------------------------------

    def _absorb(self, pump, transactions):
        for transaction in transactions:
            if isinstance(transaction, dart.DC1PumpStatus):
                pump.status = transaction.status
            elif isinstance(transaction, dart.DC2FilledVolumeAmount):
                pump.filled = (transaction.volume, transaction.amount)
                if pump.awaiting:
                    pump.awaiting.discard("filling")
            elif isinstance(transaction, dart.DC3NozzleStatusPrice):
                pump.price = transaction.price
                if transaction.nozzle_out:
                    pump.nozzle_out = transaction.nozzle
                    if pump.status in (dart.STATUS_AUTHORIZED, dart.STATUS_FILLING):
                        pump.sale_nozzle = transaction.nozzle
                else:
                    pump.nozzle_out = 0
                    pump.lift_handled = False
            elif isinstance(transaction, dart.DC5AlarmCode):
                pump.alarms.append(transaction.alarm)
            elif isinstance(transaction, dart.DC7PumpParameters):
                pump.decimals = (
                    transaction.volume_decimals,
                    transaction.amount_decimals,
                    transaction.price_decimals,
                )
                pump.grades = tuple(transaction.grades)
            elif isinstance(transaction, dart.DC9PumpIdentity):
                pump.identity = transaction.identity
            elif isinstance(transaction, dart.DC101TotalCounters):
                pump.totals[transaction.counter] = (transaction.total, transaction.meter1)
                if pump.awaiting:
                    pump.awaiting.discard(transaction.counter)

    # --- DART line level ------------------------------------------------------------------

    def _poll(self, pump):
        """POLL the pump and take in what it says; False if it did not answer."""
        stats = self.link_stats[pump.address]
        stats["polls"] += 1
        self._frames.clear()  # late answers to exchanges already given up on
        self._port.write(dart.encode_short(pump.address, dart.POLL))
        frame = self._await(pump.address, (dart.DATA, dart.EOT))
        if frame is None:
            stats["timeouts"] += 1
            pump.timeouts_in_row += 1
            if pump.timeouts_in_row == _OFFLINE_AFTER_TIMEOUTS:
                with self._lock:
                    pump.forget()
            return False
        pump.timeouts_in_row = 0
        if frame.kind != dart.DATA:
            return True
        self._port.write(dart.encode_short(pump.address, dart.ACK, frame.block))
        if pump.last_rx == (frame.block, frame.data):
            return True  # our ACK was lost and the pump sent the block again
        pump.last_rx = (frame.block, frame.data)
        stats["data_blocks_in"] += 1
        try:
            transactions = frame.transactions(dart.FROM_PUMP)
        except dart.DARTError as exc:
            self._record_error("pump 0x%02X sent a malformed block: %s" % (pump.address, exc))
            return True
        with self._lock:
            self._absorb(pump, transactions)
        return True

    def _send_block(self, pump, transactions):
        stats = self.link_stats[pump.address]
        block = 0 if pump.tx_block is None else dart.next_block(pump.tx_block)
        pump.tx_block = block
        raw = dart.encode_data(pump.address, block, transactions)
        for attempt in range(1 + self.retries):
            if attempt:
                stats["retries"] += 1
            self._frames.clear()
            self._port.write(raw)
            frame = self._await(pump.address, (dart.ACK, dart.NAK))
            if frame is None:
                stats["timeouts"] += 1
            elif frame.kind == dart.NAK:
                stats["naks"] += 1
            elif frame.block == block:
                return True
        _log.warning("controller: pump 0x%02X did not take block %d", pump.address, block)
        with self._lock:
            # Whatever that block asked for, ask afresh from the start once the pump answers.
            pump.forget()
        return False

    def _await(self, address, kinds):
        """The next frame from ``address`` of one of ``kinds``, or None after the reply
        timeout. Anything else on the line (other pumps, noise) is skipped."""
        deadline = time.monotonic() + self.reply_timeout_s
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                if frame.address == address and frame.kind in kinds:
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # A partial frame left by a dropped line is stale now; start clean.
                self._decoder.reset()
                return None
            data = self._port.read(remaining)
            position = 0
            while position < len(data):
                used, result = self._decoder.feed(data, position)
                position += used
                if isinstance(result, dart.Frame):
                    self._frames.append(result)
                elif result is dart.BAD_FRAME and address in self.link_stats:
                    self.link_stats[address]["bad_frames"] += 1
