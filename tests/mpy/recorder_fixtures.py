# What the recorder scripts share (recorder_checks.py, key_rotation_checks.py): a hand-driven
# clock, a scratch directory, a sale body, and reading back what the journal holds.
import os
from hashlib import sha256

from meterseal.protocol import cose, records

IDENTITY = {"gateway_id": "GW-TEST-1", "software_name": "meterseal-gw",
            "software_version": "0.1.0", "software_digest": bytes(range(32))}
NOZZLE = {"dispenser_address": 0x50, "nozzle": 1}


class Clock:
    def __init__(self):
        self.ticks = 0
        self.wall = 1767225600000

    def ticks_ms(self):
        return self.ticks

    measure_ms = ticks_ms  # durations on the same clock, as on a board

    def ticks_diff(self, a, b):
        return a - b

    def wall_ms(self):
        return self.wall + self.ticks

    def set_wall_ms(self, ms):
        self.wall = ms - self.ticks


def remove_tree(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = path + "/" + name
        try:
            os.remove(full)
        except OSError:
            remove_tree(full)
    os.rmdir(path)


def sale_body(volume_ml):
    return {"grade": 1, "volume_ml": volume_ml, "unit_price_minor_per_kl": 789000,
            "amount_minor": (volume_ml * 789000 + 500000) // 1000000,
            "start_wall_time_ms": 1767225600000, "end_wall_time_ms": 1767225660000,
            "duration_ms": 60000, "flow_interval_ms": 1000, "flow_profile_ml": [volume_ml],
            "end_status": "completed"}


def all_records(journal):
    out = []
    for seq, envelope in journal.pending(1000):
        out.append((seq, envelope, records.parse(cose.parse_sign1(envelope).payload)))
    return out


def check_chain(entries, first_prev):
    prev = first_prev
    for seq, envelope, record in entries:
        assert record["seq"] == seq and record["prev"] == prev, (seq, record["seq"])
        prev = sha256(envelope).digest()
