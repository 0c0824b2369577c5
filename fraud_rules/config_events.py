"""Configuration events and heartbeat gaps: changes to what a device measures or who it is with
no authorised work order, silent changes seen only in the sales, and a gateway silent while the
totalizers moved (docs/detectors.md, "Configuration events", "Heartbeat gaps")."""

from .dispenser_integrity import sale_totals, status_refs
from .engine import Detector, dispenser_key
from .facts import AUTHORISED_WORK
from .finding import litres, percent, utc_text

_SEVERITY = {"calibration": "high", "device_identity_changed": "high", "seal_open": "medium",
             "parameter_change": "medium", "software_update": "medium"}
_WORK_ZH = {"seal_open": "打开铅封", "parameter_change": "参数修改", "calibration": "标定",
            "device_identity_changed": "设备身份变更", "software_update": "软件更新"}
# Sale fields that identify a dispenser's metrology, and the work that may change each.
_SILENT_FIELDS = {"dispenser_param_checksum": ("parameter_change", "calibration"),
                  "dispenser_identity": ("device_identity_changed",),
                  "dispenser_software_id": ("software_update", "parameter_change")}


def device_words(device):
    """(English, Chinese) name of the kind of device an event concerns."""
    if not device:
        return "gateway", "网关"
    if "scale_id" in device:
        return "scale", "秤"
    if "tank_number" in device:
        return "tank gauge", "液位仪"
    return "dispenser", "加油机"


def _text(value):
    return value.hex() if isinstance(value, bytes) else value


class UnauthorisedChange(Detector):
    """Events of AUTHORISED_WORK types not covered by a work order; an authorised calibration
    that moves a K-factor further than a correct one could (rule config.large_calibration); and
    a dispenser parameter checksum, identity or software id that changes between two sales with
    no event or work order for it (rule config.silent_change)."""

    name = "config.unauthorised_change"
    kinds = ("event", "fuel.sale")

    def feed(self, entry, state):
        if entry.kind == "fuel.sale":
            return self._sale(entry, state)
        work = entry.event_type
        if work not in AUTHORISED_WORK:
            return []
        dispenser = dispenser_key(entry)
        if dispenser is not None:
            state.setdefault("events", {})[dispenser] = entry.seq
        body = entry.body
        if work == "device_identity_changed" and body.get("old_identity") is None:
            return []  # first sighting, not a change
        old_k, new_k = body.get("old_k_factor_pulses_per_kl"), body.get(
            "new_k_factor_pulses_per_kl")
        order = self.facts.work_order(entry.site_id, entry.gateway_id, entry.device_ref, work,
                                      entry.wall_time_ms)
        if order:
            if work == "calibration" and old_k and new_k:
                return self._large_calibration(entry, order, old_k, new_k)
            return []
        detail_en, detail_zh = "", ""
        if work == "calibration" and old_k and new_k:
            change = f"{(new_k - old_k) / old_k * 100:+.2f} %"
            detail_en = f" K-factor {old_k} -> {new_k} pulses per kL ({change})."
            detail_zh = f"K 系数每千升 {old_k} -> {new_k} 个脉冲（{change}）。"
        elif work == "device_identity_changed":
            detail_en = f" Identity {body['old_identity']} -> {body['new_identity']}."
            detail_zh = f"身份 {body['old_identity']} -> {body['new_identity']}。"
        elif work == "parameter_change":
            old = body.get("old_value", "?")
            detail_en = f" Parameter {body['parameter_id']}: {old} -> {body['new_value']}."
            detail_zh = f"参数 {body['parameter_id']}：{old} -> {body['new_value']}。"
        what_en, what_zh = device_words(entry.device)
        ref = entry.device_ref or entry.gateway_id
        at = utc_text(entry.wall_time_ms)
        return [self.finding(
            entry, severity=_SEVERITY[work], score=0.8 if _SEVERITY[work] == "high" else 0.5,
            en=(f"{work} on {what_en} {ref} at {at} (event seq {entry.seq}) with no authorised "
                f"work order covering it; expected a work order for this device and time."
                + detail_en),
            zh=(f"{what_zh} {ref} 于 {at} 发生{_WORK_ZH[work]}（事件 seq {entry.seq}），"
                f"没有覆盖它的授权工单；此设备此时应有工单。" + detail_zh),
            observed={"event_type": work, **{k: _text(v) for k, v in body.items()
                                             if k != "event_type"}},
            evidence=[entry.record_id])]

    def _large_calibration(self, entry, order, old_k, new_k):
        """An authorised calibration's K step beyond max_authorised_k_step: the detectors
        relearn after it, so its size is the one thing left to judge."""
        step = old_k / new_k - 1  # the change in the volume the dispenser shows
        limit = self.params["max_authorised_k_step"]
        if abs(step) <= limit:
            return []
        ref, at = entry.device_ref, utc_text(entry.wall_time_ms)
        nozzle = "nozzle" in (entry.device or {})
        what_en, what_zh = ("nozzle", "油枪") if nozzle else ("dispenser", "加油机")
        return [self.finding(
            entry, rule="config.large_calibration", severity="medium",
            score=min(1.0, 0.5 + abs(step) * 10),
            en=(f"Calibration of {what_en} {ref} at {at} (event seq {entry.seq}) under work "
                f"order {order.work_order_id}: K-factor {old_k} -> {new_k} pulses per kL moves "
                f"the volume shown by {percent(step)}; expected within ±{limit * 100:.2f} %, the "
                f"most a correct calibration of a meter within its accuracy class can move it. "
                f"Either the meter was that far out before, or the new K is wrong."),
            zh=(f"{what_zh} {ref} 于 {at} 在工单 {order.work_order_id} 下标定（事件 seq {entry.seq}）："
                f"K 系数每千升 {old_k} -> {new_k} 个脉冲，使显示油量变化 {percent(step)}；应在 "
                f"±{limit * 100:.2f} % 以内，即正确标定准确度等级内的流量计所能改变的最大量。"
                f"要么此前流量计已偏差这么多，要么新的 K 系数有误。"),
            observed={"old_k_factor_pulses_per_kl": old_k, "new_k_factor_pulses_per_kl": new_k,
                      "volume_step": round(step, 6), "work_order_id": order.work_order_id},
            evidence=[entry.record_id])]

    def _sale(self, entry, state):
        if _SILENT_FIELDS.keys().isdisjoint(entry.body):
            return []  # a dispenser that reports none of them: nothing to compare
        address = entry.device["dispenser_address"]
        key = dispenser_key(entry)
        dispensers = state.get("dispensers")
        if dispensers is None:  # not setdefault: its default would be built on every sale
            dispensers = state["dispensers"] = {}
        known = dispensers.get(key)
        if known is None:
            known = dispensers[key] = {}
        event_seq = state.get("events", {}).get(key)
        findings = []
        for field, works in _SILENT_FIELDS.items():
            value = _text(entry.body.get(field))
            if value is None:
                continue
            before = known.get(field)
            if before is not None and before[0] == value:
                before[1], before[2] = entry.record_id, entry.seq  # the last sale showing it
                continue
            known[field] = [value, entry.record_id, entry.seq]
            if before is None:
                continue
            if event_seq is not None and event_seq > before[2]:
                continue  # an event between the two sales announced it (judged above)
            if any(self.facts.work_order(entry.site_id, entry.gateway_id, str(address), work,
                                         entry.wall_time_ms) for work in works):
                continue
            at = utc_text(entry.wall_time_ms)
            findings.append(self.finding(
                entry, rule="config.silent_change", severity="high", score=0.85,
                device=str(address),
                en=(f"Dispenser {address}: {field} changed from {before[0]} (sale seq "
                    f"{before[2]}) to {value} (sale seq {entry.seq}, {at}) with no event and no "
                    f"work order; expected it unchanged."),
                zh=(f"加油机 {address}：{field} 由 {before[0]}（交易 seq {before[2]}）变为 "
                    f"{value}（交易 seq {entry.seq}，{at}），既无事件也无工单；应保持不变。"),
                observed={"field": field, "old": before[0], "new": value},
                evidence=[before[1], entry.record_id]))
        return findings


class HeartbeatGap(Detector):
    """Wall-time silence between a gateway's consecutive records. Each nozzle's totalizer before
    the silence is kept; the first sale with totals after it settles whether the nozzle moved
    more than the sales recorded since (a status after the silence is not judged: it may be read
    mid-sale)."""

    name = "gateway.heartbeat"
    kinds = ("fuel.sale", "status", "event", "scale.weighing", "tank.inventory",
             "tank.delivery")

    def feed(self, entry, state):
        gateway = state.get(entry.gateway_id)
        if gateway is None:  # not setdefault: its default would be built on every record
            gateway = state[entry.gateway_id] = {"totals": {}, "open": {}}
        findings = []
        # An unsynchronised wall time (a boot before the host gave the time) measures no
        # silence, neither to it nor from it.
        synchronised = entry.record["time_status"] != "U"
        last_ms = gateway.get("last_ms")
        silence = entry.wall_time_ms - last_ms if last_ms is not None and synchronised else 0
        if silence > self.params["silence_ms"]:
            findings += self._silence(entry, gateway, silence)
        if entry.kind == "fuel.sale":
            findings += self._sale(entry, gateway)
        elif entry.kind == "status":
            totals = gateway["totals"]
            for ref, total in status_refs(entry.body):
                # A status may lag the sale recorded just before it: keep the higher value.
                totals[ref] = max(total, totals.get(ref, total))
        gateway["last_ms"] = entry.wall_time_ms if synchronised else None
        gateway["last_rid"], gateway["last_seq"] = entry.record_id, entry.seq
        gateway["last_event"] = entry.event_type
        return findings

    def _silence(self, entry, gateway, silence):
        for ref, total in gateway["totals"].items():
            # An earlier unsettled silence keeps its (earlier) baseline.
            gateway["open"].setdefault(ref, [total, gateway["last_ms"], gateway["last_rid"],
                                             gateway["last_seq"], 0])
            gateway["open"][ref][4] = max(gateway["open"][ref][4], silence)
        explained = gateway.get("last_event") in ("power_fail", "shutdown")
        if silence <= self.params["long_silence_ms"] or explained:
            return []
        at = utc_text(entry.wall_time_ms)
        hours = silence / 3600000
        limit_h = self.params["long_silence_ms"] / 3600000
        return [self.finding(
            entry, rule=f"{self.name}.long_silence", severity="low", score=0.3, device=None,
            en=(f"Gateway {entry.gateway_id} was silent for {hours:.1f} h, from seq "
                f"{gateway['last_seq']} at {utc_text(gateway['last_ms'])} to seq {entry.seq} at "
                f"{at}; expected a heartbeat at least every {limit_h:g} h."),
            zh=(f"网关 {entry.gateway_id} 静默 {hours:.1f} 小时：从 seq {gateway['last_seq']}"
                f"（{utc_text(gateway['last_ms'])}）到 seq {entry.seq}（{at}）；"
                f"应至少每 {limit_h:g} 小时有心跳。"),
            observed={"silence_ms": silence}, evidence=[gateway["last_rid"], entry.record_id])]

    def _sale(self, entry, gateway):
        ref = entry.device_ref
        totals = sale_totals(entry.body)
        opened = gateway["open"].get(ref)
        if totals is None:
            if ref in gateway["totals"]:
                gateway["totals"][ref] += entry.body["volume_ml"]
            return []
        gateway["totals"][ref] = totals[1]
        if opened is None:
            return []
        del gateway["open"][ref]
        before, from_ms, before_rid, before_seq, silence = opened
        moved = totals[0] - before
        if moved <= self.params["tolerance_ml"]:
            return []
        minutes = silence / 60000
        at = utc_text(entry.wall_time_ms)
        return [self.finding(
            entry, severity="high", score=min(1.0, 0.7 + moved / 200000),
            en=(f"Gateway {entry.gateway_id} unplugged while the totalizers moved by "
                f"{litres(moved)}: nozzle {ref} stood at {before} mL before a {minutes:.0f} min "
                f"silence (from seq {before_seq}, {utc_text(from_ms)}) and its next sale (seq "
                f"{entry.seq}, {at}) starts at {totals[0]} mL; expected no movement without a "
                f"sale record."),
            zh=(f"网关 {entry.gateway_id} 断开期间累计数走了 {litres(moved)}：油枪 {ref} 在 "
                f"{minutes:.0f} 分钟静默前（seq {before_seq}，{utc_text(from_ms)}）为 {before} mL，"
                f"之后第一笔交易（seq {entry.seq}，{at}）起始为 {totals[0]} mL；没有交易记录时"
                f"不应有流量。"),
            observed={"before_ml": before, "after_ml": totals[0], "moved_ml": moved,
                      "silence_ms": silence},
            evidence=[before_rid, entry.record_id])]


DETECTORS = (UnauthorisedChange, HeartbeatGap)
