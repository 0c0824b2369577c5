"""The recorder: observations from the drivers become signed, chained records in the journal.

For every record it fills the header (DESIGN.md section 4): the next ``seq`` from the persistent
State, ``prev`` = SHA-256 of the previous envelope, the boot epoch, operating seconds, wall time
with its status, the clock-set and event counters, the software identification. It then builds
the payload (protocol/records.py), signs it as COSE_Sign1 and appends it to the journal.

Counters that must never go back (event_count, clock_set_count) are saved *before* the record
that shows them is signed: after a power cut the next record carries a higher value, never a
repeated one.

Journal full: the record is dropped (the journal counts it and its seq stays used), a
``journal_full`` event is signed once per episode from the space the journal holds back, and when
room returns a ``records_dropped`` event says how many were lost and which seqs.

Device facts: the first time a device's identity, parameter checksum, K-factors or software id
is seen it is stored quietly (each sale carries them anyway); any later change is signed as
``device_identity_changed``, ``parameter_change`` or ``calibration``.
"""

import gc
from hashlib import sha256

from meterseal.firmware.signer import (commit_next_key, read_announcement, stage_next_key,
                                       staged_public_key, write_announcement)
from meterseal.firmware.journal import JournalFull
from meterseal.protocol import cose, records

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


# The host's clock and ours may disagree by this much before ours is stepped (and a time_set
# signed); below it the difference is network delay, not a wrong clock.
TIME_STEP_THRESHOLD_MS = const(2000)
# Room for a records_dropped event's envelope (about 300 bytes): once the journal has that much
# again, the loss is reported before anything else.
_DROP_REPORT_BYTES = const(512)
_ZERO_PREV = bytes(32)
_HEX = "0123456789abcdef"


def device_key(device):
    """A stable text key for a device reference, e.g. "dispenser_address=80,nozzle=1"."""
    return ",".join("%s=%s" % (name, device[name]) for name in sorted(device))


def _text(value):
    # Facts can be bytes (a checksum) or numbers; parameter_change carries text.
    if isinstance(value, (bytes, bytearray)):
        return "".join(_HEX[b >> 4] + _HEX[b & 15] for b in value)
    return str(value)


class Recorder:
    """``clock`` is the HAL board (``measure_ms``, ``ticks_diff``, ``wall_ms``, ``set_wall_ms``);
    ``identity`` holds gateway_id, software_name, software_version and software_digest."""

    def __init__(self, state, journal, signer, clock, identity, key_path=None,
                 time_step_threshold_ms=TIME_STEP_THRESHOLD_MS):
        self._state = state
        self._journal = journal
        self._signer = signer
        self._key_path = key_path  # the software key's file, for rotation; None: cannot rotate
        self._kid = cose.kid_for(signer.public_key())
        self._clock = clock
        self._time_step_threshold_ms = time_step_threshold_ms
        self._identity = identity
        self._prev = _ZERO_PREV
        self._opsec_ms = state.opsec * 1000
        self._opsec_measured_at = clock.measure_ms()
        self._time_status = "U"
        self._full = False
        self._links = {}

    # --- boot ----------------------------------------------------------------------------

    def start(self, reset_cause):
        """Count the boot, continue the chain from the journal's newest record, and sign the
        boot record, then what recovery found."""
        recovery = self._journal.recovery
        first = self._state.begin_boot(self._journal.highest_seq(),
                                       journal_intact=not recovery["bytes_truncated"])
        last = self._journal.last()
        if last is not None:
            self._prev = sha256(last[1]).digest()
        self._emit("event", {"event_type": "boot", "reset_cause": reset_cause}, seq=first)
        if recovery["bytes_truncated"]:
            fields = {"bytes_truncated": recovery["bytes_truncated"]}
            if recovery["last_good_seq"] is not None:
                fields["last_good_seq"] = recovery["last_good_seq"]
            self.event("journal_recovered", **fields)
        if self._key_path is not None and staged_public_key(self._key_path) is not None:
            self._rotate_key()  # the power went while a rotation was under way: finish it

    # --- observations (docs/gateway.md) ---------------------------------------------------

    def sale(self, device, body):
        return self._emit("fuel.sale", body, device)

    def weighing(self, device, body):
        return self._emit("scale.weighing", body, device)

    def tank_inventory(self, device, body):
        return self._emit("tank.inventory", body, device)

    def tank_delivery(self, device, body):
        return self._emit("tank.delivery", body, device)

    def event(self, event_type, device=None, **fields):
        body = {"event_type": event_type}
        for name in fields:
            body[name] = fields[name]
        if event_type in records.AUDIT_EVENT_TYPES:
            self._state.event_count += 1
            self._state.save()
        return self._emit("event", body, device)

    def device_facts(self, device, identity=None, software_id=None, param_checksum=None,
                     k_factors=None):
        key = device_key(device)
        state = self._state
        changed = False
        for name, value in (("identity", identity), ("software_id", software_id),
                            ("param_checksum", param_checksum),
                            ("k_factors", None if k_factors is None else list(k_factors))):
            if value is None:
                continue
            old = state.device_fact(key, name)
            if old == value:
                continue
            if old is not None:
                self._fact_changed(device, name, old, value)
            state.set_device_fact(key, name, value)
            changed = True
        # Drivers report facts with every sale; the state is written only when one moved.
        if changed:
            state.save()

    def _fact_changed(self, device, name, old, new):
        if name == "identity":
            self.event("device_identity_changed", device, old_identity=old, new_identity=new)
        elif name == "k_factors":
            for index, new_k in enumerate(new):
                old_k = old[index] if index < len(old) else None
                if old_k is not None and new_k and old_k != new_k:
                    nozzle_device = dict(device)
                    nozzle_device["nozzle"] = index + 1
                    self.event("calibration", nozzle_device, old_k_factor_pulses_per_kl=old_k,
                               new_k_factor_pulses_per_kl=new_k)
        else:
            self.event("parameter_change", device, parameter_id=name,
                       old_value=_text(old)[:64], new_value=_text(new)[:64])

    def totalizer(self, device, totalizer_ml, amount_totalizer_minor=None, keep=False):
        value = [totalizer_ml] if amount_totalizer_minor is None else [totalizer_ml, amount_totalizer_minor]
        key = device_key(device)
        if self._state.totalizers.get(key) == value:
            return
        self._state.totalizers[key] = value
        if keep:
            # Persisted at once, once the journal holds every record before it: the DART master
            # reports a sale's end totals after the sale, so after a power cut last_totalizer()
            # tells a sale the pump still shows from one already recorded.
            self._journal.flush()
            self._state.save()

    def last_totalizer(self, device):
        """[mL] or [mL, amount minor] last reported for a nozzle (persisted if with keep), or
        None."""
        return self._state.totalizers.get(device_key(device))

    def link_state(self, link, up, error_count):
        self._links[link] = (up, error_count)

    # --- heartbeat, time, commands ---------------------------------------------------------

    def heartbeat(self):
        """Sign a status record and persist the counters (opsec among them)."""
        totalizers = []
        for key in sorted(self._state.totalizers):
            entry = dict(pair.split("=") for pair in key.split(","))
            if "dispenser_address" not in entry or "nozzle" not in entry:
                continue
            value = self._state.totalizers[key]
            item = {"dispenser_address": int(entry["dispenser_address"]),
                    "nozzle": int(entry["nozzle"]), "totalizer_ml": value[0]}
            if len(value) > 1 and value[1] is not None:
                item["amount_totalizer_minor"] = value[1]
            totalizers.append(item)
        links = [{"link": name, "up": self._links[name][0], "error_count": self._links[name][1]}
                 for name in sorted(self._links)]
        stats = self._journal.stats()
        body = {
            "totalizers": totalizers[:records.MAX_TOTALIZER_ENTRIES],
            "links": links[:records.MAX_LINK_ENTRIES],
            "journal_used_bytes": stats["used_bytes"],
            "journal_capacity_bytes": stats["capacity_bytes"],
            "journal_unacked_records": stats["unacked_records"],
            "records_dropped_total": stats["dropped_total"],
        }
        # MicroPython only (CPython's gc cannot tell): the heap right after a collection, so the
        # host sees a leak as a figure climbing from one status to the next.
        if hasattr(gc, "mem_alloc"):
            gc.collect()
            body["heap_used_bytes"] = gc.mem_alloc()
            body["heap_free_bytes"] = gc.mem_free()
        self._state.opsec = self._opsec()
        self._state.save()
        return self._emit("status", body)

    def host_time(self, host_ms):
        """The host's time from an ACK: step our wall clock when it is off by more than the
        threshold, signing a time_set; either way our time is synchronised from now on.
        Every ACK comes with one, and an ACK is what frees journal space: a loss to a full
        journal is signed now, not only with the next observation (hours away when idle)."""
        self._report_drops()
        ours = self._clock.wall_ms()
        if abs(host_ms - ours) > self._time_step_threshold_ms:
            self._state.clock_set_count += 1
            self._state.save()
            self._clock.set_wall_ms(host_ms)
            self._time_status = "S"
            self._emit("event", {"event_type": "time_set", "old_wall_time_ms": max(ours, 0),
                                 "new_wall_time_ms": host_ms, "source": "host"})
        self._time_status = "S"

    def command(self, name, args):
        """A host COMMAND; returns a result dict ({"error": ...} for what is not understood)."""
        if name == "read_totalizers":
            return {"seq": self.heartbeat()}
        if name == "set_heartbeat_interval":
            seconds = args.get("seconds") if isinstance(args, dict) else None
            if not isinstance(seconds, int) or not 10 <= seconds <= 86400:
                return {"error": "seconds must be an integer in 10..86400"}
            self._state.heartbeat_interval_s = seconds
            self._state.save()
            return {"heartbeat_interval_s": seconds}
        if name == "rotate_key":
            if self._key_path is None:
                return {"error": "this gateway's key is not stored in a file it can rotate"}
            stage_next_key(self._key_path)
            seq = self._rotate_key()
            if seq is None:
                return {"error": "the journal is full: the key stays as it is"}
            return {"seq": seq, "new_public_key": self._signer.public_key()}
        return {"error": "unknown command %r" % (name,)}

    def key_announcement(self):
        """The signed key_rotated record announcing the current key, for the uplink's HELLO, or
        None while the first key is in use."""
        return None if self._key_path is None else read_announcement(self._key_path)

    def _rotate_key(self):
        """Announce the staged key in a record signed with the current one, make that record
        durable, then switch to the staged key. Returns the announcement's seq, or None (and
        the old key stays) when the journal had no room for it."""
        seq = self.event("key_rotated", new_public_key=staged_public_key(self._key_path))
        if seq is None:
            return None
        self._journal.flush()
        write_announcement(self._key_path, self._journal.last()[1])
        commit_next_key(self._key_path, self._signer)
        self._kid = cose.kid_for(self._signer.public_key())
        return seq

    # --- the record path ---------------------------------------------------------------------

    def _opsec(self):
        # Added up step by step: a 32-bit board's ticks wrap every 12.4 days, and ticks_diff is
        # right only over half that; a record or status comes far more often.
        now = self._clock.measure_ms()
        self._opsec_ms += self._clock.ticks_diff(now, self._opsec_measured_at)
        self._opsec_measured_at = now
        return self._opsec_ms // 1000

    def _emit(self, kind, body, device=None, seq=None):
        """Build, sign and journal one record; its seq, or None when the journal had no room."""
        self._report_drops()
        if seq is None:
            seq = self._state.next_seq()
        # The journal's own loss reports may use the space it holds back for them.
        reserved = kind == "event" and body.get("event_type") in ("journal_full", "records_dropped")
        journaled = self._append(seq, self._sign(seq, kind, body, device), reserved)
        return seq if journaled else None

    def _sign(self, seq, kind, body, device):
        identity = self._identity
        values = {
            "version": records.SCHEMA_VERSION,
            "gateway_id": identity["gateway_id"],
            "boot_epoch": self._state.boot_epoch,
            "seq": seq,
            "prev": self._prev,
            "opsec": self._opsec(),
            "wall_time_ms": max(self._clock.wall_ms(), 0),
            "time_status": self._time_status,
            "clock_set_count": self._state.clock_set_count,
            "event_count": self._state.event_count,
            "software_name": identity["software_name"],
            "software_version": identity["software_version"],
            "software_digest": identity["software_digest"],
            "kind": kind,
            "body": body,
        }
        if device is not None:
            values["device"] = device
        return cose.sign1(records.encode(values), self._signer, self._kid)

    def _append(self, seq, envelope, reserved):
        try:
            self._journal.append(seq, envelope, reserved)
        except JournalFull:
            if not self._full and not reserved:
                self._full = True
                stats = self._journal.stats()
                self._emit("event", {"event_type": "journal_full",
                                     "journal_used_bytes": stats["used_bytes"],
                                     "journal_capacity_bytes": stats["capacity_bytes"],
                                     "journal_unacked_records": stats["unacked_records"]})
            return False
        self._prev = sha256(envelope).digest()
        return True

    def _report_drops(self):
        # Once the host has acknowledged enough to make room, say what was lost, first.
        drops = self._journal.dropped()
        if drops is None or not self._journal.has_room(_DROP_REPORT_BYTES):
            return
        count, first, last = drops
        self._journal.dropped_reported()
        self._full = False
        self._emit("event", {"event_type": "records_dropped", "dropped_count": count,
                             "first_dropped_seq": first, "last_dropped_seq": last})
