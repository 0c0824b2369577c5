"""The key registry's tables: sites, gateways, their keys and the devices attached to them.

What an authorised installer registers (DESIGN.md section 7). Each change is one transaction
and refuses, with a message naming the id, what would leave the registry inconsistent: a
duplicate, a reference to something unregistered, a key revoked twice, a key that is not a
P-256 public key.
"""

import time
from dataclasses import astuple

from meterseal.host import verify
from meterseal.protocol import cose

from .detection import FLEET_ROW
from .errors import StorageError
from .migrations import DEVICE_TYPES, GATEWAY_STATUSES
from .rows import Device, Gateway, GatewayKey, Site, columns


def _one_of(name, value, allowed):
    if value not in allowed:
        raise StorageError(f"{name} {value!r} is not one of " + ", ".join(allowed))


class Registry:
    def __init__(self, backend):
        self._backend = backend

    def _rows(self, cls, where_and_order, params=()):
        table = _TABLES[cls]
        rows = self._backend.query(f"SELECT {columns(cls)} FROM {table} {where_and_order}", params)
        return [cls(**row) for row in rows]

    def _exists(self, table, **match):
        where = " AND ".join(f"{column} = ?" for column in match)
        return bool(self._backend.query(f"SELECT 1 AS present FROM {table} WHERE {where}",
                                        tuple(match.values())))

    def _require(self, what, table, **match):
        if not self._exists(table, **match):
            raise StorageError(f"{what} is not registered")

    def _insert(self, row, what):
        """Insert a row value into its table, unless its primary key is taken."""
        values = astuple(row)
        table = _TABLES[type(row)]
        key = {column: getattr(row, column) for column in _PRIMARY_KEYS[table]}
        if self._exists(table, **key):
            raise StorageError(f"{what} is already registered")
        self._backend.execute(
            f"INSERT INTO {table} ({columns(type(row))}) VALUES ({', '.join('?' * len(values))})",
            values,
        )
        return row

    # --- sites and gateways ---------------------------------------------------------------------

    def add_site(self, site_id, name, address=None):
        if site_id == FLEET_ROW:
            raise StorageError(f"site id {site_id!r} is reserved: the detectors keep the state "
                               "that every site shares under it; choose another")
        with self._backend.transaction():
            return self._insert(Site(site_id, name, address), f"site {site_id}")

    def sites(self):
        return self._rows(Site, "ORDER BY site_id")

    def add_gateway(self, gateway_id, serial, site_id, status="active", registered_at_ms=None,
                    software_id=None):
        _one_of("gateway status", status, GATEWAY_STATUSES)
        if registered_at_ms is None:
            registered_at_ms = int(time.time() * 1000)
        with self._backend.transaction():
            self._require(f"site {site_id}", "sites", site_id=site_id)
            if self._exists("gateways", serial=serial):
                raise StorageError(f"a gateway with serial {serial} is already registered")
            return self._insert(Gateway(gateway_id, serial, site_id, status, registered_at_ms,
                                        software_id), f"gateway {gateway_id}")

    def set_gateway_software(self, gateway_id, software_id):
        """Register the software id the gateway runs from now on (an authorised update)."""
        with self._backend.transaction():
            self._require(f"gateway {gateway_id}", "gateways", gateway_id=gateway_id)
            self._backend.execute("UPDATE gateways SET software_id = ? WHERE gateway_id = ?",
                                  (software_id, gateway_id))

    def set_gateway_status(self, gateway_id, status):
        _one_of("gateway status", status, GATEWAY_STATUSES)
        with self._backend.transaction():
            self._require(f"gateway {gateway_id}", "gateways", gateway_id=gateway_id)
            self._backend.execute("UPDATE gateways SET status = ? WHERE gateway_id = ?",
                                  (status, gateway_id))

    def gateway(self, gateway_id):
        found = self._rows(Gateway, "WHERE gateway_id = ?", (gateway_id,))
        return found[0] if found else None

    def gateways(self, site_id=None):
        if site_id is None:
            return self._rows(Gateway, "ORDER BY gateway_id")
        return self._rows(Gateway, "WHERE site_id = ? ORDER BY gateway_id", (site_id,))

    # --- keys -----------------------------------------------------------------------------------

    def add_key(self, gateway_id, public_key, valid_from_ms, replaces_kid=None):
        """Register a gateway's public key (65-byte uncompressed SEC1, a point of P-256); its
        kid is derived. ``replaces_kid`` records a rotation: the old key names this one as its
        successor and stays valid for what it signed before."""
        public_key = bytes(public_key)
        try:
            verify.load_public_key(public_key)  # a key that verifies nothing locks the gateway out
        except ValueError as exc:
            raise StorageError(f"gateway {gateway_id}: public key {public_key.hex()} is not a "
                               f"P-256 point ({exc})") from None
        kid = cose.kid_for(public_key)
        with self._backend.transaction():
            self._require(f"gateway {gateway_id}", "gateways", gateway_id=gateway_id)
            if replaces_kid is not None:
                old = self.key(replaces_kid)
                if old is None or old.gateway_id != gateway_id:
                    raise StorageError(f"key {bytes(replaces_kid).hex()} is not registered for "
                                       f"gateway {gateway_id}")
                if old.replaced_by_kid is not None:
                    raise StorageError(f"key {old.kid.hex()} was already replaced by "
                                       f"{old.replaced_by_kid.hex()}")
            key = self._insert(GatewayKey(kid, public_key, gateway_id, valid_from_ms, None, None),
                               f"key {kid.hex()}")
            if replaces_kid is not None:
                self._backend.execute("UPDATE gateway_keys SET replaced_by_kid = ? WHERE kid = ?",
                                      (kid, old.kid))
        return key

    def revoke_key(self, kid, revoked_at_ms):
        """Mark a key bad from ``revoked_at_ms`` on: what it signed from then is not trusted."""
        with self._backend.transaction():
            key = self.key(kid)
            if key is None:
                raise StorageError(f"key {bytes(kid).hex()} is not registered")
            if key.revoked_at_ms is not None:
                raise StorageError(f"key {key.kid.hex()} is already revoked "
                                   f"(from {key.revoked_at_ms} ms)")
            self._backend.execute("UPDATE gateway_keys SET revoked_at_ms = ? WHERE kid = ?",
                                  (revoked_at_ms, key.kid))

    def key(self, kid):
        found = self._rows(GatewayKey, "WHERE kid = ?", (bytes(kid),))
        return found[0] if found else None

    def keys(self, gateway_id):
        """A gateway's keys, oldest first."""
        return self._rows(GatewayKey, "WHERE gateway_id = ? ORDER BY valid_from_ms, kid",
                          (gateway_id,))

    # --- devices --------------------------------------------------------------------------------

    def add_device(self, gateway_id, device_ref, device_type, *, model, serial,
                   type_approval_cert, expected_software_id):
        """Register a device attached to a gateway. ``device_ref`` is how the gateway's records
        name it: a dispenser's DART address in decimal ("80"), a scale's scale_id; a tank gauge,
        whose records name its tanks, by the gateway's name for it."""
        _one_of("device type", device_type, DEVICE_TYPES)
        device = Device(gateway_id, device_ref, device_type, model, serial, type_approval_cert,
                        expected_software_id)
        with self._backend.transaction():
            self._require(f"gateway {gateway_id}", "gateways", gateway_id=gateway_id)
            return self._insert(device, f"device {device_ref} of gateway {gateway_id}")

    def devices(self, gateway_id):
        return self._rows(Device, "WHERE gateway_id = ? ORDER BY device_ref", (gateway_id,))


_TABLES = {Site: "sites", Gateway: "gateways", GatewayKey: "gateway_keys", Device: "devices"}
_PRIMARY_KEYS = {"sites": ("site_id",), "gateways": ("gateway_id",), "gateway_keys": ("kid",),
                 "devices": ("gateway_id", "device_ref")}
