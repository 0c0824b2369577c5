"""Dispenser integrity: what one sale, or consecutive sales of one nozzle, show without any
statistics. Totalizer continuity, price computing, flow physics and the gateway's own pulse
count (docs/detectors.md, "Dispenser integrity").

Sustained conditions raise one finding per nozzle and check; ``latched`` re-arms the check after
``rearm_after_clean_sales`` consecutive clean sales, so a rewritten back office or a fitted board
is one alert, not one per sale.
"""

from .engine import Detector
from .finding import litres, percent, utc_text
from .stats import ewma, median, push_window

_PPM = 1000000


def latched(latches, key, bad, rearm_after):
    """True when ``bad`` should raise a finding now: the first bad check, or the first after
    ``rearm_after`` consecutive clean ones. ``latches`` {key: clean checks since it fired}."""
    if bad:
        fire = key not in latches
        latches[key] = 0
        return fire
    if key in latches:
        latches[key] += 1
        if latches[key] >= rearm_after:
            del latches[key]
    return False


def status_refs(body):
    """(device_ref, totalizer_ml) of a status record's totalizer entries."""
    return [(f"{t['dispenser_address']}/{t['nozzle']}", t["totalizer_ml"])
            for t in body.get("totalizers", ())]


def sale_totals(body):
    """(start, end) totalizers of a sale, or None when it carries none."""
    start, end = body.get("totalizer_start_ml"), body.get("totalizer_end_ml")
    return None if start is None or end is None else (start, end)


class TotalizerContinuity(Detector):
    """Within a sale, end - start totalizer equals the volume; across sales, each start equals
    the nozzle's previous known totalizer plus the volume of sales recorded without totalizers.
    A status read may be taken mid-sale, so a status above the baseline is only remembered
    (``pending``) and judged at the next sale's start. A status may also lag the sale recorded
    just before it, so a status is a decrease at once only below that sale's start (``floor``);
    anything else shows at the next sale's start."""

    name = "dispenser.totalizer"
    kinds = ("fuel.sale", "status", "event", "scale.weighing", "tank.inventory", "tank.delivery")

    def feed(self, entry, state):
        gaps = state.get("gaps")
        if gaps is None:
            gaps = state["gaps"] = {}
        if entry.gap_before:
            gaps[entry.gateway_id] = gaps.get(entry.gateway_id, 0) + 1
        if entry.kind == "fuel.sale":
            return self._sale(entry, state)
        if entry.kind == "status":
            return self._status(entry, state)
        return []

    def _nozzle(self, state, key, entry, total):
        nozzles = state.get("nozzles")
        if nozzles is None:  # not setdefault: its default would be built on every sale
            nozzles = state["nozzles"] = {}
        nozzle = nozzles.get(key)
        if nozzle is None:
            nozzle = nozzles[key] = {"total": total, "floor": total, "rid": entry.record_id,
                                     "seq": entry.seq, "sold": 0, "pending": None, "latch": {},
                                     "gaps": state["gaps"].get(entry.gateway_id, 0)}
            return nozzle, True
        return nozzle, False

    def _rebase(self, nozzle, entry, total, state, floor):
        nozzle["total"], nozzle["floor"], nozzle["sold"], nozzle["pending"] = total, floor, 0, None
        nozzle["rid"], nozzle["seq"] = entry.record_id, entry.seq
        nozzle["gaps"] = state["gaps"].get(entry.gateway_id, 0)

    def _status(self, entry, state):
        tolerance = self.params["tolerance_ml"]
        findings = []
        prefix = entry.gateway_id + "|"
        for ref, total in status_refs(entry.body):
            nozzle, new = self._nozzle(state, prefix + ref, entry, total)
            if new:
                continue
            expected = nozzle["total"] + nozzle["sold"]
            if expected - tolerance <= total <= expected + tolerance:
                continue  # the common case: nothing moved
            if total < nozzle["floor"] - tolerance:
                findings += self._decrease(entry, state, nozzle, ref, nozzle["floor"], total,
                                           "status")
                self._rebase(nozzle, entry, total, state, total)
            elif total > expected + tolerance and nozzle["pending"] is None:
                nozzle["pending"] = [entry.record_id, entry.seq, total]
        return findings

    def _sale(self, entry, state):
        body = entry.body
        start, end = body.get("totalizer_start_ml"), body.get("totalizer_end_ml")
        volume = body["volume_ml"]
        key = entry.device_key
        if start is None or end is None:
            nozzle = state.get("nozzles", {}).get(key)
            if nozzle is not None:
                nozzle["sold"] += volume
            return []
        nozzle, new = self._nozzle(state, key, entry, end)
        tolerance = self.params["tolerance_ml"]
        findings = []
        # A check is judged when it is off, or when a latch of the nozzle counts clean sales:
        # nearly every sale is neither, and costs no more than these comparisons.
        if nozzle["latch"] or abs(end - start - volume) > tolerance:
            findings += self._within_sale(entry, nozzle, start, end, volume)
        if not new and (nozzle["latch"]
                        or abs(start - nozzle["total"] - nozzle["sold"]) > tolerance):
            findings += self._continuity(entry, state, nozzle, start)
        self._rebase(nozzle, entry, end, state, start)
        return findings

    def _within_sale(self, entry, nozzle, start, end, volume):
        tolerance, rearm = self.params["tolerance_ml"], self.params["rearm_after_clean_sales"]
        moved = end - start
        difference = moved - volume
        if not latched(nozzle["latch"], "sale", abs(difference) > tolerance, rearm):
            return []
        # More metered than reported: the sale was cut after the meter (a back-office rewrite).
        severity = "high" if difference > 0 else "medium"
        seq, at = entry.seq, utc_text(entry.wall_time_ms)
        return [self.finding(
            entry, rule=f"{self.name}.sale_volume", severity=severity,
            score=min(1.0, 0.6 + abs(difference) / max(volume, 1)),
            en=(f"Sale seq {seq} on nozzle {entry.device_ref} at {at}: the totalizer moved "
                f"{litres(moved)} ({start} -> {end} mL) but the sale reports {litres(volume)}; "
                f"expected equal within {self.params['tolerance_ml']} mL, off by "
                f"{difference:+d} mL."),
            zh=(f"油枪 {entry.device_ref} 的交易 seq {seq}（{at}）：累计数走了 {litres(moved)}"
                f"（{start} -> {end} mL），交易却只报 {litres(volume)}；应在 "
                f"{self.params['tolerance_ml']} mL 内相等，相差 {difference:+d} mL。"),
            observed={"totalizer_start_ml": start, "totalizer_end_ml": end,
                      "volume_ml": volume, "difference_ml": difference},
            evidence=[entry.record_id])]

    def _continuity(self, entry, state, nozzle, start):
        tolerance = self.params["tolerance_ml"]
        expected = nozzle["total"] + nozzle["sold"]
        if start < expected - tolerance:
            return self._decrease(entry, state, nozzle, entry.device_ref, expected, start, "sale")
        unrecorded = start - expected
        if not latched(nozzle["latch"], "jump", unrecorded > tolerance,
                       self.params["rearm_after_clean_sales"]):
            return []
        missing = state["gaps"].get(entry.gateway_id, 0) != nozzle["gaps"]
        pending = nozzle["pending"]
        seq, ref, at = entry.seq, entry.device_ref, utc_text(entry.wall_time_ms)
        status_en = status_zh = ""
        if pending:
            status_en = f"; status seq {pending[1]} already showed {pending[2]} mL"
            status_zh = f"；状态记录 seq {pending[1]} 已显示 {pending[2]} mL"
        if missing:
            why_en = ("Records are missing from this gateway's chain in between, so the volume "
                      "may be in a lost sale record.")
            why_zh = "其间该网关的记录链有缺失，这部分油量可能在丢失的交易记录里。"
        else:
            why_en = "No record is missing in between: fuel was dispensed with no sale recorded."
            why_zh = "其间记录完整：有油量流出却没有交易记录。"
        return [self.finding(
            entry, rule=f"{self.name}.unrecorded_volume",
            severity="low" if missing else "high",
            score=min(1.0, (0.3 if missing else 0.7) + unrecorded / 100000),
            en=(f"Nozzle {ref}: sale seq {seq} at {at} starts at totalizer {start} mL; expected "
                f"{expected} mL (seq {nozzle['seq']} ended there, plus sales without totals); "
                f"{litres(unrecorded)} ({unrecorded} mL) moved with no sale{status_en}. "
                + why_en),
            zh=(f"油枪 {ref}：交易 seq {seq}（{at}）起始累计数 {start} mL，应为 {expected} mL"
                f"（seq {nozzle['seq']} 结束于此，另加无累计数的交易）；有 {litres(unrecorded)}"
                f"（{unrecorded} mL）流出而无交易{status_zh}。" + why_zh),
            observed={"expected_start_ml": expected, "totalizer_start_ml": start,
                      "unrecorded_ml": unrecorded, "records_missing": missing},
            evidence=[nozzle["rid"], pending[0] if pending else None, entry.record_id])]

    def _decrease(self, entry, state, nozzle, ref, expected, seen, source):
        if not latched(nozzle["latch"], "decrease", True, self.params["rearm_after_clean_sales"]):
            return []
        reset = seen <= self.params["reset_near_zero_ml"]
        what_en = "reset to near zero" if reset else "went down"
        what_zh = "被清零" if reset else "倒退"
        where = "status" if source == "status" else "sale"
        where_zh = "状态记录" if source == "status" else "交易"
        drop = expected - seen
        at = utc_text(entry.wall_time_ms)
        return [self.finding(
            entry, rule=f"{self.name}.decrease", severity="critical" if reset else "high",
            device=ref, score=1.0 if reset else 0.9,
            en=(f"Nozzle {ref}: the totalizer {what_en}: {where} seq {entry.seq} at {at} shows "
                f"{seen} mL, expected at least {expected} mL (seq {nozzle['seq']}); down by "
                f"{litres(drop)} ({drop} mL). A volume totalizer never decreases."),
            zh=(f"油枪 {ref}：累计数{what_zh}：{where_zh} seq {entry.seq}（{at}）显示 {seen} mL，"
                f"应至少为 {expected} mL（seq {nozzle['seq']}）；少了 {litres(drop)}"
                f"（{drop} mL）。体积累计数不会减少。"),
            observed={"expected_min_ml": expected, "totalizer_ml": seen, "decrease_ml": drop,
                      "reset": reset},
            evidence=[nozzle["rid"], entry.record_id])]


class PriceComputing(Detector):
    """amount = round-half-up(volume × unit price) as the dispenser computes it, and the unit
    price equals the site's announced price. One finding per nozzle and check until
    ``rearm_after_clean_sales`` correct sales or a new unit price."""

    name = "dispenser.price"
    kinds = ("fuel.sale",)

    def feed(self, entry, state):
        body = entry.body
        volume, amount = body["volume_ml"], body["amount_minor"]
        price = body["unit_price_minor_per_kl"]
        nozzle = state.get(entry.device_key)
        if nozzle is None:  # not setdefault: its default would be built on every sale
            nozzle = state[entry.device_key] = {"price": None, "latch": {}}
        if nozzle["price"] != price:  # a new unit price re-arms every check
            nozzle["latch"].clear()
            nozzle["price"] = price
        rearm = self.params["rearm_after_clean_sales"]
        expected = (volume * price + _PPM // 2) // _PPM
        difference = amount - expected
        findings = []
        over = difference > self.params["tolerance_minor"]
        under = difference < -self.params["tolerance_minor"]
        # The time as text only for a finding: strftime on every clean sale was a good part of
        # this detector's cost. Likewise a check is latched() only when it is off or a latch
        # counts clean sales.
        seq, ref, latches = entry.seq, entry.device_ref, nozzle["latch"]
        if (over or under or latches) and latched(latches, "amount", over or under, rearm):
            word_en, word_zh = ("overcharged", "多收") if over else ("undercharged", "少收")
            at = utc_text(entry.wall_time_ms)
            findings.append(self.finding(
                entry, rule=f"{self.name}.amount", severity="high" if over else "medium",
                score=min(1.0, 0.5 + abs(difference) / max(expected, 1) * 10),
                en=(f"Sale seq {seq} on nozzle {ref} at {at}: {litres(volume)} at {price} minor "
                    f"units per kL should cost {expected}, the dispenser charged {amount}: "
                    f"{word_en} by {abs(difference)} minor units."),
                zh=(f"油枪 {ref} 的交易 seq {seq}（{at}）：{litres(volume)}，单价每千升 {price} "
                    f"最小货币单位，应收 {expected}，加油机收 {amount}：{word_zh} "
                    f"{abs(difference)} 个最小货币单位。"),
                observed={"volume_ml": volume, "unit_price_minor_per_kl": price,
                          "expected_amount_minor": expected, "amount_minor": amount,
                          "difference_minor": difference},
                evidence=[entry.record_id]))
        announced = self.facts.announced_price(entry.site_id, body["grade"],
                                               body["start_wall_time_ms"])
        mismatch = announced is not None and announced != price
        if (mismatch or latches) and latched(latches, "announced", mismatch, rearm):
            off = (price - announced) / announced if announced else 1.0
            at = utc_text(entry.wall_time_ms)
            findings.append(self.finding(
                entry, rule=f"{self.name}.announced", severity="medium",
                score=min(1.0, 0.4 + abs(off) * 10),
                en=(f"Sale seq {seq} on nozzle {ref} at {at}: unit price {price} minor units per "
                    f"kL, but the site announced {announced} for grade {body['grade']}; off by "
                    f"{price - announced:+d} ({percent(off)})."),
                zh=(f"油枪 {ref} 的交易 seq {seq}（{at}）：单价每千升 {price}，而站点公布的 "
                    f"{body['grade']} 号油价为 {announced}；相差 {price - announced:+d}"
                    f"（{percent(off)}）。"),
                observed={"unit_price_minor_per_kl": price, "announced_price": announced},
                evidence=[entry.record_id]))
        return findings


class FlowPhysics(Detector):
    """Mean and peak flow against the nozzle's maximum, and a duration plausible for the volume."""

    name = "dispenser.physics"
    kinds = ("fuel.sale",)

    def feed(self, entry, state):
        body = entry.body
        volume, duration = body["volume_ml"], body["duration_ms"]
        p = self.params
        registered = self.facts.max_flow_lpm(entry.site_id, entry.device_ref)
        max_lpm = registered or p["default_max_flow_lpm"]
        latches = state.get(entry.device_key)
        if latches is None:
            latches = state[entry.device_key] = {}
        rearm = p["rearm_after_clean_sales"]
        findings = []
        too_short = volume > 0 and duration < p["min_duration_ms"]
        # latched() only when a check is off or a latch counts clean sales (see price).
        if (too_short or latches) and latched(latches, "duration", too_short, rearm):
            seq, ref, at = entry.seq, entry.device_ref, utc_text(entry.wall_time_ms)
            findings.append(self.finding(
                entry, rule=f"{self.name}.duration", severity="medium", score=0.6,
                en=(f"Sale seq {seq} on nozzle {ref} at {at}: {litres(volume)} in {duration} ms; "
                    f"a sale lasts at least {p['min_duration_ms']} ms."),
                zh=(f"油枪 {ref} 的交易 seq {seq}（{at}）：{duration} ms 内加了 {litres(volume)}；"
                    f"一笔交易至少需要 {p['min_duration_ms']} ms。"),
                observed={"volume_ml": volume, "duration_ms": duration},
                evidence=[entry.record_id]))
        if too_short:
            return findings
        mean_lpm = volume * 60 / duration if duration else 0.0
        mean_limit = max_lpm * (1 + p["mean_flow_tolerance"])
        fast = volume >= p["min_volume_ml"] and mean_lpm > mean_limit
        if (fast or latches) and latched(latches, "mean", fast, rearm):
            findings.append(self._flow_finding(
                entry, "mean_flow", "mean flow", "平均流量", mean_lpm, max_lpm, mean_limit,
                registered, {"volume_ml": volume, "duration_ms": duration}))
        profile, interval = body["flow_profile_ml"], body["flow_interval_ms"]
        peak_lpm = max(profile[:-1], default=0) * 60 / interval
        peak_limit = max_lpm * (1 + p["interval_flow_tolerance"])
        peaked = peak_lpm > peak_limit
        if (peaked or latches) and latched(latches, "peak", peaked, rearm):
            findings.append(self._flow_finding(
                entry, "peak_flow", f"flow in a {interval} ms interval",
                f"{interval} ms 区间内的流量", peak_lpm, max_lpm, peak_limit, registered,
                {"peak_interval_ml": max(profile[:-1]), "flow_interval_ms": interval}))
        return findings

    def _flow_finding(self, entry, check, what_en, what_zh, lpm, max_lpm, limit, registered,
                      observed):
        seq, ref, at = entry.seq, entry.device_ref, utc_text(entry.wall_time_ms)
        source_en, source_zh = ("registered", "登记的") if registered else ("default", "默认的")
        excess = lpm / max_lpm - 1
        return self.finding(
            entry, rule=f"{self.name}.{check}", severity="high",
            score=min(1.0, 0.6 + excess),
            en=(f"Sale seq {seq} on nozzle {ref} at {at}: {what_en} {lpm:.1f} L/min exceeds the "
                f"{source_en} maximum {max_lpm:g} L/min (limit with tolerance {limit:.1f}) by "
                f"{percent(excess)}; a meter cannot pass more than its maximum."),
            zh=(f"油枪 {ref} 的交易 seq {seq}（{at}）：{what_zh} {lpm:.1f} L/min，超过{source_zh}"
                f"最大流量 {max_lpm:g} L/min（含容差上限 {limit:.1f}）{percent(excess)}；"
                f"流量计不可能超过其最大流量。"),
            observed={**observed, "flow_lpm": round(lpm, 2), "max_flow_lpm": max_lpm},
            evidence=[entry.record_id])


class PulseCrossCheck(Detector):
    """The gateway's own pulse count against the dispenser's volume: a ``pulse_mismatch`` event
    at once, and an EWMA of each nozzle's per-sale deviation (reported / pulse volume - 1) for
    the small steady board the per-sale threshold never trips. The EWMA starts at 0 (an honest
    dispenser and the gateway count the same pulses), so a board shows from its first sales.

    An authorised calibration may rightly move the dispenser's volume against the pulses (a new
    K-factor in the dispenser, the gateway's sealed one unchanged): its nozzles then learn their
    new deviation (``offset``, the median of ``baseline_sales`` judged sales) and the EWMA
    follows the deviation from it. ``relearn`` names the reworked dispensers, so that a nozzle
    first judged after the work learns too. The gateway flags each such sale with a
    ``pulse_mismatch`` event when the new K moved the dispenser by more than its allowance; an
    authorised calibration's new K says what deviation to expect, and only a mismatch beyond that
    is a finding."""

    name = "dispenser.pulse_crosscheck"
    kinds = ("fuel.sale", "event")

    def feed(self, entry, state):
        if entry.kind == "event":
            if entry.event_type == "pulse_mismatch":
                return self._mismatch(entry, self._nozzle(state, entry.device_key), state)
            self._after_work(entry, state)
            return []
        body = entry.body
        if body.get("pulse_volume_ml") is None:
            return []
        nozzle = self._nozzle(state, entry.device_key)
        nozzle["clean"] = nozzle.get("clean", 0) + 1
        pulse_ml, volume = body["pulse_volume_ml"], body["volume_ml"]
        if pulse_ml <= 0 or pulse_ml < self.params["min_volume_ml"]:
            return []
        p = self.params
        deviation = volume / pulse_ml - 1
        learning = nozzle.get("learning")
        if learning is not None:
            learning.append(deviation)
            if len(learning) >= p["baseline_sales"]:
                nozzle["offset"] = median(learning)
                del nozzle["learning"]
            return []
        offset = nozzle.get("offset", 0.0)
        level = ewma(nozzle.get("ewma", 0.0), deviation - offset, p["ewma_weight"])
        nozzle["ewma"] = level
        nozzle["sales"] = nozzle.get("sales", 0) + 1
        recent = nozzle.get("recent")
        if recent is None:
            recent = nozzle["recent"] = []
        push_window(recent, entry.record_id, p["evidence_sales"])
        if nozzle.get("fired"):
            if abs(level) < p["tolerance"] / 2:  # hysteresis: back to honest, re-armed
                nozzle["fired"] = False
            return []
        if abs(level) <= p["tolerance"]:
            return []
        nozzle["fired"] = True
        seq, ref, at = entry.seq, entry.device_ref, utc_text(entry.wall_time_ms)
        runs = percent(level + offset)
        expected_en, expected_zh = "0", "0"
        if offset:
            expected_en = f"{percent(offset)} (learnt after authorised work)"
            expected_zh = f"{percent(offset)}（授权作业后重新学习的值）"
        return [self.finding(
            entry, rule=f"{self.name}.trend", severity="high",
            score=min(1.0, 0.6 + abs(level) * 40),
            en=(f"Nozzle {ref}: the dispenser's volume runs {runs} against the "
                f"gateway's own pulse count (EWMA over {nozzle['sales']} sales of at least "
                f"{litres(p['min_volume_ml'])}); expected {expected_en} within "
                f"±{p['tolerance'] * 100:.2f} %. Latest: sale seq {seq} at {at}, {volume} mL "
                f"reported vs {pulse_ml} mL from pulses ({percent(deviation)})."),
            zh=(f"油枪 {ref}：加油机报的油量相对网关自己计的脉冲偏差 {runs}"
                f"（{nozzle['sales']} 笔不少于 {litres(p['min_volume_ml'])} 的交易的 EWMA）；"
                f"应为 {expected_zh}，容差 ±{p['tolerance'] * 100:.2f} %。最近一笔：交易 seq "
                f"{seq}（{at}），报 {volume} mL，脉冲折合 {pulse_ml} mL（{percent(deviation)}）。"),
            observed={"ewma_deviation": round(level, 6), "offset": round(offset, 6),
                      "sales": nozzle["sales"], "volume_ml": volume, "pulse_volume_ml": pulse_ml},
            evidence=list(nozzle["recent"]))]

    @staticmethod
    def _nozzle(state, key):
        """The nozzle's state, made on first sight: learning at once when its dispenser was
        reworked (``relearn``)."""
        nozzle = state.get(key)
        if nozzle is None:
            nozzle = state[key] = {}
            relearn = state.get("relearn")
            if relearn and key.rsplit("/", 1)[0] in relearn:
                nozzle["learning"] = []
        return nozzle

    def _after_work(self, entry, state):
        """Authorised work on a dispenser: each of its nozzles learns its deviation afresh."""
        dispenser = self.reworked_dispenser(entry)
        if dispenser is None:
            return
        relearn = state.get("relearn")
        if relearn is None:
            relearn = state["relearn"] = {}
        relearn[dispenser] = entry.seq
        prefix = dispenser + "/"
        for key, nozzle in state.items():
            if key.startswith(prefix):
                for field in ("ewma", "fired", "offset"):
                    nozzle.pop(field, None)
                nozzle["learning"] = []
        calibrated = state.get("calibrated_k")
        new_k = entry.body.get("new_k_factor_pulses_per_kl")
        if entry.event_type == "calibration" and new_k:
            if calibrated is None:
                calibrated = state["calibrated_k"] = {}
            calibrated[entry.device_key] = new_k  # a nozzle's, or the whole dispenser's
        elif calibrated:
            for key in [k for k in calibrated if k == dispenser or k.startswith(prefix)]:
                del calibrated[key]

    def _expected_after_calibration(self, entry, calibrated):
        """True when a pulse_mismatch event is what the authorised calibration's new K-factor
        makes of honest sales: the dispenser divides the pulses by its new K, the gateway by its
        own, so reported / pulse volume - 1 = gateway K / new K - 1, to the trend's tolerance
        plus ``quantization_ml`` (a display step and a pulse)."""
        new_k = calibrated.get(entry.device_key) or calibrated.get(
            entry.device_key.rsplit("/", 1)[0])
        if not new_k:
            return False
        body = entry.body
        expected_ml = (body["k_factor_pulses_per_kl"] / new_k - 1) * body["pulse_volume_ml"]
        allowance = (self.params["tolerance"] * body["pulse_volume_ml"]
                     + self.params["quantization_ml"])
        return abs(body["difference_ml"] - expected_ml) <= allowance

    def _mismatch(self, entry, nozzle, state):
        calibrated = state.get("calibrated_k")
        if calibrated and self._expected_after_calibration(entry, calibrated):
            return []
        clean = nozzle.get("clean")
        nozzle["clean"] = 0
        if clean is not None and clean <= self.params["rearm_after_clean_sales"] \
                and nozzle.get("mismatch_seen"):
            return []
        nozzle["mismatch_seen"] = True
        body = entry.body
        reported, pulse_ml = body["reported_volume_ml"], body["pulse_volume_ml"]
        difference = body["difference_ml"]
        share = difference / pulse_ml if pulse_ml else 1.0
        sale_seq = body.get("sale_seq")
        sale_en = f" (sale seq {sale_seq})" if sale_seq is not None else ""
        sale_zh = f"（交易 seq {sale_seq}）" if sale_seq is not None else ""
        ref, at = entry.device_ref, utc_text(entry.wall_time_ms)
        return [self.finding(
            entry, rule=f"{self.name}.mismatch", severity="high",
            score=min(1.0, 0.7 + abs(share) * 10),
            en=(f"Nozzle {ref}: the gateway flagged a pulse mismatch at {at} (event seq "
                f"{entry.seq}){sale_en}: the dispenser reported {reported} mL, its "
                f"{body['pulses_counted']} pulses at K {body['k_factor_pulses_per_kl']} per kL "
                f"give {pulse_ml} mL; difference {difference:+d} mL ({percent(share)})."),
            zh=(f"油枪 {ref}：网关在 {at} 标记脉冲不符（事件 seq {entry.seq}）{sale_zh}："
                f"加油机报 {reported} mL，网关计 {body['pulses_counted']} 个脉冲、K 系数每千升 "
                f"{body['k_factor_pulses_per_kl']}，折合 {pulse_ml} mL；相差 {difference:+d} mL"
                f"（{percent(share)}）。"),
            observed={"reported_volume_ml": reported, "pulse_volume_ml": pulse_ml,
                      "difference_ml": difference, "sale_seq": sale_seq},
            evidence=[entry.record_id])]


DETECTORS = (TotalizerContinuity, PriceComputing, FlowPhysics, PulseCrossCheck)
