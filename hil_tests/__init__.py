# meterseal.hil: MicroPython runner, emulated devices and the conformance suite (CPython only).
