"""meterseal.firmware.hal: the only platform-specific code. `board()` returns the HAL module for
this interpreter's `sys.platform`; every HAL module has the same functions (docs/gateway.md)."""

import sys

# sys.platform -> HAL module. The unix port reports the host OS; its HAL speaks Linux termios
# (the c_cflag bits and speed codes differ on other systems), so only "linux" maps to it.
_MODULES = {"linux": "unix", "esp32": "esp32", "rp2": "rp2"}


def board():
    name = _MODULES.get(sys.platform)
    if name is None:
        raise OSError("meterseal has no HAL for platform %r" % sys.platform)
    module = "meterseal.firmware.hal." + name
    __import__(module)
    return sys.modules[module]
