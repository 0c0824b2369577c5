"""The gateway half of `meterseal drill` and `meterseal bench`; runs on the MicroPython unix port.

Usage: drill_gateway.py WORKDIR COUNT SOFTWARE_DIGEST_HEX table|no_table

Creates the gateway key at first boot (WORKDIR/gateway.key), then signs COUNT chained records of
a small forecourt and market stall: a boot event, fuel sales on two nozzles with running
totalizers, price-scale weighings, tank inventories and heartbeats. Each COSE_Sign1 envelope is
appended to WORKDIR/records.bin as a 4-byte big-endian length and the envelope bytes. One JSON
line on stdout reports the public key and the signing times.
"""

import gc
import json
import struct
import sys
from binascii import hexlify, unhexlify
from hashlib import sha256

import ticks
from meterseal.firmware import p256, signer
from meterseal.protocol import cose, records

GATEWAY_ID = "MS-GW-0001"
DISPENSER = 0x50
UNIT_PRICE_MINOR_PER_KL = (0, 789000, 832000)  # by nozzle: 7.89 and 8.32 yuan/L
SCALE_UNIT_PRICE_MINOR_PER_KG = 1280  # 12.80 yuan/kg
EPOCH_2026_MS = 1767225600000

class Gateway:
    """Just enough of the recorder to produce a realistic, correctly chained stream."""

    def __init__(self, key, software_digest, out):
        self.key = key
        self.kid = cose.kid_for(key.public_key())
        self.software_digest = software_digest
        self.out = out
        self.seq = 0
        self.prev = bytes(32)
        self.opsec = 0
        self.sign_us = []

    def emit(self, kind, body, device=None):
        values = {
            "version": records.SCHEMA_VERSION,
            "gateway_id": GATEWAY_ID,
            "boot_epoch": 1,
            "seq": self.seq,
            "prev": self.prev,
            "opsec": self.opsec,
            "wall_time_ms": EPOCH_2026_MS + self.opsec * 1000,
            "time_status": "S",
            "clock_set_count": 0,
            "event_count": 0,
            "software_name": "meterseal-gw",
            "software_version": "0.1.0",
            "software_digest": self.software_digest,
            "kind": kind,
            "body": body,
        }
        if device is not None:
            values["device"] = device
        payload = records.encode(values)
        start = ticks.now_us()
        envelope = cose.sign1(payload, self.key, self.kid)
        self.sign_us.append(ticks.elapsed_us(ticks.now_us(), start))
        self.out.write(struct.pack(">I", len(envelope)))
        self.out.write(envelope)
        self.prev = sha256(envelope).digest()
        self.seq += 1
        self.opsec += 37


def fuel_sale(gw, nozzle, volume_ml, totalizers):
    price = UNIT_PRICE_MINOR_PER_KL[nozzle]
    duration_ms = volume_ml * 60 // 38  # about 38 L/min
    start_ms = EPOCH_2026_MS + gw.opsec * 1000
    flow = [volume_ml // 4] * 4
    flow[-1] += volume_ml - sum(flow)
    start_total = totalizers[nozzle]
    totalizers[nozzle] = start_total + volume_ml
    gw.emit(
        "fuel.sale",
        {
            "grade": 90 + nozzle * 2,
            "volume_ml": volume_ml,
            "unit_price_minor_per_kl": price,
            # Price computing as the dispenser does it: round half up to the minor unit.
            "amount_minor": (volume_ml * price + 500000) // 1000000,
            "start_wall_time_ms": start_ms,
            "end_wall_time_ms": start_ms + duration_ms,
            "duration_ms": duration_ms,
            "totalizer_start_ml": start_total,
            "totalizer_end_ml": totalizers[nozzle],
            "flow_interval_ms": max(100, duration_ms // 4),
            "flow_profile_ml": flow,
            "end_status": "completed",
        },
        {"dispenser_address": DISPENSER, "nozzle": nozzle},
    )


def weighing(gw, net_g):
    net_mg = net_g * 1000
    gw.emit(
        "scale.weighing",
        {
            "gross_mg": net_mg + 12000,
            "tare_mg": 12000,
            "net_mg": net_mg,
            "tare_mode": "weighed",
            "e_mg": 5000,
            "d_mg": 5000,
            "max_mg": 30000000,
            "stable": True,
            "centre_of_zero": False,
            "unit_price_minor_per_kg": SCALE_UNIT_PRICE_MINOR_PER_KG,
            "amount_minor": (net_mg * SCALE_UNIT_PRICE_MINOR_PER_KG + 500000) // 1000000,
            "plu": 101,
            "load_to_stable_ms": 640,
        },
        {"scale_id": "SC-07"},
    )


def main(argv):
    if len(argv) != 5 or argv[4] not in ("table", "no_table"):
        print("usage: drill_gateway.py WORKDIR COUNT SOFTWARE_DIGEST_HEX table|no_table")
        return 2
    workdir, count, digest = argv[1], int(argv[2]), unhexlify(argv[3])
    table = p256.Table() if argv[4] == "table" else None
    try:
        key = signer.load_or_create(workdir + "/gateway.key", table)
    except signer.KeyStoreError as e:
        print("error:", e)
        return 1
    totalizers = [0, 1250000, 873000]
    tank_ml = 18000000
    with open(workdir + "/records.bin", "wb") as out:
        gw = Gateway(key, digest, out)
        gw.emit("event", {"event_type": "boot", "reset_cause": "power_on"})
        while gw.seq < count:
            step = gw.seq % 10
            if step == 9:
                gw.emit(
                    "status",
                    {
                        "totalizers": [
                            {"dispenser_address": DISPENSER, "nozzle": n, "totalizer_ml": totalizers[n]}
                            for n in (1, 2)
                        ],
                        "links": [{"link": "dispenser", "up": True, "error_count": 0}],
                        "journal_used_bytes": gw.seq * 420,
                        "journal_capacity_bytes": 4194304,
                        "journal_unacked_records": gw.seq,
                        "records_dropped_total": 0,
                    },
                )
            elif step == 4:
                weighing(gw, 250 + gw.seq * 7 % 900)
            elif step == 7:
                gw.emit(
                    "tank.inventory",
                    {"volume_ml": tank_ml, "product_height_um": tank_ml // 12,
                     "temperature_centi_c": 1830},
                    {"tank_number": 1},
                )
            else:
                volume_ml = 5000 + gw.seq * 3271 % 45000
                tank_ml -= volume_ml
                fuel_sale(gw, 1 + gw.seq % 2, volume_ml, totalizers)
    gw.sign_us.sort()
    gc.collect()
    print(
        json.dumps(
            {
                "public_key": hexlify(key.public_key()).decode(),
                "records": gw.seq,
                "sign_p50_ms": gw.sign_us[len(gw.sign_us) // 2] / 1000,
                "sign_max_ms": gw.sign_us[-1] / 1000,
                "mem_free": gc.mem_free() if hasattr(gc, "mem_free") else None,
            }
        )
    )
    return 0


sys.exit(main(sys.argv))
