# What goes on the device. Keys are package folders relative to the repository root (each lands
# at meterseal/<folder>/ in the image); the image build compiles exactly these files with
# mpy-cross, and the software id is computed over them. PORT_FILES adds the one HAL module of
# the target port. Everything else in these folders is host-only and must be named in
# HOST_ONLY, so no file is forgotten silently.

DEVICE_FILES = {
    "protocol": (
        "__init__.py",
        "errors.py",
        "cbor.py",
        "crc.py",
        "cose.py",
        "records.py",
        "plain.py",
        "dart.py",
        "mtsics.py",
        "tls.py",
        "uplink.py",
    ),
    "firmware": (
        "__init__.py",
        "timing.py",
        "aio.py",
        "p256.py",
        "ecdsa.py",
        "signer.py",
        "config.py",
        "state.py",
        "journal.py",
        "uplink.py",
        "supervisor.py",
        "softid.py",
        "recorder.py",
        "main.py",
    ),
    "firmware/drivers": (
        "__init__.py",
        "link.py",
        "dart.py",
        "pulses.py",
        "mtsics.py",
        "tls.py",
    ),
    "firmware/hal": ("__init__.py",),
}

PORT_FILES = {
    "unix": {"firmware/hal": ("unix.py",)},
    "esp32": {"firmware/hal": ("mcu.py", "esp32.py")},
    "rp2": {"firmware/hal": ("mcu.py", "rp2.py")},
}

HOST_ONLY = {
    "protocol": ("scapy_layers.py",),
    "firmware": ("manifest.py",),
    "firmware/drivers": (),
    "firmware/hal": (),
}
