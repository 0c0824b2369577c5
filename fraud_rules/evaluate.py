"""The evaluation harness: run a labelled fleet (meterseal.hil.record_fleet) through the Engine
and score its findings against the ground truth (``meterseal evaluate --scenario FILE``).

Scoring, as the host's alert queue would present findings to an officer:

- an alarm is the first finding of a (site, device_ref, rule); later ones fold into it;
- an alarm is true when it names a cheating device (a dispenser or one of its nozzles, a scale)
  or, for a tank rule, a tank the cheating dispenser draws from, at or after the cheat started;
  every other alarm is false;
- per cheat class (kind, size, schedule): recall = cheating devices with a true alarm within
  ``window_days`` of the cheat's start / cheating devices; precision = true alarms / all alarms
  on the class's devices; median time-to-detect in simulated hours;
- false alarms per 1,000 device-days: false alarms / honest device-days × 1000, where a device
  is a dispenser, scale, tank or gateway, and a cheating device is honest until its cheat starts.
"""

import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from . import native
from .engine import Engine
from .params import load_params

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
RECALL_WINDOW_DAYS = 7


class EvaluateError(ValueError):
    """A harness run that cannot go ahead (a missing extra, a bad scenario)."""


def alarms_from(findings):
    """The first finding of each (site, device_ref, rule), in the order they came."""
    first = {}
    for finding in findings:
        key = (finding.site_id, finding.device_ref, finding.rule)
        if key not in first:
            first[key] = finding
    return list(first.values())


def _label_of(alarm, labels_by_site, tanks_of):
    """The label an alarm is true for, or None."""
    for label in labels_by_site.get(alarm["site_id"], ()):
        if alarm["at_ms"] < label.start_ms:
            continue
        if label.covers(alarm["device_ref"]) or alarm["device_ref"] in tanks_of(label):
            return label
    return None


def score(alarms, labels, devices, start_ms, end_ms, tanks_of=lambda label: (),
          window_days=RECALL_WINDOW_DAYS):
    """The report's numbers. ``alarms``: dicts with site_id, device_ref, rule, at_ms;
    ``labels``: record_fleet.Label; ``devices``: {(site_id, device_ref): kind}; the run spans
    ``start_ms``..``end_ms``; ``tanks_of(label)``: the tank refs the cheating device feeds."""
    # A cheat that starts after the run ends (a --days override) is not part of it.
    labels = [label for label in labels if label.start_ms < end_ms]
    labels_by_site = defaultdict(list)
    for label in labels:
        labels_by_site[label.site_id].append(label)
    run_days = (end_ms - start_ms) / DAY_MS
    # A cheating device is honest until its cheat starts; its tanks too.
    honest_days = len(devices) * run_days
    for label in labels:
        cheating_days = (end_ms - label.start_ms) / DAY_MS
        honest_days -= cheating_days * (1 + len(tanks_of(label)))
    first_true = {}
    class_alarms = defaultdict(lambda: [0, 0])  # class -> [true, all]
    caught_by = defaultdict(Counter)
    false_by_rule, all_by_rule, true_by_rule = Counter(), Counter(), Counter()
    true_total = 0
    for alarm in alarms:
        label = _label_of(alarm, labels_by_site, tanks_of)
        all_by_rule[alarm["rule"]] += 1
        owner = label or _owner(alarm, labels_by_site, tanks_of)
        if owner is not None:
            class_alarms[owner.cheat_class][1] += 1
        if label is None:
            false_by_rule[alarm["rule"]] += 1
            continue
        true_total += 1
        true_by_rule[alarm["rule"]] += 1
        class_alarms[label.cheat_class][0] += 1
        caught_by[label.cheat_class][alarm["rule"]] += 1
        if label not in first_true or alarm["at_ms"] < first_true[label]:
            first_true[label] = alarm["at_ms"]
    classes = {}
    for label in labels:
        row = classes.setdefault(label.cheat_class, {
            "kind": label.kind, "size": label.size, "schedule": label.schedule,
            "device_kind": label.device_kind, "devices": 0, "detected": 0, "delays_h": [],
            "full_window": True})
        row["devices"] += 1
        row["full_window"] &= end_ms - label.start_ms >= window_days * DAY_MS
        found = first_true.get(label)
        if found is not None and found - label.start_ms <= window_days * DAY_MS:
            row["detected"] += 1
            row["delays_h"].append(round((found - label.start_ms) / HOUR_MS, 2))
    for name, row in classes.items():
        true, total = class_alarms[name]
        row["recall"] = row["detected"] / row["devices"]
        row["true_alarms"], row["alarms"] = true, total
        row["precision"] = true / total if total else None
        row["median_ttd_h"] = statistics.median(row["delays_h"]) if row["delays_h"] else None
        row["caught_by"] = dict(caught_by[name].most_common())
    false_total = sum(false_by_rule.values())
    per_1000 = (lambda n: 1000 * n / honest_days) if honest_days > 0 else (lambda n: None)
    return {
        "recall_window_days": window_days,
        "classes": dict(sorted(classes.items(), key=lambda kv: (
            kv[1]["device_kind"], kv[1]["kind"], kv[1]["schedule"], kv[1]["size"]))),
        "alarms": len(alarms), "true_alarms": true_total, "false_alarms": false_total,
        "precision": true_total / len(alarms) if alarms else None,
        "honest_device_days": round(honest_days, 2),
        "false_alarms_per_1000_device_days": per_1000(false_total),
        "rules": {rule: {"alarms": all_by_rule[rule], "true": true_by_rule[rule],
                         "false": false_by_rule[rule],
                         "false_per_1000_device_days": per_1000(false_by_rule[rule])}
                  for rule in sorted(all_by_rule)},
    }


def _owner(alarm, labels_by_site, tanks_of):
    """The label whose device (or tank) a false alarm names: it counts against that class's
    precision (an alarm before the cheat started)."""
    for label in labels_by_site.get(alarm["site_id"], ()):
        if label.covers(alarm["device_ref"]) or alarm["device_ref"] in tanks_of(label):
            return label
    return None


def run(scenario, params_file=None, seed=None, days=None, progress=sys.stderr):
    """Generate the fleet, feed it to an Engine, and return (report dict, alarms)."""
    from meterseal.hil.record_fleet import Fleet

    fleet = Fleet(scenario, seed=seed, days=days)
    params = load_params(params_file)
    # A detector without a parameter section cannot run; the report names it instead of the
    # whole evaluation failing.
    from .detectors import DETECTORS
    sections = params.sections()
    runnable = [cls for cls in DETECTORS if cls.name in sections]
    skipped = [cls.name for cls in DETECTORS if cls.name not in sections]
    if skipped and progress is not None:
        progress.write(f"evaluate: skipping detectors without parameters: {', '.join(skipped)}\n")
    engine = Engine(params, fleet.facts, detectors=runnable)
    findings = []
    generated = cheated = 0
    engine_s = 0.0
    started = last_note = time.perf_counter()
    # The engine's share in CPU time, so that other work on the machine does not count.
    cpu = time.process_time
    for record_id, record, truth in fleet.records():
        generated += 1
        cheated += truth is True
        t0 = cpu()
        findings.extend(engine.feed(record_id, record))
        engine_s += cpu() - t0
        if progress is not None and generated % 10000 == 0 and time.perf_counter() - last_note >= 2:
            last_note = time.perf_counter()
            day = (record["wall_time_ms"] - fleet.start_ms) / DAY_MS
            progress.write(f"\revaluate: day {day:5.2f}/{fleet.days}  {generated:,} records  "
                           f"{len(findings):,} findings")
            progress.flush()
    total_s = time.perf_counter() - started
    if progress is not None:
        progress.write("\n")
    alarms = [{"site_id": f.site_id, "device_ref": f.device_ref, "rule": f.rule,
               "at_ms": f.at_ms, "severity": f.severity, "score": f.score}
              for f in alarms_from(findings)]
    end_ms = fleet.start_ms + fleet.days * DAY_MS
    report = score(alarms, fleet.labels, fleet.devices, fleet.start_ms, end_ms,
                   tanks_of=fleet.tanks_fed_by)
    report.update({
        "scenario": scenario["name"], "seed": fleet.seed, "days": fleet.days,
        "params_version": params.version,
        "detectors": [d.name for d in engine.detectors], "detectors_skipped": skipped,
        "detectors_build": native.describe(),
        "devices": dict(Counter(fleet.devices.values())),
        "cheating_devices": len(fleet.labels),
        "records": generated, "records_cheated": cheated, "findings": len(findings),
        "runtime_s": round(total_s, 2), "engine_cpu_s": round(engine_s, 2),
        "engine_records_per_s": round(generated / engine_s) if engine_s else None,
        "engine_us_per_record": round(1e6 * engine_s / generated, 1) if generated else None,
    })
    return report, alarms


def _pct(value):
    return "-" if value is None else f"{100 * value:.0f} %"


def _num(value, fmt="{:.1f}"):
    return "-" if value is None else fmt.format(value)


def table(report):
    """The report as Markdown: per cheat class, then per rule, then the totals."""
    lines = [f"# meterseal evaluation: {report['scenario']} (seed {report['seed']}, "
             f"{report['days']} days)", "",
             f"Devices: {report['devices']}; cheating devices: {report['cheating_devices']}; "
             f"records: {report['records']:,}; findings: {report['findings']:,}; "
             f"alarms: {report['alarms']}; parameters {report['params_version']}.", "",
             f"Recall within {report['recall_window_days']} days of the cheat's start (* the run "
             "ended before that window did for some of the class's devices).", "",
             "| device | cheat | size | schedule | devices | recall | precision | median TTD (h)"
             " | caught by |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["classes"].values():
        caught = ", ".join(f"{rule} ({n})" for rule, n in row["caught_by"].items()) or "-"
        lines.append(f"| {row['device_kind']} | {row['kind']} | {row['size']:g} | "
                     f"{row['schedule']} | {row['devices']} | {_pct(row['recall'])}"
                     f"{'' if row['full_window'] else '*'} | "
                     f"{_pct(row['precision'])} | {_num(row['median_ttd_h'])} | {caught} |")
    lines += ["", "| rule | alarms | true | false | false / 1000 device-days |",
              "|---|---|---|---|---|"]
    for rule, row in report["rules"].items():
        lines.append(f"| {rule} | {row['alarms']} | {row['true']} | {row['false']} | "
                     f"{_num(row['false_per_1000_device_days'], '{:.2f}')} |")
    lines += ["",
              f"Overall precision: {_pct(report['precision'])}; false alarms: "
              f"{report['false_alarms']} over {report['honest_device_days']:,} honest "
              f"device-days = {_num(report['false_alarms_per_1000_device_days'], '{:.2f}')} "
              "per 1,000 device-days.",
              f"Throughput: {report['engine_records_per_s']:,} records/s of CPU time through the "
              f"engine ({report['engine_us_per_record']} µs/record, detectors "
              f"{report['detectors_build']}); whole run {report['runtime_s']} s.", ""]
    return "\n".join(lines)


def require_plots():
    """matplotlib, the optional extra ``meterseal[plots]``, or a one-line EvaluateError."""
    try:
        import matplotlib
    except ImportError:
        raise EvaluateError("the plots need matplotlib: pip install 'meterseal[plots]'") from None
    return matplotlib


def plots(report, out_dir):
    """delay.png (time-to-detect per cheat class) and recall.png (recall against size per
    cheat kind)."""
    require_plots().use("Agg")
    from matplotlib import pyplot

    rows = list(report["classes"].values())
    names = [f"{r['kind']} {r['size']:g} {r['schedule']}" for r in rows]
    figure, axes = pyplot.subplots(figsize=(10, max(3, 0.35 * len(rows) + 1)))
    for y, row in enumerate(rows):
        # Every detected device's delay, and the median as a bar.
        axes.plot(row["delays_h"], [y] * len(row["delays_h"]), "o", alpha=0.5, color="tab:blue")
        if row["median_ttd_h"] is not None:
            axes.plot([row["median_ttd_h"]], [y], "|", markersize=16, color="black")
    axes.set_yticks(range(len(rows)), names, fontsize=7)
    axes.set_ylim(-1, len(rows))
    axes.axvline(RECALL_WINDOW_DAYS * 24, color="grey", linestyle="--")
    axes.set_xlabel("hours from cheat start to first alarm (detected devices)")
    axes.set_title(f"Detection delay, {report['scenario']}")
    figure.tight_layout()
    figure.savefig(Path(out_dir) / "delay.png", dpi=100)
    pyplot.close(figure)

    kinds = ("dispenser", "scale")
    figure, panels = pyplot.subplots(1, 2, figsize=(12, 5), sharey=True)
    for device_kind, axes in zip(kinds, panels):
        series = defaultdict(list)
        for r in rows:
            if r["device_kind"] == device_kind:
                series[f"{r['kind']} ({r['schedule']})"].append((r["size"], r["recall"]))
        for name, points in sorted(series.items()):
            points.sort()
            axes.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o",
                      label=name, alpha=0.8)
        axes.set_xscale("log")
        axes.set_xlabel("cheat size (% gain; g for offsets and tare; ms for unstable sales)"
                        if device_kind == "scale" else "cheat size (% of volume)")
        axes.set_ylim(-5, 105)
        axes.axhline(95, color="grey", linestyle="--")
        if series:
            axes.legend(fontsize=7)
        axes.set_title(f"{device_kind}s")
    panels[0].set_ylabel(f"recall within {RECALL_WINDOW_DAYS} days (%)")
    figure.suptitle(f"Recall against cheat size, {report['scenario']}")
    figure.tight_layout()
    figure.savefig(Path(out_dir) / "recall.png", dpi=100)
    pyplot.close(figure)


def write_report(report, alarms, out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "alarms.json").write_text(json.dumps(alarms, indent=1) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(table(report), encoding="utf-8")
    plots(report, out_dir)
