"""What a detector reports: one finding, scored and explained in English and Simplified Chinese.

An explanation says what was expected, what was observed and by how much, and names the
evidence (record ids, seqs, times), so an officer can act on it without opening the parameters.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

SEVERITIES = ("low", "medium", "high", "critical")
_CHINA = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Finding:
    rule: str                      # e.g. "dispenser.pulse_scaling"; the alert's rule id
    site_id: str
    gateway_id: str                # the gateway whose records are the main evidence
    device_ref: str | None         # engine.device_ref(...) form; None: the gateway itself
    severity: str
    score: float                   # 0..1, ranks alerts within a severity
    explanation_en: str
    explanation_zh: str
    parameters: dict               # the detector's parameters and the figures it measured
    evidence_record_ids: tuple     # the records that show it, ascending
    at_ms: int                     # wall time of the record that made the detector fire
    extra: dict = field(default_factory=dict, compare=False)  # e.g. plot series, not persisted

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside 0..1")


def utc_text(ms):
    """A wall time as officers read it in both languages: UTC, to the second."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_hour(ms, utc_offset_hours):
    """Hour of the day (0..23) at a site ``utc_offset_hours`` from UTC."""
    return int(((ms // 1000 + utc_offset_hours * 3600) // 3600) % 24)


def percent(ratio):
    """A ratio as a signed percentage with two decimals: 0.0312 -> '+3.12 %'."""
    return f"{ratio * 100:+.2f} %"


def litres(ml):
    return f"{ml / 1000:.2f} L"


def grams(mg):
    return f"{mg / 1000:g} g"


def evidence_ids(*groups):
    """Record ids from any number of iterables, without None or repeats, ascending."""
    return tuple(sorted({rid for group in groups for rid in group if rid is not None}))
