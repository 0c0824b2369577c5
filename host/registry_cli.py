"""`meterseal registry ...`: what an authorised installer registers (DESIGN.md section 7,
docs/provisioning.md): sites, gateways with their public keys, the devices attached to them,
key revocations, and the provisioning requests gateways print
(`meterseal gateway provision-request`).

Every command works on the store ``--db`` names (cli_store.py). A refusal (a duplicate, an
unknown site, a bad key) is one line and exit status 1; a malformed argument is argparse's
exit status 2.
"""

import argparse
import json
import time
from datetime import datetime, timezone

from meterseal.host import verify
from meterseal.host.cli_store import add_db_option, open_cli_store
from meterseal.host.gateway_cli import PROVISIONING_REQUEST_FORMAT
from meterseal.host.software_ids import software_id
from meterseal.host.storage.migrations import DEVICE_TYPES
from meterseal.protocol import cose

_KID_HEX_CHARS = 2 * 32


class RegistryError(ValueError):
    """Bad input to a registry command: the message names the field and what it must be."""


def _now_ms():
    return int(time.time() * 1000)


def utc_text(ms):
    """Milliseconds since 1970 as an ISO 8601 UTC time, for listings."""
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")


def time_ms(text):
    """An argparse type: ``now``, or an ISO 8601 time with its zone (2026-03-01T08:00:00+08:00,
    2026-03-01T00:00:00Z), as milliseconds since 1970."""
    if text == "now":
        return _now_ms()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as "
                                         "2026-03-01T08:00:00+08:00, or 'now'")
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} names no time zone: add Z or +08:00")
    return int(moment.timestamp() * 1000)


def public_key_bytes(text, field="public key"):
    """The 65-byte uncompressed SEC1 key that ``text`` spells in hex, checked to be on P-256."""
    try:
        key = bytes.fromhex(text)
        verify.load_public_key(key)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"{field} must be 130 hex digits, a P-256 point (04 || x || y): "
                            f"{exc}") from None
    return key


def _kid(text):
    if len(text) != _KID_HEX_CHARS:
        raise argparse.ArgumentTypeError(f"a kid is {_KID_HEX_CHARS} hex digits, got "
                                         f"{len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex") from None


def read_request(path):
    """The provisioning request in ``path`` as (gateway_id, serial, public_key, software)."""
    try:
        with open(path, encoding="utf-8") as f:
            request = json.load(f)
    except UnicodeDecodeError:
        raise RegistryError(f"{path} is not a provisioning request (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path} is not a provisioning request (not JSON: {exc})") from None
    if not isinstance(request, dict) or request.get("format") != PROVISIONING_REQUEST_FORMAT:
        raise RegistryError(f"{path} is not a provisioning request (format must be "
                            f"{PROVISIONING_REQUEST_FORMAT!r})")
    for field in ("gateway_id", "serial", "public_key", "kid"):
        if not isinstance(request.get(field), str) or not request[field]:
            raise RegistryError(f"{path}: field {field!r} must be non-empty text")
    public_key = public_key_bytes(request["public_key"], f"{path}: public_key")
    if cose.kid_for(public_key).hex() != request["kid"].lower():
        raise RegistryError(f"{path}: kid {request['kid']} is not the SHA-256 of public_key: "
                            "the request was altered or mistyped")
    return request["gateway_id"], request["serial"], public_key, _requested_software(path, request)


def _requested_software(path, request):
    """The software id the request reports, checked against its parts; None if it has none."""
    software = request.get("software")
    if software is None:
        return None
    try:
        rebuilt = software_id(software["name"], software["version"],
                              bytes.fromhex(software["digest"]))
        stated = software["id"]
    except (TypeError, KeyError, ValueError):
        raise RegistryError(f"{path}: software must hold name, version, digest (hex) and id")
    if rebuilt != stated:
        raise RegistryError(f"{path}: software id {stated!r} does not match its name, version "
                            "and digest: the request was altered or mistyped")
    return stated


def _register_gateway(store, gateway_id, serial, site_id, public_key, software_id):
    # The site is checked before anything is written, so a refused gateway leaves no half.
    if not any(site.site_id == site_id for site in store.registry.sites()):
        raise RegistryError(f"site {site_id} is not registered (meterseal registry add-site)")
    if store.registry.key(cose.kid_for(public_key)) is not None:
        raise RegistryError(f"key {cose.kid_for(public_key).hex()} is already registered")
    store.registry.add_gateway(gateway_id, serial, site_id, software_id=software_id)
    key = store.registry.add_key(gateway_id, public_key, _now_ms())
    print(f"gateway {gateway_id} (serial {serial}) registered at site {site_id} with key "
          f"{key.kid.hex()}")
    print(f"  software: {software_id or 'not registered (records are not checked against it)'}")


def cmd_add_site(args):
    with open_cli_store(args.db, create=True) as store:
        store.registry.add_site(args.site_id, args.name, args.address)
    print(f"site {args.site_id} registered")
    return 0


def cmd_add_gateway(args):
    if args.request is not None:
        requested_id, _, public_key, _ = read_request(args.request)
        if requested_id != args.gateway_id:
            raise RegistryError(f"{args.request} is the request of gateway {requested_id}, "
                                f"not {args.gateway_id}")
    else:
        public_key = public_key_bytes(args.public_key)
    with open_cli_store(args.db, create=True) as store:
        _register_gateway(store, args.gateway_id, args.serial, args.site, public_key,
                          args.software_id)
    return 0


def cmd_import_request(args):
    gateway_id, serial, public_key, software = read_request(args.file)
    with open_cli_store(args.db, create=True) as store:
        _register_gateway(store, gateway_id, serial, args.site, public_key, software)
    return 0


def cmd_set_software(args):
    with open_cli_store(args.db, create=False) as store:
        store.registry.set_gateway_software(args.gateway_id, args.software_id)
    print(f"gateway {args.gateway_id}: software {args.software_id} registered")
    return 0


def cmd_add_device(args):
    with open_cli_store(args.db, create=True) as store:
        store.registry.add_device(args.gateway_id, args.device_ref, args.type, model=args.model,
                                  serial=args.serial, type_approval_cert=args.cert,
                                  expected_software_id=args.software_id)
    print(f"device {args.device_ref} ({args.type}) registered on gateway {args.gateway_id}")
    return 0


def cmd_revoke_key(args):
    with open_cli_store(args.db, create=False) as store:
        store.registry.revoke_key(args.kid, args.revoked_from_ms)
        gateway_id = store.registry.key(args.kid).gateway_id
    print(f"key {args.kid.hex()} of gateway {gateway_id} revoked from "
          f"{utc_text(args.revoked_from_ms)}")
    return 0


def _key_line(key):
    line = f"    key {key.kid.hex()}  valid from {utc_text(key.valid_from_ms)}"
    if key.revoked_at_ms is not None:
        line += f"  REVOKED from {utc_text(key.revoked_at_ms)}"
    if key.replaced_by_kid is not None:
        line += f"  replaced by {key.replaced_by_kid.hex()[:16]}..."
    return line


def cmd_list(args):
    with open_cli_store(args.db, create=False) as store:
        registry = store.registry
        for site in registry.sites():
            address = f" ({site.address})" if site.address else ""
            print(f"site {site.site_id}: {site.name}{address}")
            for gateway in registry.gateways(site.site_id):
                print(f"  gateway {gateway.gateway_id}  serial {gateway.serial}  {gateway.status}"
                      f"  registered {utc_text(gateway.registered_at_ms)}  software "
                      f"{gateway.software_id or '(not registered)'}")
                for key in registry.keys(gateway.gateway_id):
                    print(_key_line(key))
                for device in registry.devices(gateway.gateway_id):
                    print(f"    device {device.device_ref}  {device.device_type}  model "
                          f"{device.model}  serial {device.serial}  certificate "
                          f"{device.type_approval_cert}  software {device.expected_software_id}")
    return 0


def add_parser(sub):
    parser = sub.add_parser("registry", help="register sites, gateways, keys and devices")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("add-site", help="register a site")
    p.add_argument("site_id")
    p.add_argument("--name", required=True, help="the site's name")
    p.add_argument("--address", help="its address")
    p.set_defaults(run=cmd_add_site)

    p = actions.add_parser("add-gateway", help="register a gateway and its public key")
    p.add_argument("gateway_id")
    p.add_argument("--serial", required=True, help="the gateway's serial number")
    p.add_argument("--site", required=True, help="the registered site it is installed at")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", help="65-byte uncompressed SEC1 public key, in hex")
    key.add_argument("--request", help="take the key from this provisioning request file")
    p.add_argument("--software-id", help="the software id it runs (meterseal gateway info "
                                         "prints it); its records are checked against it")
    p.set_defaults(run=cmd_add_gateway)

    p = actions.add_parser("import-request",
                           help="register the gateway a provisioning request describes")
    p.add_argument("file", help="the JSON of meterseal gateway provision-request")
    p.add_argument("--site", required=True, help="the registered site it is installed at")
    p.set_defaults(run=cmd_import_request)

    p = actions.add_parser("set-software",
                           help="register the software a gateway runs after an authorised update")
    p.add_argument("gateway_id")
    p.add_argument("software_id", help="NAME VERSION sha256:DIGEST, as meterseal gateway info "
                                       "prints it")
    p.set_defaults(run=cmd_set_software)

    p = actions.add_parser("add-device", help="register a device attached to a gateway")
    p.add_argument("gateway_id")
    p.add_argument("device_ref", help="how its records name it: a dispenser's DART address in "
                                      "decimal (80), a scale's scale_id")
    p.add_argument("--type", required=True, choices=DEVICE_TYPES)
    p.add_argument("--model", required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--cert", required=True, help="its type-approval certificate number")
    p.add_argument("--software-id", required=True, help="the software id it must report")
    p.set_defaults(run=cmd_add_device)

    p = actions.add_parser("revoke-key", help="mark a key bad from a point in time on")
    p.add_argument("kid", type=_kid, help="the key id, 64 hex digits (registry list shows it)")
    p.add_argument("--from", dest="revoked_from_ms", type=time_ms, required=True,
                   metavar="TIME", help="ISO 8601 with a zone (2026-03-01T08:00:00+08:00), "
                                        "or now")
    p.set_defaults(run=cmd_revoke_key)

    p = actions.add_parser("list", help="the sites with their gateways, keys and devices")
    p.set_defaults(run=cmd_list)

    for action in actions.choices.values():
        add_db_option(action)
