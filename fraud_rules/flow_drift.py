"""Flow-rate detectors: pulse scaling and selective cheating, seen through the reported flow.

A pulse-scaling cheat (a board between encoder and CPU, a doctored encoder, a changed K-factor)
makes the dispenser report g % more volume than it delivers, but the time a sale takes is
physical: at full trigger the reported flow rate is g % above what the pump really gives.

Per sale the detectors use the *steady flow*: the mean of the flow profile's intervals that lie
within ``steady_band`` of their median, leaving out the first and last interval. That drops the
ramp-up, the ramp-down, the creep before a preset and any pause, and the mean (rather than the
median) keeps the display's 10 mL steps from snapping the figure to a grid. volume / duration
would instead carry the dead time between nozzle lift, trigger and hang-up.

State, per site (JSON): ``nozzles`` maps "80/1" to that nozzle's grade, baseline, CUSUM and
bounded windows of recent steady flows.
"""

from bisect import bisect_left, bisect_right, insort

from .engine import Detector, dispenser_key
from .finding import local_hour, percent, utc_text
from .stats import cusum, mad_sigma, median, push_window, trimmed_mean

_MS_PER_MIN = 60000
# A nozzle's baseline and CUSUM state, dropped when it learns a new baseline.
_BASELINE_FIELDS = ("baseline", "learning", "cusum", "run", "calm", "alerted")
_UNMEASURED = object()  # Entry.shared holds no steady flow for the selection yet


def _steady(ordered, interval_ms, band):
    """Steady flow in L/min and the number of steady intervals of a sale's inner profile
    intervals, sorted; (None, 0) when there is none."""
    # Intervals with no flow (before the trigger, after the auto shut-off) are not flow.
    first = bisect_right(ordered, 0)
    n = len(ordered) - first
    if interval_ms <= 0 or n <= 0:
        return None, 0
    middle = first + n // 2
    centre = ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    low = bisect_left(ordered, centre * (1 - band), first)
    high = bisect_right(ordered, centre * (1 + band), first)
    if low >= high:
        return None, 0
    return sum(ordered[low:high]) / (high - low) * _MS_PER_MIN / interval_ms / 1000, high - low


def steady_flow_lpm(body, band):
    """The sale's steady flow in L/min and the number of steady intervals, or (None, 0)."""
    return _steady(sorted(body.get("flow_profile_ml", [])[1:-1]),
                   body.get("flow_interval_ms") or 0, band)


def tail_flow_lpm(body, split_ml, band):
    """Steady flow of the part of the sale after ``split_ml`` had been dispensed, or (None, 0)."""
    profile = body.get("flow_profile_ml", [])
    start = _tail_start(profile, split_ml)
    if start is None or start >= len(profile) - 1:
        return None, 0
    return _steady(sorted(profile[start:-1]), body.get("flow_interval_ms") or 0, band)


def _tail_start(profile, split_ml):
    """Index of the first interval that starts with ``split_ml`` already dispensed (the tail
    keeps it, and like any sale's profile leaves out its last), or None when the sale never
    reached it. A walk from the first interval was a tenth of all the detectors' bytecodes on
    1 s profiles, so the walk starts at the volume's share of the intervals, where the sums
    (in C) put it within a few intervals of the answer."""
    total = sum(profile)
    if not profile or total < split_ml:
        return None
    start = max(1, len(profile) * split_ml // total) if total > 0 else 1
    dispensed = sum(profile[:start])
    while dispensed < split_ml:
        dispensed += profile[start]
        start += 1
    while start > 1 and dispensed - profile[start - 1] >= split_ml:
        start -= 1
        dispensed -= profile[start]
    return start


def _evidence_text(run):
    """(seq range, time range) of [record_id, seq, wall_ms] rows."""
    return (f"{run[0][1]}..{run[-1][1]}",
            f"{utc_text(run[0][2])} .. {utc_text(run[-1][2])}")


def _due(nozzle, counter, every):
    """True on every ``every``-th call for this nozzle: the peer comparisons, whose cost grows
    with the site's nozzles, run that often; a median of tens of sales moves little between."""
    nozzle[counter] = nozzle.get(counter, 0) + 1
    if nozzle[counter] < every:
        return False
    nozzle[counter] = 0
    return True


class _FlowDetector(Detector):
    def __init__(self, params, facts):
        super().__init__(params, facts)
        # What selects and measures a sale: detectors with the same values share the result
        # (keyed by a string, whose hash is kept, unlike a tuple's).
        self._selection = (self.params["min_volume_ml"], self.params["steady_band"],
                           self.params["min_steady_intervals"])
        self._selection_key = "steady flow %r" % (self._selection,)

    def _qualifying_flow(self, entry):
        """The sale's steady flow when it is a full draw above the minimum volume, else None."""
        min_volume_ml, band, min_intervals = self._selection
        if entry.body.get("volume_ml", 0) < min_volume_ml or not entry.device_ref:
            return None
        flow, intervals = steady_flow_lpm(entry.body, band)
        return flow if intervals >= min_intervals else None

    def measured(self, entry, state):
        """(flow, key, the site's nozzles, this nozzle's state, (record id, seq, time)) for a
        qualifying sale, else None; the flow is worked out once for every flow detector that
        selects sales alike. Nozzles are keyed by gateway and device: DART addresses are per
        line, so two gateways of one site can both read a nozzle 80/1."""
        shared = entry.shared
        flow = shared.get(self._selection_key, _UNMEASURED)
        if flow is _UNMEASURED:
            flow = shared[self._selection_key] = self._qualifying_flow(entry)
        if flow is None:
            return None
        nozzles = state.get("nozzles")
        if nozzles is None:
            nozzles = state["nozzles"] = {}
        key = entry.device_key
        nozzle = nozzles.get(key)
        if nozzle is None:
            nozzle = nozzles[key] = {
                "grade": entry.body["grade"],
                "dispenser": dispenser_key(entry)}
        # A tuple of numbers: once a collection has seen it the garbage collector no longer
        # tracks it, where a window of lists would be walked at every full collection.
        return flow, key, nozzles, nozzle, (entry.record_id, entry.seq, entry.wall_time_ms)


def _replace_sorted(values, old, new):
    """Replace ``old`` by ``new`` in the sorted list ``values`` (None for either: only add, only
    remove). False, and nothing changed, when ``old`` is not there: the list is out of step with
    what it indexes."""
    if old is not None:
        at = bisect_left(values, old)
        if at == len(values) or values[at] != old:
            return False
        del values[at]
    if new is not None:
        insort(values, new)
    return True


class PeerView:
    """Sorted values, read in place: without one of them (the asking nozzle's own, at index
    ``skip``) and within [low, high) of the list. A comparison reads a median and a count off a
    site's index this way, not off a copy of it."""

    __slots__ = ("_values", "_skip", "_low", "_high")

    def __init__(self, values, skip=None, low=0, high=None):
        self._values = values
        self._low = low
        self._high = len(values) if high is None else high
        self._skip = skip if skip is not None and low <= skip < self._high else None

    def __len__(self):
        return self._high - self._low - (self._skip is not None)

    def __iter__(self):
        return (self._at(k) for k in range(len(self)))

    def _at(self, k):
        index = self._low + k
        if self._skip is not None and index >= self._skip:
            index += 1
        return self._values[index]

    def median(self):
        n = len(self)
        if n == 0:
            raise ValueError("median of no values")
        mid = n // 2
        return self._at(mid) if n % 2 else (self._at(mid - 1) + self._at(mid)) / 2

    def within(self, low_value, high_value):
        """The values between ``low_value`` and ``high_value``, both included."""
        values = self._values
        return PeerView(values, self._skip, bisect_left(values, low_value, self._low, self._high),
                        bisect_right(values, high_value, self._low, self._high))


def _view_without(values, own):
    """A PeerView of the sorted ``values`` without one ``own`` (all of them for None)."""
    return PeerView(values, None if own is None else bisect_left(values, own))


class PeerValues:
    """An index of the value each nozzle of a site publishes for its peers (its window's median
    flow, its large-to-small flow ratio): by grade, sorted, so that a nozzle's comparison with its
    peers is a bisect, not a pass over every nozzle of the site (with 128 nozzles of one grade,
    that pass was most of the flow detectors' cost).

    The index is always what the state holds: it is built from the state the first time a site is
    asked about, and ``publish`` changes a value in the state and the index together. So it is
    kept beside the state, not in it, and a restored checkpoint gives the same comparisons."""

    def __init__(self, field, value_of):
        self._field = field  # the nozzle state's field that holds what it publishes
        self._value_of = value_of  # a nozzle's state -> its published value, or None
        self._sites = {}  # site id -> {grade: (keys of its nozzles, their values sorted)}

    def publish(self, site_id, nozzles, key, nozzle, value):
        """Set the nozzle's published field to ``value``."""
        grades = self._grades(site_id, nozzles)
        members, values = grades.setdefault(nozzle["grade"], (set(), []))
        members.add(key)
        old = self._value_of(nozzle)
        nozzle[self._field] = value
        if not _replace_sorted(values, old, self._value_of(nozzle)):
            self._sites[site_id] = self._by_grade(nozzles)  # out of step with the state

    def of_peers(self, site_id, nozzles, key, nozzle):
        """A PeerView of the values of the nozzle's peers: the other nozzles of its grade at the
        site; when it has none, the sibling nozzles of its dispenser."""
        members, values = self._grades(site_id, nozzles).get(nozzle["grade"], ((), []))
        if len(members) - (key in members) == 0:
            siblings = (n for k, n in nozzles.items()
                        if k != key and n["dispenser"] == nozzle["dispenser"])
            return PeerView(sorted(value for value in map(self._value_of, siblings)
                                   if value is not None))
        return _view_without(values, self._value_of(nozzle))

    def _grades(self, site_id, nozzles):
        grades = self._sites.get(site_id)
        if grades is None:
            grades = self._sites[site_id] = self._by_grade(nozzles)
        return grades

    def _by_grade(self, nozzles):
        grades = {}
        for key, nozzle in nozzles.items():
            members, values = grades.setdefault(nozzle["grade"], (set(), []))
            members.add(key)
            value = self._value_of(nozzle)
            if value is not None:
                values.append(value)
        for _, values in grades.values():
            values.sort()
        return grades


class ModelMedians:
    """Peers across sites: per dispenser model (the registry's), the median steady flow of each
    site's nozzles of that model, kept in a detector's fleet state ({"models": {model: {site:
    median}}}) and indexed sorted beside it, so that a site is compared with every other site of
    the model by a bisect. One value per site and model keeps the state small enough to save."""

    def __init__(self):
        self._sorted = {}  # model -> the sites' medians, sorted

    def publish(self, fleet, model, site_id, value):
        by_site = fleet.setdefault("models", {}).setdefault(model, {})
        values = self._values(model, by_site)
        old = by_site.get(site_id)
        by_site[site_id] = value
        if not _replace_sorted(values, old, value):
            self._sorted[model] = sorted(by_site.values())  # out of step with the state

    def others(self, fleet, model, site_id):
        """A PeerView of the other sites' medians for ``model``."""
        by_site = fleet.get("models", {}).get(model, {})
        return _view_without(self._values(model, by_site), by_site.get(site_id))

    def _values(self, model, by_site):
        values = self._sorted.get(model)
        if values is None:
            values = self._sorted[model] = sorted(by_site.values())
        return values


class PulseScaling(_FlowDetector):
    """A nozzle's steady flow drifting up from its own baseline (one-sided CUSUM) or standing
    above its peers' (rolling medians)."""

    name = "dispenser.pulse_scaling"
    kinds = ("fuel.sale", "event")

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self._peers = PeerValues("median", lambda nozzle: nozzle.get("median"))
        self._models = ModelMedians()

    def feed(self, entry, state):
        if entry.kind == "event":
            self._after_work(entry, state)
            return []
        measured = self.measured(entry, state)
        if measured is None:
            return []
        flow, key, nozzles, nozzle, row = measured
        p = self.params
        # The window's flows and its sales' [record id, seq, time], side by side.
        window, ids = nozzle.get("window"), nozzle.get("window_ids")
        if window is None:
            window, ids = nozzle["window"], nozzle["window_ids"] = [], []
        window.append(flow)
        ids.append(row)
        size = p["peer_window_sales"]
        if len(window) > size:  # by more than one after a change of the parameter
            del window[:-size], ids[:-size]
        findings = []
        baseline = nozzle.get("baseline")
        if baseline is None:
            learning = nozzle.setdefault("learning", [])
            learning.append(flow)
            if len(learning) >= p["baseline_sales"]:
                centre = trimmed_mean(learning, p["baseline_trim"])
                nozzle["baseline"] = [centre, max(mad_sigma(learning) / centre, p["min_sigma"])]
                del nozzle["learning"]
        else:
            findings.extend(self._cusum_step(entry, nozzle, flow, row))
        findings.extend(self._peer_check(entry, state, key, nozzles, nozzle))
        return findings

    def _after_work(self, entry, state):
        """Authorised work that may rightly change what a dispenser reports (a calibration, a
        parameter change, a new board) restarts its nozzles' baselines: the flow after it is
        the new normal."""
        dispenser = self.reworked_dispenser(entry)
        if dispenser is None:
            return
        for nozzle in state.get("nozzles", {}).values():
            if nozzle["dispenser"] == dispenser:
                for field in _BASELINE_FIELDS:
                    nozzle.pop(field, None)

    def _cusum_step(self, entry, nozzle, flow, row):
        p = self.params
        centre, sigma = nozzle["baseline"]
        excess = flow / centre - 1
        # Clipped, so that one odd sale (a pause the steady band missed) cannot make an alarm.
        z = max(-p["z_clip"], min(p["z_clip"], (excess - p["allowance"]) / sigma))
        side, run = nozzle.get("cusum"), nozzle.get("run")
        if side is None:  # not setdefault: its default would be built on every sale
            side = nozzle["cusum"] = {}
        if run is None:
            run = nozzle["run"] = []
        crossed = cusum(side, z, p["k"], p["h"]) == 1
        side["lo"] = 0.0  # one-sided: only over-registration is a cheat
        if crossed or side["hi"] > 0:
            push_window(run, (*row, excess), p["max_evidence"])
        else:
            run.clear()
        # Re-arm after the excess has gone: the CUSUM back at zero for rearm_sales sales.
        nozzle["calm"] = 0 if side["hi"] > 0 or crossed else nozzle.get("calm", 0) + 1
        if nozzle.get("alerted") and nozzle["calm"] >= p["rearm_sales"]:
            nozzle["alerted"] = False
        if not crossed or nozzle.get("alerted"):
            if crossed:
                run.clear()
            return []
        nozzle["alerted"] = True
        rows = list(run)
        run.clear()
        mean_excess = sum(r[3] for r in rows) / len(rows)
        return [self._finding(entry, "baseline", centre, centre * (1 + mean_excess),
                              mean_excess, rows)]

    def _peer_check(self, entry, state, key, nozzles, nozzle):
        p = self.params
        window = nozzle["window"]
        if not _due(nozzle, "peer_due", p["peer_every"]) or len(window) < p["min_peer_sales"]:
            return []
        # Published for the peers' comparisons too: the median as of this comparison.
        own = median(window)
        self._peers.publish(entry.site_id, nozzles, key, nozzle, own)
        return (self._site_peers(entry, key, nozzles, nozzle, own)
                + self._model_peers(entry, state, nozzles, nozzle))

    def _site_peers(self, entry, key, nozzles, nozzle, own):
        p = self.params
        peers = self._peers.of_peers(entry.site_id, nozzles, key, nozzle)
        # Peers of another class (an HGV nozzle beside a car nozzle) are no reference.
        band = p["peer_class_band"]
        medians = peers.within(own * (1 - band), own * (1 + band))
        if not medians:
            return []
        expected = medians.median()
        excess = own / expected - 1
        if nozzle.get("peer_alerted"):
            if excess < p["peer_tolerance"] / 2:
                nozzle["peer_alerted"] = False  # re-armed once back well inside the tolerance
            return []
        if excess <= p["peer_tolerance"]:
            return []
        nozzle["peer_alerted"] = True
        return [self._finding(entry, "peers", expected, own, excess, nozzle["window_ids"],
                              peers=len(medians))]

    def _model_peers(self, entry, state, nozzles, nozzle):
        """The site's nozzles of this dispenser model (their median of window medians) against
        the same model at other sites: the reference when every nozzle of a grade at the site
        is scaled alike (a board on the dispenser bus), or a cheat was there from the first
        record, where neither the nozzle's baseline nor its site's peers can see it."""
        p = self.params
        model = self.facts.device_model(entry.gateway_id, str(entry.device["dispenser_address"]))
        if model is None:
            return []
        nozzle["model"] = model
        # Once per round of the site's nozzles of the model, not at each of their comparisons:
        # the site's median is a pass over its nozzles, and moves little in a round.
        rounds = state.setdefault("model_rounds", {})
        if rounds.get(model, 0) > 1:
            rounds[model] -= 1
            return []
        medians = [n["median"] for n in nozzles.values()
                   if n.get("model") == model and "median" in n]
        rounds[model] = len(medians)
        here = median(medians)
        self._models.publish(self.fleet, model, entry.site_id, here)
        others = self._models.others(self.fleet, model, entry.site_id)
        if len(others) < p["min_model_sites"]:
            return []
        expected = others.median()
        excess = here / expected - 1
        alerted = state.setdefault("models_alerted", {})
        if alerted.get(model):
            if excess < p["model_tolerance"] / 2:
                alerted[model] = False  # re-armed once back well inside the tolerance
            return []
        if excess <= p["model_tolerance"]:
            return []
        alerted[model] = True
        seqs, times = _evidence_text(nozzle["window_ids"])
        en = (f"Site {entry.site_id}: its {len(medians)} nozzle(s) of dispenser model {model} "
              f"show a median steady flow of {here:.2f} L/min against {expected:.2f} L/min, the "
              f"median of {len(others)} other site(s) with that model: {percent(excess)}. The "
              f"site's dispensers of this model report more volume than they deliver (scaling "
              f"on every nozzle, or since the first record). Latest: nozzle {entry.device_ref}, "
              f"sales seq {seqs}, {times}.")
        zh = (f"站点 {entry.site_id}：该站 {len(medians)} 支 {model} 型加油机油枪的稳定流量中位数为 "
              f"{here:.2f} L/min，而其他 {len(others)} 个站点同型号的中位数为 {expected:.2f} L/min，"
              f"偏高 {percent(excess)}：该站此型号加油机显示的体积多于实际发出的体积（所有油枪同时"
              f"被放大，或自第一条记录起即被放大）。最近：油枪 {entry.device_ref}，交易序号 {seqs}，"
              f"{times}。")
        observed = {"reference": "model", "model": model, "expected_lpm": round(expected, 3),
                    "observed_lpm": round(here, 3), "excess": round(excess, 5),
                    "site_nozzles": len(medians), "other_sites": len(others)}
        return [self.finding(entry, severity="high",
                             score=excess / p["full_score_excess"], en=en, zh=zh,
                             observed=observed, evidence=[r[0] for r in nozzle["window_ids"]])]

    def _finding(self, entry, reference, expected, observed, excess, rows, peers=0):
        seqs, times = _evidence_text(rows)
        n = len(rows)
        if reference == "baseline":
            what_en = "its own baseline flow"
            what_zh = "其自身基线流量"
        else:
            what_en = f"the median flow of {peers} peer nozzle(s) of grade {entry.body['grade']}"
            what_zh = f"同油品（{entry.body['grade']}）{peers} 支同类油枪的流量中位数"
        en = (f"Nozzle {entry.device_ref}: steady flow over {n} sales (seq {seqs}, {times}) was "
              f"{observed:.2f} L/min against {what_en} of {expected:.2f} L/min, "
              f"{percent(excess)}: the dispenser reports more volume than it delivers "
              "(pulse scaling or a changed K-factor).")
        zh = (f"油枪 {entry.device_ref}：{n} 笔交易（序号 {seqs}，{times}）的稳定流量为 "
              f"{observed:.2f} L/min，而{what_zh}为 {expected:.2f} L/min，偏高 {percent(excess)}："
              "加油机显示的体积多于实际发出的体积（脉冲放大或 K 系数被改）。")
        observed_fields = {"reference": reference, "expected_lpm": round(expected, 3),
                           "observed_lpm": round(observed, 3), "excess": round(excess, 5),
                           "sales": n, "seq_first": rows[0][1], "seq_last": rows[-1][1]}
        return self.finding(entry, severity="high", score=excess / self.params["full_score_excess"],
                            en=en, zh=zh, observed=observed_fields,
                            evidence=[r[0] for r in rows])


def _window():
    """A rolling window of sales: (flow, record id, seq, time) in arrival order, and the flows
    sorted."""
    return {"rows": [], "sorted": []}


class SelectiveFlow(_FlowDetector):
    """Flow that depends on draw size (the part of large draws past ``split_ml`` against small
    and medium draws) or on the time of day (one block of hours against the rest)."""

    name = "dispenser.selective"
    kinds = ("fuel.sale",)

    def __init__(self, params, facts):
        super().__init__(params, facts)
        self._peers = PeerValues("size_ratio",
                                 lambda nozzle: (nozzle.get("size_ratio") or (None,))[0])

    def feed(self, entry, state):
        measured = self.measured(entry, state)
        if measured is None:
            return []
        flow, key, nozzles, nozzle, row = measured
        p = self.params
        size = nozzle.get("size")
        if size is None:  # not setdefault: its default would be built on every sale
            size = nozzle["size"] = {"small": _window(), "large": _window()}
        if entry.body["volume_ml"] < p["split_ml"]:
            self._push(size["small"], flow, row)
        else:
            tail, intervals = tail_flow_lpm(entry.body, p["split_ml"], p["steady_band"])
            if tail is not None and intervals >= p["min_steady_intervals"]:
                self._push(size["large"], tail, row)
        block = local_hour(entry.wall_time_ms, p["utc_offset_hours"]) // p["hours_per_block"]
        blocks = nozzle.get("hours")
        if blocks is None:
            blocks = nozzle["hours"] = {}
        block_key = str(block)
        inside = blocks.get(block_key)
        if inside is None:
            inside = blocks[block_key] = _window()
        self._push(inside, flow, row)
        if not _due(nozzle, "check_due", p["check_every"]):
            return []
        findings = []
        self._peers.publish(entry.site_id, nozzles, key, nozzle,
                            self._ratio(size["large"], [size["small"]]))
        # Large draws flow faster than small ones at every nozzle (less of each is ramp-up), so
        # the size split is judged only against peers that show how much faster.
        ratios = self._peers.of_peers(entry.site_id, nozzles, key, nozzle)
        if len(ratios) >= p["min_peers"]:
            findings += self._check(entry, nozzle, "size_alerted", nozzle["size_ratio"],
                                    ratios.median(), size["large"]["rows"], self._size_text)
        rest = [w for other, w in blocks.items() if other != block_key]
        findings += self._check(entry, nozzle, f"hours_alerted_{block}", self._ratio(inside, rest),
                                0.0, inside["rows"], lambda: self._hours_text(block))
        return findings

    def _push(self, window, flow, row):
        """Add a sale to a window, which keeps its flows sorted too, so that no check re-sorts a
        window."""
        rows, ordered = window["rows"], window["sorted"]
        rows.append((flow, *row))
        insort(ordered, flow)
        if len(rows) > self.params["window_sales"]:
            del ordered[bisect_left(ordered, rows.pop(0)[0])]
        window["stats"] = None

    def _summary(self, window):
        """[n, median, relative standard error of the median (1.2533 sigma / sqrt(n))]."""
        stats = window.get("stats")
        if stats is None:  # the window moved since its last check: a check reads several
            ordered = window["sorted"]
            n = len(ordered)
            centre = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
            # Robust sigma from the interquartile range (IQR / 1.349).
            stats = window["stats"] = [n, centre,
                                       (ordered[(3 * n) // 4] - ordered[n // 4]) / 1.349 / centre]
        n, centre, sigma = stats
        return n, centre, 1.2533 * max(sigma, self.params["min_sigma"]) / n ** 0.5

    def _ratio(self, inside, others):
        """[relative excess of inside over the others, its standard error, inside median, others'
        median] or None. The others' windows (each with enough sales) are pooled as the
        sales-weighted mean of their medians."""
        least = self.params["min_sales_per_side"]
        if len(inside["rows"]) < least:
            return None
        parts = [self._summary(w) for w in others if len(w["rows"]) >= least]
        if not parts:
            return None
        total = sum(n for n, _, _ in parts)
        m_out = sum(n * m for n, m, _ in parts) / total
        se_out = sum((n * m / total / m_out * se) ** 2 for n, m, se in parts) ** 0.5
        _, m_in, se_in = self._summary(inside)
        return [m_in / m_out - 1, (se_in ** 2 + se_out ** 2) ** 0.5, m_in, m_out]

    def _check(self, entry, nozzle, flag, ratio, reference, rows, split):
        p = self.params
        if ratio is None:
            return []
        excess, se, m_in, m_out = ratio
        excess -= reference
        if nozzle.get(flag):
            if excess < p["tolerance"] / 2:
                nozzle[flag] = False  # re-armed once the split is back well inside tolerance
            return []
        if excess <= p["tolerance"] or excess / se <= p["z"]:
            return []
        nozzle[flag] = True
        seqs, times = _evidence_text([r[1:] for r in rows])
        en_split, zh_split, en_rest, zh_rest = split()
        en = (f"Nozzle {entry.device_ref}: steady flow of {en_split} was {m_in:.2f} L/min over "
              f"{len(rows)} sales (seq {seqs}, {times}), against {m_out:.2f} L/min for "
              f"{en_rest}: {percent(excess)}"
              + (f" beyond the peers' own difference of {percent(reference)}" if reference else "")
              + f" (z = {excess / se:.1f}). The dispenser over-registers selectively.")
        zh = (f"油枪 {entry.device_ref}：{zh_split}的稳定流量为 {m_in:.2f} L/min（{len(rows)} 笔，"
              f"序号 {seqs}，{times}），而{zh_rest}为 {m_out:.2f} L/min，偏高 {percent(excess)}"
              + (f"（已扣除同类油枪本身的差异 {percent(reference)}）" if reference else "")
              + f"（z = {excess / se:.1f}）。加油机存在选择性多计量。")
        observed = {"split": en_split, "inside_lpm": round(m_in, 3), "rest_lpm": round(m_out, 3),
                    "excess": round(excess, 5), "z": round(excess / se, 2),
                    "peer_reference": round(reference, 5), "sales": len(rows),
                    "seq_first": rows[0][2], "seq_last": rows[-1][2]}
        return [self.finding(entry, severity="high",
                             score=excess / p["full_score_excess"], en=en, zh=zh,
                             observed=observed, evidence=[r[1] for r in rows])]

    def _size_text(self):
        litres = self.params["split_ml"] / 1000
        return (f"draws above {litres:g} L (the part past {litres:g} L)",
                f"{litres:g} L 以上的大额加油（超过 {litres:g} L 的部分）",
                f"draws below {litres:g} L", f"{litres:g} L 以下的加油")

    def _hours_text(self, block):
        hours, offset = self.params["hours_per_block"], self.params["utc_offset_hours"]
        span = f"{block * hours:02d}:00-{(block + 1) * hours:02d}:00 (UTC{offset:+g})"
        return (f"sales between {span}", f"当地时间 {span} 的加油",
                "the other hours", "其他时段")


DETECTORS = (PulseScaling, SelectiveFlow)
