"""The gateway's configuration: one JSON file (MicroPython has json, not TOML) -> `Config`.

Every key is checked at start-up, and unknown keys are refused, so a typo cannot silently fall
back to a default. A problem raises ConfigError naming the key, e.g. `devices[1].port: missing`.
docs/operations.md is the reference for every key.
"""

import json

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_MAX_ID_LEN = 32  # the record schema's gateway_id and scale_id limit

PROTOCOLS = ("dart", "mtsics", "tls")
DART_MODES = ("master", "tap")
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
# Each protocol's usual line (docs/protocols): DART 9600 8O1, MT-SICS 9600 8N1, TLS 9600 7O1.
_SERIAL_DEFAULTS = {
    "dart": {"baudrate": 9600, "bits": 8, "parity": "O", "stop": 1},
    "mtsics": {"baudrate": 9600, "bits": 8, "parity": "N", "stop": 1},
    "tls": {"baudrate": 9600, "bits": 7, "parity": "O", "stop": 1},
}
# What "addresses" means per protocol, and its range: DART pump addresses, TLS tank numbers.
_ADDRESS_RANGES = {"dart": (0x50, 0x6F), "tls": (1, 99)}
_DART_NOZZLES = 15  # DC7 has a grade for nozzles 1..15


class ConfigError(ValueError):
    """A configuration the gateway must not start with; `key` is the dotted path of the fault."""

    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message))
        self.key = key


class Section:
    """Checked values as attributes; `config.watchdog.checkin_ms`."""

    def __init__(self, values):
        for name in values:
            setattr(self, name, values[name])


class _Reader:
    """Takes the keys of one JSON object in turn; `done()` refuses whatever was not taken."""

    def __init__(self, obj, key):
        if not isinstance(obj, dict):
            raise ConfigError(key or "(top level)", "expected an object")
        self.obj = obj
        self.key = key
        self.taken = []

    def path(self, name):
        return self.key + "." + name if self.key else name

    def get(self, name, default=None, required=False):
        self.taken.append(name)
        if name in self.obj and self.obj[name] is not None:
            return self.obj[name]
        if required:
            raise ConfigError(self.path(name), "missing")
        return default

    def integer(self, name, low, high, default=None):
        value = self.get(name, default, default is None)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(self.path(name), "expected a whole number %d..%d, got %r"
                              % (low, high, value))
        return value

    def text(self, name, default=None):
        value = self.get(name, default, default is None)
        if not isinstance(value, str) or not value:
            raise ConfigError(self.path(name), "expected a non-empty string, got %r" % (value,))
        return value

    def optional_text(self, name):
        if self.get(name) is None:
            return None
        return self.text(name)

    def identifier(self, name):
        value = self.text(name)
        if len(value) > _MAX_ID_LEN or any(c not in _ID_CHARS for c in value):
            raise ConfigError(self.path(name), "expected 1..%d of A-Z a-z 0-9 . _ -, got %r"
                              % (_MAX_ID_LEN, value))
        return value

    def boolean(self, name, default):
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.path(name), "expected true or false, got %r" % (value,))
        return value

    def choice(self, name, choices, default=None):
        value = self.get(name, default, default is None)
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(self.path(name), "expected one of %s, got %r"
                              % (", ".join(str(c) for c in choices), value))
        return value

    def port(self, name):
        # A device path on the unix port, a UART / unit number on the boards.
        value = self.get(name, required=True)
        if isinstance(value, bool) or not (isinstance(value, int) and value >= 0
                                           or isinstance(value, str) and value):
            raise ConfigError(self.path(name), "expected a device path or a number, got %r"
                              % (value,))
        return value

    def section(self, name, required=False):
        return _Reader(self.get(name, {}, required), self.path(name))

    def done(self):
        for name in sorted(self.obj):
            if name not in self.taken:
                raise ConfigError(self.path(name), "unknown key")


class Config:
    """gateway_id; host (address, port, tls); devices (tuple of Section, see _device);
    intervals (heartbeat_s, tank_poll_s); paths (storage_root or None); seal (input or None);
    journal (segment_bytes, segments, commit_records, commit_ms); clock (step_threshold_ms);
    watchdog (timeout_ms, checkin_ms)."""

    def __init__(self, obj):
        top = _Reader(obj, "")
        self.gateway_id = top.identifier("gateway_id")

        r = top.section("host", required=True)
        self.host = Section({
            "address": r.text("address"),
            "port": r.integer("port", 1, 65535),
            "tls": r.boolean("tls", True),
            "ca_file": r.optional_text("ca_file"),
            "server_name": r.optional_text("server_name"),
        })
        if self.host.tls and self.host.ca_file is None:
            # Without the host's CA the gateway could not tell the host from an impostor.
            raise ConfigError("host.ca_file", "missing: TLS needs the host's CA certificate "
                                              "(or set host.tls to false)")
        if self.host.server_name is None:
            self.host.server_name = self.host.address
        r.done()

        devices = top.get("devices", required=True)
        if not isinstance(devices, list) or not devices:
            raise ConfigError("devices", "expected a non-empty list")
        self.devices = tuple(_device(item, "devices[%d]" % i) for i, item in enumerate(devices))
        _unique(self.devices, "name")
        _unique(self.devices, "port")

        r = top.section("intervals")
        self.intervals = Section({
            "heartbeat_s": r.integer("heartbeat_s", 10, 86400, 300),
            "tank_poll_s": r.integer("tank_poll_s", 10, 86400, 600),
        })
        r.done()

        r = top.section("paths")
        root = r.get("storage_root")
        self.paths = Section({"storage_root": None if root is None else r.text("storage_root")})
        r.done()

        r = top.section("seal")
        seal = r.get("input")
        self.seal = Section({"input": None if seal is None else r.port("input")})
        r.done()

        r = top.section("journal")
        self.journal = Section({
            "segment_bytes": r.integer("segment_bytes", 4096, 1048576, 65536),
            "segments": r.integer("segments", 2, 4096, 32),
            "commit_records": r.integer("commit_records", 1, 1000, 16),
            "commit_ms": r.integer("commit_ms", 0, 60000, 1000),
        })
        r.done()

        r = top.section("clock")
        # recorder.TIME_STEP_THRESHOLD_MS is the default.
        self.clock = Section({"step_threshold_ms": r.integer("step_threshold_ms", 100, 3600000,
                                                             2000)})
        r.done()

        r = top.section("watchdog")
        timeout_ms = r.integer("timeout_ms", 1000, 600000, 8000)
        checkin_ms = r.integer("checkin_ms", 100, 600000, 5000)
        if checkin_ms >= timeout_ms:
            raise ConfigError("watchdog.checkin_ms", "must be below watchdog.timeout_ms (%d)"
                              % timeout_ms)
        self.watchdog = Section({"timeout_ms": timeout_ms, "checkin_ms": checkin_ms})
        r.done()

        top.done()


def _device(obj, key):
    r = _Reader(obj, key)
    name = r.identifier("name")
    protocol = r.choice("protocol", PROTOCOLS)
    port = r.port("port")

    serial = r.section("serial")
    defaults = _SERIAL_DEFAULTS[protocol]
    values = {
        "name": name,
        "protocol": protocol,
        "port": port,
        "baudrate": serial.choice("baudrate", BAUDRATES, defaults["baudrate"]),
        "bits": serial.choice("bits", (7, 8), defaults["bits"]),
        "parity": serial.choice("parity", ("N", "E", "O"), defaults["parity"]),
        "stop": serial.choice("stop", (1, 2), defaults["stop"]),
        "mode": None,
        "addresses": (),
        "pulse_input": None,
        "decimals": None,
        "grades": None,
    }
    serial.done()

    if protocol == "dart":
        # Master polls the pump itself; tap only listens. No default: master mode takes the
        # pump away from the station's controller, so it must be chosen on purpose.
        values["mode"] = r.choice("mode", DART_MODES)
    if protocol in _ADDRESS_RANGES:
        values["addresses"] = _addresses(r, protocol)
    if protocol == "dart" and r.get("pulse_input") is not None:
        pulses = r.section("pulse_input")
        values["pulse_input"] = Section({
            "port": pulses.port("port"),
            "pulses_per_litre": pulses.integer("pulses_per_litre", 1, 100000),
        })
        pulses.done()
    if protocol == "dart" and (r.get("decimals") is not None or r.get("grades") is not None):
        values["decimals"], values["grades"] = _pump_parameters(r, values["mode"])
    r.done()
    return Section(values)


def _pump_parameters(r, mode):
    # The DC7 values a tap cannot hear when it starts after the controller configured the pumps:
    # (volume, amount, price) decimals, and the grade of nozzles 1..15 (0 = none), for every pump
    # of the line. The driver uses DC7's own as soon as the line shows them.
    for name, other in (("decimals", "grades"), ("grades", "decimals")):
        if r.get(name) is not None:
            if mode != "tap":
                raise ConfigError(r.path(name), "only for mode tap (a master reads the pump's own)")
            if r.get(other) is None:
                raise ConfigError(r.path(other), "missing (decimals and grades go together)")
    d = r.section("decimals")
    decimals = (d.integer("volume", 0, 8), d.integer("amount", 0, 8), d.integer("price", 0, 8))
    d.done()
    given = r.get("grades")
    if not isinstance(given, dict) or not given:
        raise ConfigError(r.path("grades"), "expected a non-empty object {nozzle: grade}")
    grades = [0] * _DART_NOZZLES
    for key in sorted(given):
        try:
            nozzle = int(key)
        except ValueError:
            nozzle = 0
        if str(nozzle) != key or not 1 <= nozzle <= _DART_NOZZLES:
            raise ConfigError(r.path("grades"), "expected nozzle numbers 1..%d, got %r"
                              % (_DART_NOZZLES, key))
        grade = given[key]
        if not isinstance(grade, int) or isinstance(grade, bool) or not 1 <= grade <= 99:
            raise ConfigError(r.path("grades") + "." + key, "expected a grade 1..99, got %r"
                              % (grade,))
        grades[nozzle - 1] = grade
    return decimals, tuple(grades)


def _addresses(r, protocol):
    low, high = _ADDRESS_RANGES[protocol]
    # A DART line needs its pump addresses; a tank gauge with none reports every tank.
    value = r.get("addresses", [], protocol == "dart")
    if not isinstance(value, list) or (protocol == "dart" and not value):
        raise ConfigError(r.path("addresses"), "expected a non-empty list" if protocol == "dart"
                          else "expected a list")
    for i, address in enumerate(value):
        if not isinstance(address, int) or isinstance(address, bool) \
                or not low <= address <= high:
            raise ConfigError("%s[%d]" % (r.path("addresses"), i),
                              "expected a whole number %d..%d, got %r" % (low, high, address))
    if len(set(value)) != len(value):
        raise ConfigError(r.path("addresses"), "lists an address twice")
    return tuple(value)


def _unique(devices, attr):
    seen = {}
    for i, device in enumerate(devices):
        value = getattr(device, attr)
        if value in seen:
            raise ConfigError("devices[%d].%s" % (i, attr), "%r is already used by devices[%d]"
                              % (value, seen[value]))
        seen[value] = i


def parse(obj):
    """Config from an already decoded JSON value."""
    return Config(obj)


def load(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, "cannot read the configuration file (%s)" % exc)
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ConfigError(path, "not valid JSON (%s)" % exc)
    return Config(obj)
