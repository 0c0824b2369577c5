# What goes on the device, by meterseal subpackage. The image build compiles exactly these files
# with mpy-cross; the software id is computed over them. Everything else in protocol/ and
# firmware/ is host-only and must be named in HOST_ONLY, so no file is forgotten silently.

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
    ),
    "firmware": (
        "__init__.py",
        "p256.py",
        "ecdsa.py",
        "signer.py",
    ),
}

HOST_ONLY = {
    "protocol": ("scapy_layers.py",),
    "firmware": ("manifest.py",),
}
