"""`meterseal gateway build | info | flash | run | provision-request`: the gateway image, from
compile to running, and the request an installer registers it with.

- build: compile the device files of one port with mpy-cross into DIR/meterseal/..., report
  size against the 200 KB budget and the software id (optionally also a ROMFS image).
- info: name, version and software id as the image's own firmware computes them (it runs
  softid on the MicroPython unix port, so the answer is what a record would carry).
- flash: copy an image, a launcher main.py and the configuration to a board with mpremote.
- run: check the configuration, build a fresh unix image and run the gateway on MicroPython.
- provision-request: create (or load) the gateway's key in its storage directory and print the
  JSON that `meterseal registry import-request` registers (docs/provisioning.md).

Contract with the firmware: `meterseal.firmware.main.main(config_path)` runs the gateway until
the process ends. On a board the launcher /main.py calls it with "/config.json".
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from meterseal.firmware import config, signer, softid
from meterseal.firmware.main import KEY_FILE
from meterseal.firmware.manifest import PORT_FILES
from meterseal.hil import micropython
from meterseal.host.software_ids import software_id
from meterseal.protocol import cose

IMAGE_BUDGET_BYTES = 200 * 1024  # DESIGN.md section 10
BOARDS = sorted(set(PORT_FILES) - {"unix"})
BOARD_CONFIG = "/config.json"
LAUNCHER = (
    "# meterseal gateway launcher, written by `meterseal gateway flash`\n"
    "import meterseal.firmware.main as m\n"
    "m.main(%r)\n" % BOARD_CONFIG
)
# Runs on the board before the copy, so no module of an older image survives into the new one
# (the software id covers every .mpy below /meterseal).
_REMOVE_OLD_IMAGE = """import os
def rm(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return
    if mode & 0x4000:
        for n in os.listdir(p):
            rm(p + "/" + n)
        os.rmdir(p)
    else:
        os.remove(p)
rm("/meterseal")
"""
# The configuration's path goes in the environment, not on the command line: this MicroPython
# build crashes on a command-line argument of 253 bytes or more (docs/development.md).
CONFIG_VARIABLE = "METERSEAL_GATEWAY_CONFIG"
_ENTRY = "import os, meterseal.firmware.main as m; m.main(os.getenv(%r))" % CONFIG_VARIABLE
_REPORT = ("from meterseal.firmware import softid; from binascii import hexlify; "
           "i = softid.running(); print(i['name'], i['version'], hexlify(i['digest']).decode())")


# What a provisioning request says it is; registry_cli refuses anything else.
PROVISIONING_REQUEST_FORMAT = "meterseal-provisioning-request/1"


class GatewayError(RuntimeError):
    pass


def _tool(name, hint):
    # Beside this interpreter first (the project's venv), then PATH.
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise GatewayError(f"'{name}' not found: {hint}")
    return found


def build_image(out, port="unix"):
    """A fresh image of `port` in `out` (its meterseal/ tree is replaced); returns its facts."""
    out = Path(out)
    shutil.rmtree(out / "meterseal", ignore_errors=True)
    micropython.build_image(out, port)
    return softid.image_facts(str(out))


def romfs_command(mpremote, image, output):
    # The image is compiled already, so mpremote must not compile again.
    return [mpremote, "romfs", "--no-mpy", "-o", str(output), "build", str(image)]


def reported_id(image):
    """(name, version, digest) as the firmware in `image` reports itself, on MicroPython."""
    env = dict(os.environ, MICROPYPATH=f"{Path(image).resolve()}:.frozen")
    result = subprocess.run([micropython.micropython_command(), "-c", _REPORT],
                            capture_output=True, text=True, timeout=120, env=env)
    if result.returncode != 0:
        raise GatewayError(f"the image in {image} cannot identify itself: "
                           f"{micropython.last_line(result)}")
    name, version, digest = result.stdout.split()
    return name, version, bytes.fromhex(digest)


def flash_command(mpremote, serial_port, image, launcher, config_file=None):
    """One mpremote invocation: remove the old image, copy the new one, the launcher and the
    configuration, then reset the board."""
    command = [mpremote, "connect", serial_port, "exec", _REMOVE_OLD_IMAGE,
               "+", "cp", "-r", str(Path(image) / "meterseal"), ":",
               "+", "cp", str(launcher), ":main.py"]
    if config_file is not None:
        command += ["+", "cp", str(config_file), ":" + BOARD_CONFIG]
    return command + ["+", "reset"]


def run_command(image, config_file, heapsize=None):
    command = [micropython.micropython_command()]
    if heapsize:
        command += ["-X", f"heapsize={heapsize}"]
    command += ["-c", _ENTRY]
    env = dict(os.environ, MICROPYPATH=f"{Path(image).resolve()}:.frozen")
    env[CONFIG_VARIABLE] = str(Path(config_file).resolve())
    return command, env


def _check_config(path):
    try:
        config.load(str(path))
    except config.ConfigError as exc:
        raise GatewayError(f"bad configuration: {exc}")


def _require_main(image):
    if not (Path(image) / "meterseal" / "firmware" / "main.mpy").is_file():
        raise GatewayError("the gateway firmware has no main module yet "
                           f"(no meterseal/firmware/main.mpy in {image})")


def cmd_build(args):
    out = Path(args.out or f"build/gateway-{args.port}")
    if args.romfs:
        mpremote = _tool("mpremote", "pip install mpremote, or build without --romfs")
    facts = build_image(out, args.port)
    share = 100 * facts["bytes"] // IMAGE_BUDGET_BYTES
    print(f"image ({args.port}): {out}")
    print(f"  {facts['files']} modules, {facts['bytes']} bytes of .mpy "
          f"(budget {IMAGE_BUDGET_BYTES}, {share}%)")
    print(f"  software id: {software_id(softid.NAME, softid.VERSION, facts['digest'])}")
    if args.romfs:
        romfs = out.with_name(out.name + ".romfs")
        result = subprocess.run(romfs_command(mpremote, out, romfs), capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise GatewayError(f"mpremote romfs build failed: {micropython.last_line(result)}")
        print(f"  ROMFS image: {romfs}")
    if facts["bytes"] > IMAGE_BUDGET_BYTES:
        raise GatewayError(f"the image is {facts['bytes']} bytes, over the "
                           f"{IMAGE_BUDGET_BYTES}-byte budget")
    return 0


def cmd_info(args):
    image = Path(args.image)
    if not (image / "meterseal").is_dir():
        raise GatewayError(f"no gateway image in {image}: run meterseal gateway build")
    name, version, digest = reported_id(image)
    print(f"name: {name}")
    print(f"version: {version}")
    print(f"software id: {software_id(name, version, digest)}")
    return 0


def cmd_flash(args):
    mpremote = _tool("mpremote", "pip install mpremote")
    if args.port.startswith("/") and not Path(args.port).exists():
        raise GatewayError(f"serial port {args.port} does not exist (is the board plugged in?)")
    if args.config:
        _check_config(args.config)
    with tempfile.TemporaryDirectory(prefix="meterseal-flash-") as work:
        image = Path(args.image) if args.image else Path(work) / "image"
        facts = softid.image_facts(str(image)) if args.image else build_image(image, args.board)
        _require_main(image)
        hal = image / "meterseal" / "firmware" / "hal"
        if not any((hal / f"{board}.mpy").is_file() for board in BOARDS):
            raise GatewayError(f"the image in {image} is not built for a board: "
                               "run meterseal gateway build --port esp32 (or rp2)")
        launcher = Path(work) / "main.py"
        launcher.write_text(LAUNCHER)
        print(f"flashing {software_id(softid.NAME, softid.VERSION, facts['digest'])} "
              f"to {args.port}")
        result = subprocess.run(flash_command(mpremote, args.port, image, launcher, args.config))
    if result.returncode != 0:
        raise GatewayError(f"mpremote failed with exit status {result.returncode}")
    return 0


def die_with_parent():
    # The gateway runs as this launcher's child, so that the temporary image outlives it. A
    # service manager that kills the launcher (SIGKILL cannot be passed on) must not leave a
    # second gateway holding the serial ports: Linux ends the child with its parent.
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def cmd_run(args):
    _check_config(args.config)
    with tempfile.TemporaryDirectory(prefix="meterseal-gateway-") as work:
        image = Path(args.image) if args.image else Path(work)
        if not args.image:
            build_image(image, "unix")
        elif not (image / "meterseal").is_dir():
            raise GatewayError(f"no gateway image in {image}: run meterseal gateway build")
        _require_main(image)
        command, env = run_command(image, args.config, args.heapsize)
        result = subprocess.run(command, env=env, preexec_fn=die_with_parent)
    if result.returncode < 0:
        # Killed by a signal; SIGKILL is also how the unix HAL's watchdog ends the gateway.
        print(f"meterseal gateway run: the gateway was killed by signal {-result.returncode}",
              file=sys.stderr)
        return 128 - result.returncode
    return result.returncode


def provisioning_request(storage, gateway_id, serial, image):
    """The request for the gateway whose key lives in ``storage`` (created there at first use,
    as the firmware does at first boot), running the image in ``image``."""
    if not Path(storage).is_dir():
        raise GatewayError(f"storage directory {storage} does not exist")
    digest = softid.image_facts(str(image))["digest"]  # first: a bad image creates no key
    public_key = signer.load_or_create(str(Path(storage) / KEY_FILE)).public_key()
    return {
        "format": PROVISIONING_REQUEST_FORMAT,
        "gateway_id": gateway_id,
        "serial": serial,
        "public_key": public_key.hex(),
        "kid": cose.kid_for(public_key).hex(),
        "software": {"name": softid.NAME, "version": softid.VERSION, "digest": digest.hex(),
                     "id": software_id(softid.NAME, softid.VERSION, digest)},
    }


def cmd_provision_request(args):
    request = provisioning_request(args.storage, args.gateway_id, args.serial or args.gateway_id,
                                   args.image)
    print(json.dumps(request, indent=2))
    return 0


def add_parser(sub):
    parser = sub.add_parser("gateway", help="build, inspect, flash and run the gateway firmware")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("build", help="compile the gateway image with mpy-cross")
    p.add_argument("--port", choices=sorted(PORT_FILES), default="unix",
                   help="MicroPython port to build for (default unix)")
    p.add_argument("--out", help="image directory (default build/gateway-PORT)")
    p.add_argument("--romfs", action="store_true",
                   help="also write DIR.romfs with mpremote, for boards with ROMFS")
    p.set_defaults(run=cmd_build)

    p = actions.add_parser("info", help="name, version and software id of a built image")
    p.add_argument("--image", default="build/gateway-unix",
                   help="image directory (default build/gateway-unix)")
    p.set_defaults(run=cmd_info)

    p = actions.add_parser("flash", help="deploy the gateway to a board with mpremote")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    p.add_argument("--board", choices=BOARDS, default="esp32",
                   help="board to build for when no --image is given (default esp32)")
    p.add_argument("--image", help="a built image directory to deploy instead")
    p.add_argument("--config", help=f"configuration file to copy to {BOARD_CONFIG}")
    p.set_defaults(run=cmd_flash)

    p = actions.add_parser("run", help="run the gateway on the MicroPython unix port")
    p.add_argument("--config", required=True, help="configuration file (JSON)")
    p.add_argument("--image", help="a built unix image to run (default: build a fresh one)")
    p.add_argument("--heapsize", help="MicroPython heap limit, e.g. 192K as on a board")
    p.set_defaults(run=cmd_run)

    p = actions.add_parser("provision-request",
                           help="print the JSON an installer registers the gateway with")
    p.add_argument("--storage", required=True,
                   help=f"the gateway's storage directory, holding its key ({KEY_FILE})")
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--serial", help="the gateway's serial number (default: its id)")
    p.add_argument("--image", default="build/gateway-unix",
                   help="the built image it runs, for its software id "
                        "(default build/gateway-unix)")
    p.set_defaults(run=cmd_provision_request)
