"""Price-computing scale detectors (OIML R 76 / JJG 1204 non-automatic weighing instruments).

Each is fed ``scale.weighing`` records; its state is per site, so the scales of one market are
peers: the same PLU sold on several scales gives the reference a single scale is judged against.
Masses are in mg (docs/record-format.md §6.2). Every detector fires once per scale and then stays
quiet until a documented clearing condition, so a sustained cheat makes one alert, not a flood.
"""

import math

from . import stats
from .engine import Detector
from .finding import evidence_ids, grams, local_hour, percent, utc_text

_PPM = 1_000_000
_DAY_MS = 86_400_000


def expected_amount(net_mg, unit_price_minor_per_kg, price_interval_minor):
    """Price computing as R 76 / the emulator define it: net × unit price, rounded half up to the
    price interval; 0 for a net at or below zero."""
    if net_mg <= 0:
        return 0
    step = _PPM * price_interval_minor
    return (net_mg * unit_price_minor_per_kg + step // 2) // step * price_interval_minor


def in_service_mpe_mg(load_mg, e_mg):
    """R 76-1 §3.5.1 class III: MPE 0.5 e up to 500 e, 1 e up to 2000 e, 1.5 e above, at
    verification; doubled in service (§3.5.2)."""
    steps = load_mg / e_mg
    return 2 * e_mg * (0.5 if steps <= 500 else 1.0 if steps <= 2000 else 1.5)


def _scale_state(state, scale_id, **initial):
    scales = state.setdefault("scales", {})
    own = scales.get(scale_id)
    if own is None:
        own = scales[scale_id] = dict(initial)
    return own


def _recent_flags(own, window, flag, key="off"):
    """Count one more sale of the scale (``own["n"]``) and keep, under ``key``, the flagged
    sales among its last ``window`` as [sale number, *flag]; ``flag`` None: not flagged. O(1)
    amortised, however long the window."""
    own["n"] += 1
    rows = own[key]
    if flag:
        rows.append([own["n"], *flag])
    while rows and rows[0][0] <= own["n"] - window:
        rows.pop(0)
    return rows


def _local_day(ms, utc_offset_hours):
    return (ms + utc_offset_hours * 3_600_000) // _DAY_MS


class ScalePrice(Detector):
    """amount_minor must be net × unit price rounded half up to the price interval."""

    name = "scale.price"
    kinds = ("scale.weighing",)

    def feed(self, entry, state):
        body = entry.body
        interval = self.params["price_interval_minor"]
        expected = expected_amount(body["net_mg"], body["unit_price_minor_per_kg"], interval)
        difference = body["amount_minor"] - expected
        open_scales = state.setdefault("open", {})
        scale_id = entry.device_ref or entry.gateway_id
        if abs(difference) <= self.params["tolerance_minor"]:
            open_scales.pop(scale_id, None)  # a correct sale clears the scale
            return []
        if scale_id in open_scales:
            return []
        open_scales[scale_id] = entry.record_id
        ratio = difference / expected if expected else 1.0
        over = difference > 0
        severity = "high" if over else ("low" if -difference <= interval else "medium")
        when = utc_text(entry.wall_time_ms)
        facts = (f"net {grams(body['net_mg'])} at {body['unit_price_minor_per_kg']} minor/kg")
        en = (f"Scale {scale_id} {'overcharged' if over else 'undercharged'}: {facts} should cost "
              f"{expected} minor units (rounded half up to {interval}), it charged "
              f"{body['amount_minor']}, {difference:+d} ({percent(ratio)}); seq {entry.seq} at "
              f"{when}. Quiet for this scale until it prices a sale correctly.")
        zh = (f"电子计价秤 {scale_id} {'多收' if over else '少收'}：净重 {grams(body['net_mg'])}、"
              f"单价 {body['unit_price_minor_per_kg']} 分/千克，应收 {expected} 分（按 {interval} "
              f"分四舍五入），实收 {body['amount_minor']} 分，差 {difference:+d} 分"
              f"（{percent(ratio)}）；记录序号 {entry.seq}，时间 {when}。该秤正确计价一次之前不再重复报警。")
        return [self.finding(
            entry, severity=severity, score=min(1.0, 0.5 + abs(ratio) * 10), en=en, zh=zh,
            observed={"expected_minor": expected, "amount_minor": body["amount_minor"],
                      "difference_minor": difference, "ratio": ratio,
                      "net_mg": body["net_mg"],
                      "unit_price_minor_per_kg": body["unit_price_minor_per_kg"]},
            evidence=[entry.record_id])]


class ScaleZero(Detector):
    """Sales that start away from zero: the start reading beyond the centre-of-zero band
    (0.25 e), or the centre-of-zero indicator off where the record carries no start reading. A
    retained base (+x g on every reading, the empty pan included) shows as every start reading at
    +x. The indicator alone is not judged when the reading is zero: an honest zero drifts by a
    fraction of e between zero-settings, which turns the indicator off while the display still
    shows zero, as R 76 allows."""

    name = "scale.zero"
    kinds = ("scale.weighing",)

    def feed(self, entry, state):
        body = entry.body
        p = self.params
        scale_id = entry.device_ref or entry.gateway_id
        own = _scale_state(state, scale_id, n=0, off=[], open=False, clean=0)
        start = body.get("start_reading_mg")
        band = p["centre_of_zero_e"] * body["e_mg"]
        off_zero = abs(start) > band if start is not None else not body["centre_of_zero"]
        off = _recent_flags(own, p["window"], [entry.record_id, start] if off_zero else None)
        if not off_zero:
            own["clean"] += 1
            if own["clean"] >= p["clear_after"]:
                own["open"] = False
            return []
        own["clean"] = 0
        if own["open"] or len(off) < p["min_off_zero_starts"]:
            return []
        own["open"] = True
        readings = [row[2] for row in off if row[2] is not None]
        offset = stats.median(readings) if readings else None
        return [self._finding(entry, scale_id, off, offset, min(own["n"], p["window"]))]

    def _finding(self, entry, scale_id, off, offset, window):
        body, p = entry.body, self.params
        e_mg, max_mg = body["e_mg"], body["max_mg"]
        zero_range = p["zero_setting_range_fraction"] * max_mg
        if offset is None:
            severity, size_en, size_zh = "medium", "start readings not reported", "未报告起始示值"
        else:
            beyond_range = abs(offset) > zero_range
            severity = "high" if beyond_range or offset >= p["high_offset_e"] * e_mg else "medium"
            size_en = (f"median start reading {grams(offset)} = {offset / e_mg:+.1f} e "
                       f"({percent(offset / max_mg)} of Max; zero-setting can correct "
                       f"{grams(zero_range)})")
            size_zh = (f"起始示值中位数 {grams(offset)}，即 {offset / e_mg:+.1f} e"
                       f"（占最大秤量 {percent(offset / max_mg)}；置零范围 {grams(zero_range)}）")
        band = grams(p["centre_of_zero_e"] * e_mg)
        first, last = off[0][1], off[-1][1]
        en = (f"Scale {scale_id} started {len(off)} of its last {window} sales away from zero "
              f"(expected: at zero, within ±{band}, centre-of-zero on): {size_en}. Evidence "
              f"records {first}..{last}, latest seq {entry.seq} at {utc_text(entry.wall_time_ms)}; "
              f"quiet until {p['clear_after']} sales in a row start at zero.")
        zh = (f"电子计价秤 {scale_id} 最近 {window} 笔交易中有 {len(off)} 笔未从零点开始"
              f"（应在 ±{band} 内且零点指示灯亮）：{size_zh}。证据记录 {first}..{last}，最新序号 "
              f"{entry.seq}，时间 {utc_text(entry.wall_time_ms)}；连续 {p['clear_after']} 笔从零点开始前不再重复报警。")
        score = 0.5 if offset is None else min(1.0, 0.4 + abs(offset) / e_mg / 10)
        return self.finding(
            entry, severity=severity, score=score, en=en, zh=zh,
            observed={"off_zero_starts": len(off), "window": window, "median_start_mg": offset,
                      "offset_e": None if offset is None else offset / e_mg,
                      "zero_setting_range_mg": zero_range},
            evidence=[row[1] for row in off])


class ScaleUnstableSale(Detector):
    """Sales finalised while the reading moved: stable false, no time to stable (on a scale
    that reports it), or a time to stable far shorter than the site's scales take."""

    name = "scale.unstable_sale"
    kinds = ("scale.weighing",)

    def feed(self, entry, state):
        body, p = entry.body, self.params
        scale_id = entry.device_ref or entry.gateway_id
        own = _scale_state(state, scale_id, n=0, flags=[], open=False, reports=False)
        settle = body.get("load_to_stable_ms")
        reason = self._reason(body, settle, own, state)
        if settle is not None and body["stable"]:
            own["reports"] = True
            site = state.setdefault("settle", [])
            stats.push_window(site, settle, p["site_window"])
            state["n"] = state.get("n", 0) + 1
            if state["n"] % p["site_refresh"] == 0 and len(site) >= p["site_min_samples"]:
                state["settle_median"] = stats.median(site)
        flagged = _recent_flags(own, p["window"], reason and [entry.record_id, reason], "flags")
        if not flagged:
            own["open"] = False
            return []
        if own["open"] or reason is None or len(flagged) <= p["allowance"]:
            return []
        own["open"] = True
        return [self._finding(entry, scale_id, flagged, min(own["n"], p["window"]), state)]

    def _short_limit(self, state):
        median = state.get("settle_median")
        floor = self.params["min_settle_ms"]
        return floor if median is None else max(floor, self.params["short_fraction"] * median)

    def _reason(self, body, settle, own, state):
        if not body["stable"]:
            return "unstable"
        if settle is None:
            return "no_settle_time" if own["reports"] else None
        return "too_fast" if settle < self._short_limit(state) else None

    def _finding(self, entry, scale_id, flagged, window, state):
        p = self.params
        counts = {}
        for _, _, reason in flagged:
            counts[reason] = counts.get(reason, 0) + 1
        rate = len(flagged) / window
        limit = self._short_limit(state)
        kinds_en = ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(counts.items()))
        names_zh = {"unstable": "不稳定", "no_settle_time": "无稳定时间", "too_fast": "稳定过快"}
        kinds_zh = "，".join(f"{names_zh[r]} {n} 笔" for r, n in sorted(counts.items()))
        en = (f"Scale {scale_id} finalised {len(flagged)} of its last {window} sales without a "
              f"proper stable reading ({kinds_en}); allowed: {p['allowance']}, so "
              f"{len(flagged) - p['allowance']} over. 'Too fast' means under {limit:.0f} ms "
              f"from load to stable (site median {state.get('settle_median')} ms). Latest seq "
              f"{entry.seq} at {utc_text(entry.wall_time_ms)}; quiet until {window} clean sales.")
        zh = (f"电子计价秤 {scale_id} 最近 {window} 笔交易中有 {len(flagged)} 笔未在稳定示值下成交"
              f"（{kinds_zh}）；允许 {p['allowance']} 笔，超出 {len(flagged) - p['allowance']} 笔。"
              f"稳定过快指从加载到稳定少于 {limit:.0f} 毫秒（本站中位数 {state.get('settle_median')} 毫秒）。"
              f"最新序号 {entry.seq}，时间 {utc_text(entry.wall_time_ms)}；连续 {window} 笔正常前不再重复报警。")
        return self.finding(
            entry, severity="high" if rate >= p["high_rate"] else "medium",
            score=min(1.0, 0.3 + rate * 2), en=en, zh=zh,
            observed={"flagged": len(flagged), "window": window, "reasons": counts,
                      "short_limit_ms": limit, "site_median_ms": state.get("settle_median")},
            evidence=[row[1] for row in flagged])


class ScaleTareAbuse(Detector):
    """Weighed tares per PLU systematically lighter than the same PLU's tares on the site's
    other scales (the customer pays for part of the container), or tares taken far more often."""

    name = "scale.tare_abuse"
    kinds = ("scale.weighing",)

    def feed(self, entry, state):
        body, p = entry.body, self.params
        plu = body.get("plu")
        if plu is None:
            return []
        scale_id = entry.device_ref or entry.gateway_id
        peers = state.setdefault("plu", {}).setdefault(str(plu), {})
        own = peers.get(scale_id)
        if own is None:
            own = peers[scale_id] = {"tares": [], "ids": [], "taring": [], "k": 0}
        mode = body.get("tare_mode")
        # A weighed tare of zero is still a tare: a cheat that takes a light container's weight
        # off entirely leaves exactly that.
        tared = mode == "weighed" or (mode != "none" and body["tare_mg"] > 0)
        stats.push_window(own["taring"], int(tared), p["window"])
        if tared and mode in ("weighed", None):
            stats.push_window(own["tares"], body["tare_mg"], p["window"])
            stats.push_window(own["ids"], entry.record_id, p["window"])
        own["k"] += 1
        if own["k"] < p["check_every"]:
            return []
        own["k"] = 0
        others = [v for key, v in peers.items() if key != scale_id]
        result = self._size(body, own, others) or self._frequency(own, others)
        open_scales = state.setdefault("open", {})
        if result is None:
            if open_scales.get(scale_id) == plu and self._size(body, own, others, 0.5) is None:
                del open_scales[scale_id]  # the PLU that fired is back within half the limits
            return []
        if scale_id in open_scales:
            return []
        open_scales[scale_id] = plu
        return [self._finding(entry, scale_id, plu, own, result)]

    def _size(self, body, own, others, strictness=1.0):
        p = self.params
        pooled = [t for v in others if len(v["tares"]) >= p["min_tares"] for t in v["tares"]]
        if len(own["tares"]) < p["min_tares"] or len(pooled) < p["min_tares"]:
            return None
        peer, mine = stats.median(pooled), stats.median(own["tares"])
        sigma = max(stats.mad_sigma(pooled), body["d_mg"] / 2)
        # 1.2533 σ/√n: the standard error of a sample median
        error = 1.2533 * sigma * math.sqrt(1 / len(own["tares"]) + 1 / len(pooled))
        deficit = peer - mine
        limit = strictness * max(p["min_deficit_e"] * body["e_mg"], p["z_limit"] * error)
        if deficit < limit:
            return None
        return {"kind": "size", "peer_median_mg": peer, "own_median_mg": mine,
                "deficit_mg": deficit, "z": deficit / error, "own_n": len(own["tares"]),
                "peer_n": len(pooled)}

    def _frequency(self, own, others):
        p = self.params
        pooled = [f for v in others if len(v["taring"]) >= p["min_sales"] for f in v["taring"]]
        n_own = len(own["taring"])
        if n_own < p["min_sales"] or len(pooled) < p["min_sales"]:
            return None
        rate, peer_rate = sum(own["taring"]) / n_own, sum(pooled) / len(pooled)
        base = min(0.99, max(0.01, peer_rate))
        z = (rate - peer_rate) / math.sqrt(base * (1 - base) * (1 / n_own + 1 / len(pooled)))
        if rate - peer_rate < p["min_rate_excess"] or z < p["z_limit"]:
            return None
        return {"kind": "frequency", "own_rate": rate, "peer_rate": peer_rate, "z": z,
                "own_n": n_own, "peer_n": len(pooled)}

    def _finding(self, entry, scale_id, plu, own, result):
        when = f"seq {entry.seq} at {utc_text(entry.wall_time_ms)}"
        if result["kind"] == "size":
            deficit, peer = result["deficit_mg"], result["peer_median_mg"]
            en = (f"Scale {scale_id} weighs tares for PLU {plu} lighter than the site's other "
                  f"scales: expected median {grams(peer)}, observed "
                  f"{grams(result['own_median_mg'])} "
                  f"over {result['own_n']} tares ({result['peer_n']} peer tares), "
                  f"{grams(deficit)} less ({percent(-deficit / peer)}, z = {result['z']:.1f}): "
                  f"the customer pays for that much of the container. Latest {when}.")
            zh = (f"电子计价秤 {scale_id} 对商品 PLU {plu} 的称量皮重低于本站其他秤：应为中位数 "
                  f"{grams(peer)}，实为 {grams(result['own_median_mg'])}（{result['own_n']} 次去皮，"
                  f"同类秤 {result['peer_n']} 次），少 {grams(deficit)}（{percent(-deficit / peer)}，"
                  f"z = {result['z']:.1f}），顾客为这部分包装付费。最新序号 {entry.seq}，时间 "
                  f"{utc_text(entry.wall_time_ms)}。")
            severity, score = "high", min(1.0, 0.5 + result["z"] / 40)
            evidence = own["ids"][-50:]
        else:
            excess = result["own_rate"] - result["peer_rate"]
            en = (f"Scale {scale_id} tares PLU {plu} far more often than the site's other scales: "
                  f"expected {result['peer_rate']:.0%} of sales, observed {result['own_rate']:.0%} "
                  f"of its last {result['own_n']} ({excess * 100:+.0f} points, z = "
                  f"{result['z']:.1f}). Latest {when}.")
            zh = (f"电子计价秤 {scale_id} 对商品 PLU {plu} 去皮的频率远高于本站其他秤：应约为 "
                  f"{result['peer_rate']:.0%}，实为最近 {result['own_n']} 笔中的 "
                  f"{result['own_rate']:.0%}（高 {excess * 100:.0f} 个百分点，z = {result['z']:.1f}）。"
                  f"最新序号 {entry.seq}，时间 {utc_text(entry.wall_time_ms)}。")
            severity, score = "low", min(1.0, 0.2 + excess)
            evidence = own["ids"][-50:] or [entry.record_id]
        return self.finding(entry, severity=severity, score=score, en=en, zh=zh,
                            observed={"plu": plu, **result}, evidence=evidence)


class ScaleStepGain(Detector):
    """Net weights per PLU against the same PLU on the site's other scales: log(net) residuals
    against the peer median, standardised by the PLU's own spread, feed a likelihood-ratio CUSUM
    per scale (all hours, and one per band of local hours for cheats switched on part of the day).
    Also terminal-digit heaping (rule scale.digit_heaping) on PLUs whose spread covers many d."""

    name = "scale.step_gain"
    kinds = ("scale.weighing",)

    def feed(self, entry, state):
        body, p = entry.body, self.params
        plu, net = body.get("plu"), body["net_mg"]
        if plu is None or net <= 0:
            return []
        scale_id = entry.device_ref or entry.gateway_id
        reference = self._reference(state, str(plu), scale_id, math.log(net))
        if reference is None:
            return []
        centre, sigma = reference
        ref_mg = math.exp(centre)
        d_mg = body["d_mg"]
        own = _scale_state(state, scale_id, cusum={}, recent=[], digits=[], untested=0,
                           day=None,
                           heap_day=None)
        hour = local_hour(entry.wall_time_ms, p["utc_offset_hours"])
        band = hour // p["band_hours"]
        spread_mg = sigma * ref_mg
        sigma = max(sigma, p["target_shift"], d_mg / ref_mg)
        stats.push_window(own["recent"], [entry.record_id, band, plu, ref_mg, net, sigma],
                          p["recent_window"])
        allowance = p["mpe_allowance"] * in_service_mpe_mg(ref_mg, body["e_mg"]) / ref_mg
        findings = self._cusum(entry, own, scale_id, band, math.log(net) - centre, sigma,
                               allowance)
        if spread_mg >= p["heaping_min_spread_d"] * d_mg and net % d_mg == 0:
            findings += self._heaping(entry, own, scale_id, net // d_mg % 10)
        return findings

    def _reference(self, state, plu, scale_id, x):
        """Push ``x`` into the scale's window for the PLU; return the PLU's peer reference
        (median of the scales' medians, median of their robust spreads) or None."""
        p = self.params
        group = state.setdefault("plu", {}).setdefault(plu, {"scales": {}, "k": 0, "ref": None})
        stats.push_window(group["scales"].setdefault(scale_id, []), x, p["plu_window"])
        group["k"] += 1
        if group["k"] >= p["refresh_every"]:
            group["k"] = 0
            ready = [w for w in group["scales"].values() if len(w) >= p["min_samples"]]
            group["ref"] = None
            if len(ready) >= p["min_peer_scales"]:
                group["ref"] = [stats.median([stats.median(w) for w in ready]),
                                stats.median([stats.mad_sigma(w) for w in ready])]
        return group["ref"]

    def _cusum(self, entry, own, scale_id, band, residual, sigma, allowance):
        p = self.params
        # Likelihood-ratio CUSUM for a shift of target_shift beyond the allowance in log(net):
        # weight w = shift/σ (≤ 1), increment w·z - w·allowance/σ - w²/2, so a broad PLU adds
        # little either way and an honest error inside the allowance pulls the sums down.
        weight = p["target_shift"] / sigma
        reference = weight * allowance / sigma + weight * weight / 2
        z = max(-p["z_clip"], min(p["z_clip"], residual / sigma))
        day = _local_day(entry.wall_time_ms, p["utc_offset_hours"])
        fired = []
        for stream in ("all", str(band)):
            side = stats.cusum(own["cusum"].setdefault(stream, {}), weight * z, reference,
                               p["h"])
            if side and own["day"] != day:
                own["day"] = day  # re-arms at the next local midnight
                rows, described = self._rows(own, stream)
                fired.append(self._finding(entry, scale_id, rows, described, stream, side))
        return fired

    def _rows(self, own, stream):
        """The scale's recent sales behind a signal: its band's, or all; only the informative
        (tight-PLU) ones when there are enough of them. For the all-hours stream, the band whose
        sales deviate most when it stands out (a cheat switched on part of the day); returns
        (rows, the stream they describe)."""
        def informative(rows):
            tight = [r for r in rows if r[5] <= 2 * self.params["target_shift"]]
            return tight if len(tight) >= 5 else rows

        def deviation(rows):
            return abs(stats.median([r[4] / r[3] - 1 for r in rows]))

        rows = informative([r for r in own["recent"] if stream == "all" or str(r[1]) == stream])
        if stream != "all":
            return rows, stream
        bands = {}
        for r in rows:
            bands.setdefault(str(r[1]), []).append(r)
        band, band_rows = max(bands.items(), key=lambda item: deviation(item[1]))
        if len(band_rows) >= 5 and len(bands) > 1 and deviation(band_rows) >= 1.5 * deviation(rows):
            return band_rows, band
        return rows, stream

    def _finding(self, entry, scale_id, rows, described, stream, side):
        p = self.params
        refs, nets = [r[3] for r in rows], [r[4] for r in rows]
        diffs = [n - r for n, r in zip(nets, refs)]
        additive = round(stats.median(diffs), -2)  # to 0.1 g
        gain = stats.median([n / r - 1 for n, r in zip(nets, refs)])
        spread_add = stats.median([abs(dv - additive) for dv in diffs])
        spread_mul = stats.median([abs(n - r * (1 + gain)) for n, r in zip(nets, refs)])
        one_size = max(refs) <= 1.25 * min(refs)
        model = "either" if one_size else ("additive" if spread_add <= spread_mul else
                                           "multiplicative")
        plus = sorted({r[2] for r in rows})
        if described == "all":
            hours_en, hours_zh = "all hours", "全天"
        else:
            start = int(described) * p["band_hours"]
            hours_en = f"local hours {start:02d}-{start + p['band_hours']:02d}"
            hours_zh = f"当地时间 {start:02d}-{start + p['band_hours']:02d} 时"
            if stream == "all":
                hours_en, hours_zh = f"all hours, strongest in {hours_en}", f"全天，{hours_zh}最明显"
        fit_en = {"either": f"about {grams(additive)} or {percent(gain)} (one item size: "
                            "offset and gain cannot be told apart)",
                  "additive": f"an offset of about {grams(additive)} (fits better than a "
                              f"{percent(gain)} gain)",
                  "multiplicative": f"a gain of about {percent(gain)} (fits better than a "
                                    f"{grams(additive)} offset)"}[model]
        fit_zh = {"either": f"约 {grams(additive)} 或 {percent(gain)}（商品规格单一，无法区分固定偏移与比例增益）",
                  "additive": f"固定偏移约 {grams(additive)}（比 {percent(gain)} 比例增益更吻合）",
                  "multiplicative": f"比例增益约 {percent(gain)}（比 {grams(additive)} 固定偏移更吻合）"}[model]
        heavier = side > 0
        en = (f"Scale {scale_id} weighs PLUs {plus} {'heavier' if heavier else 'lighter'} than "
              f"the site's other scales ({hours_en}): over its last {len(rows)} such sales the "
              f"expected (peer median) weight was {grams(stats.median(refs))} and the observed "
              f"{grams(stats.median(nets))}: {fit_en}. CUSUM crossed h = {p['h']} at seq "
              f"{entry.seq}, {utc_text(entry.wall_time_ms)}; quiet until the next local day.")
        zh = (f"电子计价秤 {scale_id} 对商品 PLU {plus} 的称重{'偏重' if heavier else '偏轻'}"
              f"（{hours_zh}，与本站其他秤相比）：最近 {len(rows)} 笔交易的期望重量（同类秤中位数）为 "
              f"{grams(stats.median(refs))}，实为 {grams(stats.median(nets))}：{fit_zh}。"
              f"累积和在序号 {entry.seq}（{utc_text(entry.wall_time_ms)}）超过 h = {p['h']}；次日前不再重复报警。")
        return self.finding(
            entry, severity="high" if heavier else "medium",
            score=min(1.0, 0.5 + abs(gain) * 10), en=en, zh=zh,
            observed={"stream": stream, "hours": described, "side": side, "sales": len(rows),
                      "plus": plus, "offset_mg": additive, "gain": gain, "model": model},
            evidence=[r[0] for r in rows[-50:]])

    def _heaping(self, entry, own, scale_id, digit):
        p = self.params
        stats.push_window(own["digits"], [entry.record_id, digit], p["heaping_window"])
        own["untested"] += 1
        if (own["untested"] < p["heaping_check_every"]
                or len(own["digits"]) < p["heaping_min_count"]):
            return []
        own["untested"] = 0
        counts = [0] * 10
        for _, d in own["digits"]:
            counts[d] += 1
        n = len(own["digits"])
        chi2 = sum((c - n / 10) ** 2 / (n / 10) for c in counts)
        p_value = stats.chi_square_sf(chi2, 9)
        day = _local_day(entry.wall_time_ms, p["utc_offset_hours"])
        if p_value >= p["heaping_p_value"] or own["heap_day"] == day:
            return []
        own["heap_day"] = day
        top = max(range(10), key=counts.__getitem__)
        en = (f"Scale {scale_id}'s last displayed digit (in units of d) is not uniform over its "
              f"last {n} sales of broad-weight PLUs: expected {n / 10:.0f} of each digit, "
              f"observed {counts} (digit {top}: {counts[top]}, {counts[top] / n - 0.1:+.0%}); "
              f"chi-square {chi2:.1f} on 9 df, p = {p_value:.1e}. Latest seq {entry.seq} at "
              f"{utc_text(entry.wall_time_ms)}.")
        zh = (f"电子计价秤 {scale_id} 最近 {n} 笔宽分布商品交易的末位显示数字（以 d 计）不均匀：每个数字应约 "
              f"{n / 10:.0f} 次，实为 {counts}（数字 {top}：{counts[top]} 次，"
              f"{counts[top] / n - 0.1:+.0%}）；卡方 {chi2:.1f}，自由度 9，p = {p_value:.1e}。"
              f"最新序号 {entry.seq}，时间 {utc_text(entry.wall_time_ms)}。")
        return [self.finding(
            entry, rule="scale.digit_heaping", severity="medium",
            score=min(1.0, 0.3 + chi2 / 400), en=en, zh=zh,
            observed={"counts": counts, "n": n, "chi_square": chi2, "p_value": p_value},
            evidence=evidence_ids(r[0] for r in own["digits"][-50:]))]


DETECTORS = (ScalePrice, ScaleZero, ScaleUnstableSale, ScaleTareAbuse, ScaleStepGain)
