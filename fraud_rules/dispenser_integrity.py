"""(being written)"""

DETECTORS = ()
