"""Wetstock reconciliation against the tank gauge (docs/detectors.md, "Wetstock").

Per tank, the stream of inventory readings cuts time into intervals (the first reading at or
after each local hour mark closes one) and business days (the first reading of a new local day
closes the day). For each interval:

    variance = opening stock + deliveries - metered sales - closing stock

on temperature-compensated volume where both readings carry it. Sales and deliveries are put
into minute buckets by their end time, and a closing reading takes the buckets that ended
before it, so records from the dispenser gateways and the gauge may interleave freely. A record
whose minute was already taken (the gauge reports a delivery once its level settled, a gateway
uploads late) is booked to the closed interval and day it belongs to. A closed day is judged
only after settle_hours, so such late records count before its variance is checked.

The console times deliveries by its own clock. Where readings carry the console's time too
(``console_time_ms``), deliveries are moved onto the gateway's clock by the tank's typical
difference of the two, and a reading stamped long after the console read it takes the console's
time (console_clock_tolerance_ms).

A dispenser under authorised service (a seal_open that a work order covers, until its
seal_close or service_window_hours) draws test volumes into a proving can and pours them back:
its sales then are not taken out of the tank.

Sign convention: variance < 0 means the meters registered more than left the tank
(over-registration, the customer is short); variance > 0 means the tank lost more than was
metered (leak, theft, under-registration). Over the closed days the cumulative variance is
regressed on cumulative metered sales: a meter over-registering by g gives slope ≈ -g.
Reading noise telescopes in the cumulative sums, so the residuals stay independent and the
least-squares standard error holds.
"""

import math

from .engine import Detector, dispenser_key
from .finding import evidence_ids, litres, percent, utc_text
from .stats import linear_fit, solve_normal_equations

DAY_MS = 86_400_000
BUCKET_MS = 60_000
MAX_EVIDENCE = 60
# A tank's console clock offset is the median of its last readings' (gateway time - console
# time); from 3 on, one stale reading cannot move it.
_KEPT_OFFSETS = 9
_MIN_OFFSETS = 3


class Wetstock(Detector):
    name = "tank.wetstock"
    kinds = ("tank.inventory", "tank.delivery", "fuel.sale", "event")

    def feed(self, entry, state):
        if entry.kind == "event":
            self._service(entry, state)
            return []
        if entry.kind == "fuel.sale":
            if self._test_draw(entry, state):
                return []
            tank_number = self.facts.tank_of(entry.site_id, entry.body["grade"])
            if tank_number is None:
                return []  # no tank known for the grade: the sale is not reconciled
            tank = _tank(state, tank_number)
            ref = entry.device_ref or "?"
            self._book(tank, entry.body["end_wall_time_ms"], {ref: entry.body["volume_ml"]}, 0,
                       None)
            return []
        if not entry.device or "tank_number" not in entry.device:
            return []
        tank = _tank(state, entry.device["tank_number"])
        if entry.kind == "tank.delivery":
            self._book(tank, entry.body["end_wall_time_ms"] + self._console_offset(tank), {},
                       _delivered_ml(entry.body), entry.record_id)
            return []
        return self._reading(entry, tank, str(entry.device["tank_number"]))

    def _service(self, entry, state):
        """An authorised seal_open on a dispenser opens its service window; seal_close ends
        it."""
        if entry.event_type == "seal_close":
            (state.get("in_service") or {}).pop(dispenser_key(entry), None)
            return
        dispenser = self.reworked_dispenser(entry, ("seal_open",))
        if dispenser is None:
            return
        in_service = state.get("in_service")
        if in_service is None:
            in_service = state["in_service"] = {}
        in_service[dispenser] = entry.wall_time_ms + int(self.params["service_window_hours"]
                                                         * 3_600_000)

    def _test_draw(self, entry, state):
        """True for a sale of a dispenser in its service window (fuel poured back); a window
        that ran out without a seal_close is dropped here."""
        in_service = state.get("in_service")
        if not in_service:
            return False
        dispenser = dispenser_key(entry)
        until = in_service.get(dispenser)
        if until is None:
            return False
        if entry.body["end_wall_time_ms"] <= until:
            return True
        del in_service[dispenser]
        return False

    def _book(self, tank, end_ms, sales, delivered, delivery_id):
        """Put a sale or delivery into its minute bucket; one whose minute a closing reading has
        already taken (a late upload, or a delivery the gauge reports once the level settled)
        corrects the closed interval and day it belongs to instead."""
        minute_end = (end_ms // BUCKET_MS + 1) * BUCKET_MS
        if tank["mark"] is not None and minute_end <= tank["mark"][0]:
            _correct_closed(tank, minute_end, sales, delivered, delivery_id)
            return
        bucket = _bucket(tank, end_ms)
        for ref, ml in sales.items():
            bucket["sales"][ref] = bucket["sales"].get(ref, 0) + ml
        bucket["delivered"] += delivered
        if delivery_id is not None:
            bucket["deliveries"].append(delivery_id)
        self._bound(tank)

    def _bound(self, tank):
        """A gauge silent for days would let the buckets grow: restart that tank instead."""
        if len(tank["pending"]) > self.params["max_pending_minutes"]:
            tank.clear()
            tank.update(_new_tank())

    def _console_offset(self, tank):
        """The gateway's clock minus the console's, typically over the tank's last readings; 0
        within console_clock_tolerance_ms or before there are enough readings to tell."""
        typical = _typical_offset(tank.get("console_offsets", ()))
        if typical is None or abs(typical) <= self.params["console_clock_tolerance_ms"]:
            return 0
        return typical

    def _reading_time(self, entry, tank):
        """The reading's time on the gateway's clock: its own stamp, unless the console's time
        for it says the level was read well before (or after) that."""
        t = entry.wall_time_ms
        console_ms = entry.body.get("console_time_ms")
        if console_ms is None:
            return t
        offsets = tank.setdefault("console_offsets", [])
        offsets.append(t - console_ms)
        del offsets[:-_KEPT_OFFSETS]
        typical = _typical_offset(offsets)
        if typical is None or abs(t - console_ms - typical) <= self.params[
                "console_clock_tolerance_ms"]:
            return t
        mark = tank["mark"]
        return max(console_ms + typical, mark[0] if mark else 0)

    def _reading(self, entry, tank, number):
        t = self._reading_time(entry, tank)
        reading = [t, entry.body["volume_ml"], entry.body.get("tc_volume_ml"), entry.record_id]
        offset = self.params["utc_offset_hours"] * 3_600_000
        mark = tank["mark"]
        if mark is None:
            tank["mark"] = reading
            tank["day"] = _new_day(reading)
            tank["next_close_ms"] = _next_boundary(t, offset, self.params["interval_minutes"])
            _take(tank, t)  # sales before the first reading have no opening stock
            return []
        if t >= tank["next_close_ms"]:
            self._close_interval(tank, reading, offset)
        return self._judge_settled(entry, tank, number)

    def _close_interval(self, tank, reading, offset):
        t = reading[0]
        mark = tank["mark"]
        taken = _take(tank, t)
        compensated = mark[2] is not None and reading[2] is not None
        stock = (mark[2] - reading[2]) if compensated else (mark[1] - reading[1])
        sales = sum(taken["sales"].values())
        variance = stock + taken["delivered"] - sales
        day = tank["day"]
        day["variance"] += variance
        day["sales"] += sales
        day["raw_intervals"] += 0 if compensated else 1
        day["deliveries"] = (day["deliveries"] + taken["deliveries"])[:8]
        # kept until the day is judged, so that a late record can still correct the interval
        day["intervals"].append({"close_ms": t, "sales": taken["sales"], "variance": variance})
        tank["mark"] = reading
        tank["next_close_ms"] = _next_boundary(t, offset, self.params["interval_minutes"])
        if (t + offset) // DAY_MS != (day["open_ms"] + offset) // DAY_MS:
            day.update(close=reading[3], close_ms=t,
                       stock=reading[2] if reading[2] is not None else reading[1])
            tank["unjudged"].append(day)
            tank["day"] = _new_day(reading)

    def _judge_settled(self, entry, tank, number):
        """Judge a closed day once late records have had time to arrive: when a reading comes
        settle_hours after its close, or when the next day has closed too (bounds the state)."""
        settle_ms = self.params["settle_hours"] * 3_600_000
        findings = []
        unjudged = tank["unjudged"]
        while unjudged and (len(unjudged) > 1 or entry.wall_time_ms >= unjudged[0]["close_ms"]
                            + settle_ms):
            findings.extend(self._judge_day(entry, tank, number, unjudged.pop(0)))
        return findings

    def _attribute(self, tank, nozzle_sales, variance):
        """Normal equations of interval variance on the per-nozzle metered volumes."""
        att = tank["attribution"]
        nozzles = att["nozzles"]
        for ref in nozzle_sales:
            if ref not in nozzles:
                if len(nozzles) >= self.params["max_nozzles_attributed"]:
                    return
                nozzles.append(ref)
                for row in att["xtx"]:
                    row.append(0.0)
                att["xtx"].append([0.0] * len(nozzles))
                att["xty"].append(0.0)
        x = [nozzle_sales.get(ref, 0) / 1000 for ref in nozzles]
        y = variance / 1000
        for i, xi in enumerate(x):
            if xi:
                att["xty"][i] += xi * y
                row = att["xtx"][i]
                for j, xj in enumerate(x):
                    row[j] += xi * xj
        att["yy"] += y * y
        att["n"] += 1

    def _judge_day(self, entry, tank, number, day):
        p = self.params
        for interval in day.pop("intervals"):
            self._attribute(tank, interval["sales"], interval["variance"])
        _forget(tank["attribution"], 1 - 1 / p["window_days"])
        days = tank["days"]
        days.append(day)
        del days[:max(0, len(days) - p["window_days"])]
        findings = []
        limit = p["daily_limit_fraction"] * day["sales"] + p["daily_limit_ml"]
        if abs(day["variance"]) > limit:
            if not tank["daily_fired"]:
                findings.append(self._daily_finding(entry, number, day, limit))
            tank["daily_fired"] = True
        else:
            tank["daily_fired"] = False
        findings.extend(self._regression(entry, tank, number))
        return findings

    def _regression(self, entry, tank, number):
        p = self.params
        days = tank["days"]
        if len(days) < p["min_days"]:
            return []
        xs, ys = [0.0], [0.0]
        for day in days:
            xs.append(xs[-1] + day["sales"])
            ys.append(ys[-1] + day["variance"])
        fit = linear_fit(xs, ys)
        if fit is None:
            return []
        slope, _intercept, slope_se = fit
        mean_x = sum(xs) / len(xs)
        spread = math.sqrt(sum((x - mean_x) ** 2 for x in xs))
        # The fit's own standard error can be tiny by chance with few days; the gauge's noise
        # floor bounds it from below.
        mean_stock = sum(day["stock"] for day in days) / len(days)
        slope_se = max(slope_se, p["gauge_noise_fraction"] * mean_stock / spread)
        threshold = p["slope_threshold"]
        if tank["fired"]:
            if abs(slope) < threshold / 2:
                tank["fired"] = False
            return []
        if abs(slope) < threshold or abs(slope) < p["min_t"] * slope_se:
            return []
        tank["fired"] = True
        return [self._slope_finding(entry, tank, number, slope, slope_se, xs[-1], ys[-1])]

    def _suspect(self, tank, over_registration):
        """The nozzle whose coefficient explains the slope, when the intervals separate the
        nozzles well enough; else None."""
        att = tank["attribution"]
        k = len(att["nozzles"])
        if k == 0 or att["n"] <= k + 2:
            return None
        solved = solve_normal_equations(att["xtx"], att["xty"],
                                        self.params["attribution_min_pivot"])
        if solved is None:
            return None
        coefficients, inverse = solved
        residual = att["yy"] - sum(c * v for c, v in zip(coefficients, att["xty"]))
        sigma2 = max(residual, 0.0) / (att["n"] - k)
        ranked = sorted(range(k), key=lambda i: coefficients[i],
                        reverse=not over_registration)
        best = ranked[0]
        se = math.sqrt(max(sigma2 * inverse[best], 0.0))
        coefficient = coefficients[best]
        if se <= 0 or abs(coefficient) < self.params["min_t"] * se:
            return None
        if (coefficient < 0) != over_registration:
            return None
        return att["nozzles"][best], coefficient, se

    def _slope_finding(self, entry, tank, number, slope, slope_se, cum_sales, cum_variance):
        p = self.params
        days = tank["days"]
        over = slope < 0
        raw = sum(1 for day in days if day["raw_intervals"])
        volume_en = ("temperature-compensated volume" if not raw else
                     f"temperature-compensated volume (uncompensated volume on {raw} of the "
                     f"{len(days)} days, where tc_volume_ml was absent)")
        volume_zh = ("温度补偿体积" if not raw else
                     f"温度补偿体积（其中 {raw} 天缺少 tc_volume_ml，用未补偿体积）")
        span = f"{utc_text(days[0]['open_ms'])} .. {utc_text(days[-1]['close_ms'])}"
        loss_per_day = cum_variance / max(1, len(days))
        suspect = self._suspect(tank, over)
        if over:
            what_en = (f"the meters registered {percent(-slope)[1:]} more than left the tank "
                       "(over-registration: customers receive less than they pay for)")
            what_zh = f"加油机计量比油罐实际出油多 {percent(-slope)[1:]}（计量偏多，顾客少得油）"
        else:
            what_en = (f"the tank lost {percent(slope)[1:]} more than was metered, "
                       f"{litres(loss_per_day)} a day (shortfall: leak, theft or "
                       "under-registration)")
            what_zh = (f"油罐减少量比计量销售多 {percent(slope)[1:]}，每天 {litres(loss_per_day)}"
                       "（短少：渗漏、盗油或计量偏少）")
        nozzle_en = nozzle_zh = ""
        observed = {"slope": round(slope, 6), "slope_se": round(slope_se, 6),
                    "days": len(days), "cumulative_variance_ml": round(cum_variance),
                    "cumulative_sales_ml": round(cum_sales),
                    "variance_per_day_ml": round(loss_per_day),
                    "uncompensated_days": raw}
        if suspect:
            ref, coefficient, se = suspect
            observed.update(suspect_nozzle=ref, suspect_coefficient=round(coefficient, 6),
                            suspect_coefficient_se=round(se, 6))
            nozzle_en = (f" Regressing the hourly interval variances on each nozzle's metered "
                         f"volume points to nozzle {ref}: {percent(coefficient)} "
                         f"± {percent(se)[1:]} of its metered volume.")
            nozzle_zh = (f"按小时区间差异对各油枪计量量回归，指向油枪 {ref}：其计量量的 "
                         f"{percent(coefficient)} ± {percent(se)[1:]}。")
        ids = evidence_ids([d["open"] for d in days], [d["close"] for d in days],
                           *[d["deliveries"] for d in days])[:MAX_EVIDENCE]
        en = (f"Tank {number}: wetstock reconciliation (opening + deliveries - metered sales - "
              f"closing, on {volume_en}) expects a variance of about 0 % of sales; honest "
              f"meters stay within ±0.3 % (MPE). Over {len(days)} days ({span}) the cumulative "
              f"variance is {litres(cum_variance)} against {litres(cum_sales)} of metered "
              f"sales: slope {percent(slope)} of sales, standard error {percent(slope_se)[1:]}, "
              f"threshold ±{percent(p['slope_threshold'])[1:]}; {what_en}.{nozzle_en} "
              f"Evidence: the inventory readings opening and closing each day and the "
              f"deliveries, record ids {_id_text(ids)}.")
        zh = (f"{number} 号油罐：液位对账（期初 + 进油 - 计量销售 - 期末，按{volume_zh}）预期差异"
              f"约为销售量的 0 %，合格加油机误差在 ±0.3 %（最大允许误差）内。{len(days)} 天内"
              f"（{span}）累计差异 {litres(cum_variance)}，累计计量销售 {litres(cum_sales)}："
              f"斜率为销售量的 {percent(slope)}，标准误差 {percent(slope_se)[1:]}，阈值 "
              f"±{percent(p['slope_threshold'])[1:]}；{what_zh}。{nozzle_zh}"
              f"证据：每天期初和期末的液位记录及进油记录，记录号 {_id_text(ids)}。")
        significance = abs(slope) / p["slope_threshold"]
        return self.finding(entry, severity="high" if over else "medium",
                            score=0.5 + 0.25 * min(2.0, significance - 1), en=en, zh=zh,
                            observed=observed, evidence=ids, device=f"tank/{number}")

    def _daily_finding(self, entry, number, day, limit):
        ids = evidence_ids([day["open"], day["close"]], day["deliveries"])
        span = f"{utc_text(day['open_ms'])} .. {utc_text(day['close_ms'])}"
        direction_en = ("the meters registered more than left the tank" if day["variance"] < 0
                        else "the tank lost more than was metered")
        direction_zh = "计量多于油罐出油" if day["variance"] < 0 else "油罐减少多于计量"
        en = (f"Tank {number}: one business day ({span}) has a variance of "
              f"{litres(day['variance'])} on {litres(day['sales'])} of metered sales; expected "
              f"within ±{litres(limit)} ({percent(self.params['daily_limit_fraction'])[1:]} of "
              f"sales + {litres(self.params['daily_limit_ml'])}); {direction_en}, "
              f"{litres(abs(day['variance']) - limit)} beyond the limit. Evidence: the opening "
              f"and closing readings and deliveries, record ids {_id_text(ids)}.")
        zh = (f"{number} 号油罐：一个营业日（{span}）差异 {litres(day['variance'])}，计量销售 "
              f"{litres(day['sales'])}；预期在 ±{litres(limit)} 以内（销售量的 "
              f"{percent(self.params['daily_limit_fraction'])[1:]} + "
              f"{litres(self.params['daily_limit_ml'])}）；{direction_zh}，超出 "
              f"{litres(abs(day['variance']) - limit)}。证据：期初、期末液位记录及进油记录，"
              f"记录号 {_id_text(ids)}。")
        excess = abs(day["variance"]) / max(limit, 1)
        return self.finding(entry, rule="tank.daily_variance", severity="medium",
                            score=0.4 + 0.2 * min(2.0, excess - 1), en=en, zh=zh,
                            observed={"variance_ml": round(day["variance"]),
                                      "sales_ml": day["sales"], "limit_ml": round(limit)},
                            evidence=ids, device=f"tank/{number}")


def _tank(state, number):
    """Tank ``number``'s state, made on first use (not setdefault: a new tank's default would
    be built on every sale)."""
    tanks = state.get("tanks")
    if tanks is None:
        tanks = state["tanks"] = {}
    tank = tanks.get(str(number))
    if tank is None:
        tank = tanks[str(number)] = _new_tank()
    return tank


def _typical_offset(offsets):
    """The median of a tank's (gateway - console) offsets, None before there are _MIN_OFFSETS.
    The upper median of an even count rather than stats.median's mean: a whole number of ms, as
    the minute buckets' keys need."""
    if len(offsets) < _MIN_OFFSETS:
        return None
    return sorted(offsets)[len(offsets) // 2]


def _new_tank():
    return {"mark": None, "next_close_ms": 0, "pending": {}, "day": None, "unjudged": [],
            "days": [], "fired": False, "daily_fired": False,
            "attribution": {"nozzles": [], "xtx": [], "xty": [], "yy": 0.0, "n": 0}}


def _new_day(opening):
    return {"open": opening[3], "open_ms": opening[0], "variance": 0, "sales": 0,
            "raw_intervals": 0, "deliveries": [], "intervals": []}


def _correct_closed(tank, minute_end, sales, delivered, delivery_id):
    """Book a late sale or delivery to the closed day (and, while the day is not yet judged,
    the interval) whose closing reading should have taken its minute. Records older than the
    window of kept days are dropped."""
    for day in [tank["day"], *reversed(tank["unjudged"]), *reversed(tank["days"])]:
        if day["open_ms"] < minute_end:
            break
    else:
        return
    volume = sum(sales.values())
    day["variance"] += delivered - volume
    day["sales"] += volume
    if delivery_id is not None and len(day["deliveries"]) < 8:
        day["deliveries"].append(delivery_id)
    for interval in day.get("intervals", ()):
        if interval["close_ms"] >= minute_end:
            interval["variance"] += delivered - volume
            for ref, ml in sales.items():
                interval["sales"][ref] = interval["sales"].get(ref, 0) + ml
            return


def _bucket(tank, end_ms):
    key = str(end_ms // BUCKET_MS)
    bucket = tank["pending"].get(key)
    if bucket is None:
        bucket = tank["pending"][key] = {"sales": {}, "delivered": 0, "deliveries": []}
    return bucket


def _take(tank, t):
    """Remove and sum the buckets that ended at or before ``t``."""
    taken = {"sales": {}, "delivered": 0, "deliveries": []}
    pending = tank["pending"]
    for key in [k for k in pending if (int(k) + 1) * BUCKET_MS <= t]:
        bucket = pending.pop(key)
        for ref, ml in bucket["sales"].items():
            taken["sales"][ref] = taken["sales"].get(ref, 0) + ml
        taken["delivered"] += bucket["delivered"]
        taken["deliveries"] += bucket["deliveries"]
    return taken


def _next_boundary(t, offset, minutes):
    step = minutes * 60_000
    return ((t + offset) // step + 1) * step - offset


def _delivered_ml(body):
    if body.get("start_tc_volume_ml") is not None and body.get("end_tc_volume_ml") is not None:
        return body["end_tc_volume_ml"] - body["start_tc_volume_ml"]
    return body["end_volume_ml"] - body["start_volume_ml"]


def _forget(att, factor):
    """Older intervals weigh less, so the attribution follows the recent window_days."""
    att["xtx"] = [[v * factor for v in row] for row in att["xtx"]]
    att["xty"] = [v * factor for v in att["xty"]]
    att["yy"] *= factor
    att["n"] *= factor


def _id_text(ids):
    return ", ".join(str(i) for i in ids)


DETECTORS = (Wetstock,)
