"""The catalogue: every detector the engine runs, in the order it runs them."""

from . import config_events, dispenser_integrity, flow_drift, scale, wetstock

DETECTORS = (
    *dispenser_integrity.DETECTORS,
    *config_events.DETECTORS,
    *flow_drift.DETECTORS,
    *wetstock.DETECTORS,
    *scale.DETECTORS,
)
