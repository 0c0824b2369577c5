# meterseal.protocol: wire formats shared by the gateway (MicroPython) and the host (CPython).
