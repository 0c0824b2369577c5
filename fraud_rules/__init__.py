"""meterseal.fraud_rules: cheating detectors over verified records (CPython only; DESIGN.md §8,
docs/detectors.md).

    params = load_params()                     # the packaged, versioned default parameters
    engine = Engine(params, facts)             # facts: site, announced prices, work orders
    for finding in engine.feed(entry):         # entry: one verified record, in seq order
        ...
    saved = engine.checkpoint()                # JSON-able; Engine(params, facts, saved) resumes
"""

from . import native

native.use_compiled(__path__)  # before the first detector module is imported

from .engine import Engine, Entry, device_ref
from .facts import Facts, StaticFacts, WorkOrder
from .finding import Finding
from .params import ParamsError, load_params

__all__ = ["Engine", "Entry", "Facts", "Finding", "ParamsError", "StaticFacts", "WorkOrder",
           "device_ref", "load_params"]
