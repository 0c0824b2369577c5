"""Software identification: name, version, and a SHA-256 over the exact files of the image.

The image is the `meterseal/` tree of compiled modules, wherever it lives: a directory on the
unix port, the flash filesystem (or /rom) on a board. Canonical digest, in one place for the
build (CPython) and the running firmware (MicroPython)::

    SHA-256 over every *.mpy file below <root>/meterseal, ordered by its path relative to <root>
    ("meterseal/firmware/softid.mpy", compared as strings), each fed as
    [ path, UTF-8 ][ 0x00 ][ length, 4 bytes big-endian ][ content ]

The path is part of the digest, so renaming or moving a module changes it. The running firmware
hashes the files it was imported from; `meterseal gateway build` hashes the files it wrote;
both call `image_facts`.
"""

import hashlib
import os
import struct

NAME = "meterseal-gw"
VERSION = "0.1.0"

_PACKAGE = "meterseal"
_SELF = "meterseal/firmware/softid."
_DIR_BIT = 0x4000  # S_IFDIR in os.stat()[0], on every port
_CHUNK = 512  # file content is hashed through one small buffer: no file is held in RAM

_running = None


class SoftIdError(OSError):
    def __init__(self, message):
        super().__init__(message)


def _join(directory, name):
    return directory + name if directory.endswith("/") else directory + "/" + name


def _image_files(root, relative, found):
    directory = _join(root, relative)
    for name in os.listdir(directory):
        path = relative + "/" + name
        if os.stat(_join(root, path))[0] & _DIR_BIT:
            _image_files(root, path, found)
        elif name.endswith(".mpy"):
            found.append(path)


def image_facts(root):
    """{"files": count, "bytes": total .mpy bytes, "digest": 32 bytes} of the image at `root`."""
    paths = []
    try:
        _image_files(root, _PACKAGE, paths)
    except OSError:
        raise SoftIdError("no gateway image at %s (expected %s)" % (root, _join(root, _PACKAGE)))
    if not paths:
        raise SoftIdError("no compiled modules below %s" % _join(root, _PACKAGE))
    paths.sort()
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    total = 0
    for path in paths:
        full = _join(root, path)
        size = os.stat(full)[6]
        digest.update(path.encode() + b"\0" + struct.pack(">I", size))
        with open(full, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                digest.update(view[:n])
        total += size
    return {"files": len(paths), "bytes": total, "digest": digest.digest()}


def image_root():
    """The root this module was imported from: the image the firmware runs."""
    path = __file__
    at = path.rfind(_SELF)
    if at < 0 or not path.endswith(".mpy"):
        raise SoftIdError("not running from a built image (%s); run meterseal gateway build"
                          % path)
    return path[:at] or "."


def running():
    """{"name", "version", "digest"} of the running firmware, computed once per boot."""
    global _running
    if _running is None:
        _running = {"name": NAME, "version": VERSION,
                    "digest": image_facts(image_root())["digest"]}
    return _running
