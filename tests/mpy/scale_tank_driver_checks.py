# The gateway's scale and tank gauge drivers on both interpreters: sale-number gaps, the mapping
# of MT-SICS and TLS values to record fields and units, delivery deduplication across restarts,
# and the scale driver's exchanges against a scripted line (facts, one record per sale, missed
# sales, garbage, ES, silence).
# heapsize: 192K

import asyncio

from known_vectors import MTSICS_SALE_VECTOR
from meterseal.firmware.drivers import mtsics as scale_driver
from meterseal.firmware.drivers import tls as tank_driver
from meterseal.protocol import mtsics, tls

# --- sale numbers ---------------------------------------------------------------------------
sale_news = scale_driver.sale_news
assert sale_news(None, 42) == (True, 0)  # nothing recorded yet: record what the scale shows
assert sale_news(41, 41) == (False, 0)
assert sale_news(41, 42) == (True, 0)
assert sale_news(41, 45) == (True, 3)  # 42..44 passed unseen
assert sale_news(mtsics.MAX_TXN, 1) == (True, 0)  # the numbering wrapped
assert sale_news(500, 3) == (True, 2)  # a reset scale: 1 and 2 unseen

# --- scale values -> scale.weighing ---------------------------------------------------------
line, expected = MTSICS_SALE_VECTOR
sale = mtsics.parse_reply(line)
metrology = mtsics.parse_reply(b"MSI A     15.000 kg      0.005 kg      0.005 kg III")
body = scale_driver.weighing_body(sale, metrology)
txn, stable, gross, tare, net, price, amount, plu, tare_mode, start, zero, stable_ms = expected
assert body == {
    "gross_mg": gross, "tare_mg": tare, "net_mg": net, "tare_mode": tare_mode,
    "e_mg": 5000, "d_mg": 5000, "max_mg": 15000000, "stable": stable, "centre_of_zero": zero,
    "start_reading_mg": start, "unit_price_minor_per_kg": price, "amount_minor": amount,
    "plu": plu, "load_to_stable_ms": stable_ms, "sale_number": txn,
}, body
no_plu = mtsics.parse_reply(line.replace(b" 123 W ", b" 0 W "))
assert "plu" not in scale_driver.weighing_body(no_plu, metrology)
assert scale_driver.identity_text("MS-PS15 15.000 kg", "MS00000001") == "MS-PS15/MS00000001"
assert scale_driver.param_text(7, metrology) == "MSC 7 MSI 15000000 5000 5000 III"

# --- tank values -> tank.inventory / tank.delivery ------------------------------------------
inventory = tls.TankInventory(3, "1", 0, volume_ml=12000000, tc_volume_ml=11950000,
                              ullage_ml=18000000, height_um=1234500, water_um=20000,
                              temperature_centi_c=-150, water_volume_ml=40000)
assert tank_driver.inventory_body(inventory) == {
    "volume_ml": 12000000, "tc_volume_ml": 11950000, "product_height_um": 1234500,
    "water_height_um": 20000, "water_volume_ml": 40000, "temperature_centi_c": -150,
    "ullage_ml": 18000000,
}
partial = tls.TankInventory(4, "1", 0, volume_ml=1000, height_um=2000, temperature_centi_c=0)
assert tank_driver.inventory_body(partial) == {
    "volume_ml": 1000, "product_height_um": 2000, "temperature_centi_c": 0}
assert tank_driver.inventory_body(tls.TankInventory(5, "1", 0)) is None  # an inactive probe
# The report's own time rides along: the console times its deliveries by the same clock.
assert tank_driver.inventory_body(partial, 1767225600000) == {
    "volume_ml": 1000, "product_height_um": 2000, "temperature_centi_c": 0,
    "console_time_ms": 1767225600000}
assert tank_driver.inventory_body(tls.TankInventory(5, "1", 0), 1767225600000) is None


def delivery(start, end, start_ml, end_ml, heights=True):
    fields = {"start_volume_ml": start_ml, "start_tc_volume_ml": start_ml - 10,
              "start_water_um": 0, "start_temperature_centi_c": 1500,
              "end_volume_ml": end_ml, "end_tc_volume_ml": end_ml - 10, "end_water_um": 0,
              "end_temperature_centi_c": 1450}
    if heights:
        fields["start_height_um"] = 900000
        fields["end_height_um"] = 1500000
    return tls.Delivery(start, end, **fields)


first = delivery((2026, 1, 1, 8, 0), (2026, 1, 1, 8, 30), 12000000, 20000000)
body = tank_driver.delivery_body(first, 28800)
assert body["start_wall_time_ms"] == 1767225600000  # 08:00 China time is 00:00 UTC
assert body["end_wall_time_ms"] == 1767225600000 + 30 * 60000
assert (body["start_volume_ml"], body["end_tc_volume_ml"]) == (12000000, 19999990)
assert (body["start_product_height_um"], body["end_product_height_um"]) == (900000, 1500000)
assert (body["start_water_height_um"], body["end_temperature_centi_c"]) == (0, 1450)
assert len(body) == 12
# A console that sends 8 fields has no heights: the record simply leaves them out.
no_heights = tank_driver.delivery_body(
    delivery((2026, 1, 1, 8, 0), (2026, 1, 1, 8, 30), 1, 2, heights=False), 28800)
assert "start_product_height_um" not in no_heights and no_heights["end_volume_ml"] == 2

# --- delivery deduplication -----------------------------------------------------------------
assert tank_driver.delivery_key(1, first) == "01:2601010800:2601010830"
second = delivery((2026, 1, 2, 9, 0), (2026, 1, 2, 9, 45), 9000000, 19000000)
other_tank = delivery((2026, 1, 2, 9, 0), (2026, 1, 2, 9, 45), 5000000, 9000000)
report = tls.DeliveryReport(0, (2026, 1, 3, 0, 0), [
    tls.TankDeliveries(1, "1", [second, first]),  # the console lists the most recent first
    tls.TankDeliveries(2, "3", [other_tank]),
])
ledger = tank_driver.DeliveryLedger()
fresh = ledger.fresh(report)
assert sorted([(tank, key) for tank, _, key in fresh]) == [
    (1, "01:2601010800:2601010830"), (1, "01:2601020900:2601020945"),
    (2, "02:2601020900:2601020945")]
tank_one = [d for tank, d, _ in fresh if tank == 1]
assert tank_one == [first, second]  # oldest first
for _, _, key in fresh[:2]:
    ledger.mark(key)  # the recorder took two; the third is still to record
assert [key for _, _, key in ledger.fresh(report)] == [fresh[2][2]]
ledger.mark(fresh[2][2])
assert ledger.fresh(report) == []
# After a restart with the persisted keys, nothing is new.
restarted = tank_driver.DeliveryLedger(ledger.seen())
assert restarted.fresh(report) == []
# The console dropped tank 1's oldest record: its key is forgotten, tank 2's are kept.
restarted.fresh(tls.DeliveryReport(1, (2026, 1, 3, 0, 0), [tls.TankDeliveries(1, "1", [second])]))
assert restarted.seen() == ["01:2601020900:2601020945", "02:2601020900:2601020945"]


# --- the scale driver against a scripted line -----------------------------------------------
class ScriptedScale:
    """An in-memory line: each command is answered from ``replies`` (name -> bytes), or not at
    all when the name is missing; ``noise`` goes out before the next answer."""

    def __init__(self, replies):
        self.replies = replies
        self.noise = b""
        self._out = b""

    def write(self, data):
        name = data.decode().strip()
        if name in self.replies:
            self._out += self.noise + self.replies[name]
            self.noise = b""

    def read(self):
        data, self._out = self._out, b""
        return data


class ListRecorder:
    def __init__(self):
        self.calls = []

    def weighing(self, device, body):
        self.calls.append(("weighing", body["net_mg"]))

    def event(self, event_type, device=None, **fields):
        self.calls.append(("event", event_type, fields))

    def device_facts(self, device_key, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        self.calls.append(("facts", identity, param_checksum))

    def link_state(self, link, up, error_count):
        self.calls.append(("link", up))

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def sale_line(txn, net_kg):
    return ("MST A %d S %10s kg      0.000 kg %10s kg 1000 1000 0 N      0.000 kg Z 900\r\n"
            % (txn, net_kg, net_kg)).encode()


line = ScriptedScale({
    "I2": b'I2 A "MS-PS15 15.000 kg"\r\n',
    "I4": b'I4 A "MS00000001"\r\n',
    "MSI": b"MSI A     15.000 kg      0.005 kg      0.005 kg III\r\n",
    "MSC": b"MSC A 4\r\n",
    "MST": b"MST I\r\n",
})
recorder = ListRecorder()
driver = scale_driver.ScaleDriver(line, recorder, "MS00000001", facts_ms=0, reply_timeout_ms=30,
                                  lost_after=2, error_report_ms=0, last_sale_number=10)


def cycle():
    asyncio.run(driver.poll_once())
    return recorder.take()


assert cycle() == [("link", True), ("facts", "MS-PS15/MS00000001",
                                    "MSC 4 MSI 15000000 5000 5000 III")]
line.replies["MST"] = sale_line(10, "1.000")
assert cycle() == []  # sale 10 was recorded before the restart
line.replies["MST"] = sale_line(13, "2.000")
assert cycle() == [("event", "records_dropped", {"dropped_count": 2}), ("weighing", 2000000)]
assert driver.last_sale_number == 13
assert cycle() == []  # the same sale again: nothing
line.replies["MSC"] = b"MSC A 5\r\n"
assert cycle() == [("facts", None, "MSC 5 MSI 15000000 5000 5000 III")]

# Garbage and a bad sale line before the answer: counted, never a value.
line.noise = b"\xff\x00junk\r\nMST A 14 S bad\r\n"
line.replies["MST"] = sale_line(14, "0.500")
assert cycle() == [("weighing", 500000), ("event", "link_errors", {
    "link": "scale", "crc_errors": 0, "timeouts": 0, "framing_errors": 2}), ("link", True)]
# ES (a scale without the extension answering MST): an answer, not a value.
line.replies["MST"] = b"ES\r\n"
assert cycle() == [("event", "link_errors", {"link": "scale", "crc_errors": 0, "timeouts": 0,
                                             "framing_errors": 3}), ("link", True)]
# Silence: lost after two unanswered sends; back with a reconnect that re-reads the facts.
del line.replies["MSC"]
calls = cycle()
assert ("event", "link_lost", {"link": "scale"}) in calls and ("link", False) in calls, calls
line.replies["MSC"] = b"MSC A 5\r\n"
line.replies["MST"] = sale_line(14, "0.500")
calls = cycle()
assert calls[0][:2] == ("event", "link_restored") and ("link", True) in calls, calls
assert ("facts", "MS-PS15/MS00000001", "MSC 5 MSI 15000000 5000 5000 III") in calls
assert not [c for c in calls if c[0] == "weighing"]

print("PASS scale_tank_driver_checks")
