# meterseal.firmware: the gateway. Everything here runs on MicroPython as well as CPython.
