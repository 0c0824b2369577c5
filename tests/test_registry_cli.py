"""`meterseal registry ...` and `meterseal gateway provision-request`: a gateway's request is
imported into a real registry, on SQLite and on PostgreSQL, and the real ingest server then
accepts its HELLO. Bad input is one line and an exit status, never a traceback."""

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from meterseal.firmware import signer, softid
from meterseal.host import cli
from meterseal.host.storage import open_store
from meterseal.protocol import cose
from meterseal.protocol import uplink as wire

from ingest_site import RawGateway, running_server, stop_server


def meterseal(capsys, *argv):
    """Run the CLI in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exit_:  # argparse
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def db(store_url, tmp_path):
    """``--db``: on SQLite, the CLI's default form, a data directory that add-site creates; on
    PostgreSQL, the database's URL."""
    return str(tmp_path / "data") if store_url.startswith("sqlite:") else store_url


def test_a_provisioning_request_imported_lets_the_gateway_in(tmp_path, db, device_image, capsys):
    storage = tmp_path / "gateway"
    storage.mkdir()
    status, out, _ = meterseal(capsys, "gateway", "provision-request", "--storage", str(storage),
                               "--gateway-id", "GW-P", "--serial", "SN-77",
                               "--image", str(device_image))
    assert status == 0
    request = json.loads(out)
    key = signer.load_or_create(str(storage / "gateway.key"))
    assert request["public_key"] == key.public_key().hex()
    assert request["kid"] == cose.kid_for(key.public_key()).hex()
    assert request["software"]["digest"] == softid.image_facts(str(device_image))["digest"].hex()
    request_file = tmp_path / "request.json"
    request_file.write_text(out)

    assert meterseal(capsys, "registry", "add-site", "SITE-9", "--name", "Station 9",
                     "--db", db)[0] == 0
    status, out, _ = meterseal(capsys, "registry", "import-request", str(request_file),
                               "--site", "SITE-9", "--db", db)
    assert status == 0
    assert out.startswith(f"gateway GW-P (serial SN-77) registered at site SITE-9 with key "
                          f"{request['kid']}\n")
    assert f"  software: {request['software']['id']}\n" in out
    with open_store(db) as store:
        assert store.registry.gateway("GW-P").software_id == request["software"]["id"]

    async def hello():
        server = await running_server(db)
        gateway = RawGateway("GW-P", key)
        try:
            return await gateway.handshake(server.port)
        finally:
            await gateway.close()
            await stop_server(server)

    assert asyncio.run(asyncio.wait_for(hello(), 60))[0] == wire.ACK


def test_devices_keys_and_revocation_are_listed(db, capsys):
    key = signer.SoftwareSigner(signer.generate_secret())
    kid = cose.kid_for(key.public_key()).hex()
    steps = [
        ("add-site", "SITE-1", "--name", "Market row", "--address", "1 Main St"),
        ("add-gateway", "GW-1", "--serial", "SN-1", "--site", "SITE-1",
         "--public-key", key.public_key().hex()),
        ("add-device", "GW-1", "80", "--type", "dispenser", "--model", "T-4", "--serial", "D-9",
         "--cert", "CPA-2024-001", "--software-id", "pump 2.1"),
        ("revoke-key", kid, "--from", "2026-03-01T08:00:00+08:00"),
        ("set-software", "GW-1", "meterseal-gw 0.2.0 sha256:" + "ab" * 32),
    ]
    for step in steps:
        assert meterseal(capsys, "registry", *step, "--db", db)[0] == 0
    status, out, _ = meterseal(capsys, "registry", "list", "--db", db)
    assert status == 0
    with open_store(db) as store:
        registered = store.registry.gateway("GW-1").registered_at_ms
        valid_from = store.registry.keys("GW-1")[0].valid_from_ms
    lines = out.splitlines()
    assert lines[0] == "site SITE-1: Market row (1 Main St)"
    assert lines[1].startswith("  gateway GW-1  serial SN-1  active  registered ")
    assert lines[1].endswith("  software meterseal-gw 0.2.0 sha256:" + "ab" * 32)
    assert lines[2].startswith(f"    key {kid}  valid from ")
    assert lines[2].endswith("  REVOKED from 2026-03-01T00:00:00.000+00:00")
    assert lines[3] == ("    device 80  dispenser  model T-4  serial D-9  certificate "
                        "CPA-2024-001  software pump 2.1")
    assert len(lines) == 4 and registered and valid_from


@pytest.mark.parametrize("argv, status, message", [
    (("add-gateway", "GW-1", "--serial", "S", "--site", "SITE-1", "--public-key", "04ab"), 1,
     "public key must be 130 hex digits"),
    (("add-gateway", "GW-1", "--serial", "S", "--site", "NOWHERE", "--public-key", "{key}"), 1,
     "site NOWHERE is not registered"),
    (("add-site", "SITE-1", "--name", "again"), 1, "site SITE-1 is already registered"),
    (("add-device", "GW-X", "80", "--type", "dispenser", "--model", "m", "--serial", "s",
      "--cert", "c", "--software-id", "x"), 1, "gateway GW-X is not registered"),
    (("add-device", "GW-X", "80", "--type", "pump", "--model", "m", "--serial", "s",
      "--cert", "c", "--software-id", "x"), 2, "invalid choice: 'pump'"),
    (("revoke-key", "ab" * 32, "--from", "2026-03-01T08:00:00"), 2, "names no time zone"),
    (("revoke-key", "ab" * 32, "--from", "now"), 1, f"key {'ab' * 32} is not registered"),
    (("import-request", "{garbage}", "--site", "SITE-1"), 1, "is not a provisioning request"),
    (("import-request", "{altered}", "--site", "SITE-1"), 1, "is not the SHA-256 of public_key"),
    (("import-request", "{other_software}", "--site", "SITE-1"), 1,
     "does not match its name, version and digest"),
    (("set-software", "GW-X", "x 1 sha256:00"), 1, "gateway GW-X is not registered"),
])
def test_bad_input_is_one_line_and_an_exit_status(tmp_path, db, capsys, argv, status, message):
    key = signer.SoftwareSigner(signer.generate_secret())
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "altered.json").write_text(json.dumps({
        "format": "meterseal-provisioning-request/1", "gateway_id": "GW-2", "serial": "S2",
        "public_key": key.public_key().hex(), "kid": "00" * 32}))
    (tmp_path / "other_software.json").write_text(json.dumps({
        "format": "meterseal-provisioning-request/1", "gateway_id": "GW-3", "serial": "S3",
        "public_key": key.public_key().hex(), "kid": cose.kid_for(key.public_key()).hex(),
        "software": {"name": "meterseal-gw", "version": "0.1.0", "digest": "11" * 32,
                     "id": "meterseal-gw 0.1.0 sha256:" + "22" * 32}}))
    assert meterseal(capsys, "registry", "add-site", "SITE-1", "--name", "one", "--db", db)[0] == 0
    argv = [arg.format(key=key.public_key().hex(), garbage=tmp_path / "garbage.json",
                       altered=tmp_path / "altered.json",
                       other_software=tmp_path / "other_software.json") for arg in argv]
    got_status, out, err = meterseal(capsys, "registry", *argv, "--db", db)
    assert (got_status, out) == (status, "")
    assert message in err.splitlines()[-1] and "Traceback" not in err
    if status == 1:  # argparse's refusals (2) come after its usage lines
        assert err.count("\n") == 1


def test_reading_a_missing_database_is_refused_not_created(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    status, _, err = meterseal(capsys, "registry", "list", "--db", str(missing))
    assert status == 1 and f"no meterseal database in {missing}" in err
    assert not missing.exists()


def test_a_missing_postgresql_database_is_one_line_without_its_password(postgres_server,
                                                                         capsys):
    url = postgres_server.url("no_such_database")
    status, out, err = meterseal(capsys, "registry", "list", "--db", url)
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and 'database "no_such_database" does not exist' in err
    assert urlsplit(url).password not in err
