"""`meterseal serve`: ingest and REST API in one process over one database, on both storage
backends; `meterseal token` for its users. The process is the real command, on 127.0.0.1."""

import asyncio
import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from meterseal.host import cli
from meterseal.host.api_tokens import TokenBook
from meterseal.host.cli_store import open_cli_store
from meterseal.host.simulated_gateway import RecordMaker, provision
from meterseal.protocol import uplink as wire

from ingest_site import RawGateway, new_signer

GW = "GW-SERVE"
_START_TIMEOUT_S = 60


def _serve(*options):
    process = subprocess.Popen(
        [sys.executable, "-m", "meterseal.host.cli", "serve", "--ingest-port", "0",
         "--api-port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ports = {}
    while len(ports) < 2:
        line = process.stdout.readline()
        if not line:
            process.wait(_START_TIMEOUT_S)
            pytest.fail(f"serve ended before listening: {process.stderr.read()}")
        found = re.match(r"\s+(ingest|API)\s+(?:http://)?127\.0\.0\.1:(\d+)", line)
        if found:
            ports[found.group(1)] = int(found.group(2))
    return process, ports["ingest"], ports["API"]


def _stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(20)
    return process.stderr.read()


def _issue_token(capsys, *where):
    assert cli.main(["token", "issue", "--name", "zhang.min", "--role", "officer", *where]) == 0
    return capsys.readouterr().out.strip()


def _get(url, token):
    """(status, JSON body) of a GET with a bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refusal:
        return refusal.code, json.load(refusal)


async def _upload(port, key, count):
    gateway = RawGateway(GW, key)
    maker = RecordMaker(GW, key)
    try:
        answer = await gateway.handshake(port)
        assert answer[0] == wire.ACK, answer
        answer = await gateway.upload(maker.batch(count))
        assert answer[0] == wire.ACK and answer[1]["seq"] == count - 1, answer
    finally:
        await gateway.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_ingests_records_the_api_then_lists(backend, tmp_path, capsys, request):
    if backend == "sqlite":
        db = str(tmp_path / "data")
        where = ["--db", db]
    else:
        server = request.getfixturevalue("postgres_server")
        db = server.url(server.create_database())
        where = ["--db", db, "--tokens", str(tmp_path / "tokens.json")]
    key = new_signer()
    with open_cli_store(db, create=True) as store:
        provision(store, GW, key.public_key())
    token = _issue_token(capsys, *where)
    assert cli.main(["token", "list", *where]) == 0
    assert capsys.readouterr().out == "zhang.min\tofficer\n"

    process, ingest_port, api_port = _serve(*where)
    try:
        asyncio.run(_upload(ingest_port, key, 5))
        base = f"http://127.0.0.1:{api_port}"
        assert _get(f"{base}/gateways/{GW}/records", "mst_unknown")[0] == 401
        status, page = _get(f"{base}/gateways/{GW}/records", token)
        assert status == 200
        assert [record["seq"] for record in page["items"]] == [0, 1, 2, 3, 4]
        assert {record["outcome"] for record in page["items"]} == {"VERIFIED"}
    finally:
        errors = _stop(process)
    assert process.returncode == 0, errors
    assert "Traceback" not in errors


def test_serve_without_a_tokens_file_says_how_to_make_one(tmp_path):
    process, _, api_port = _serve("--db", str(tmp_path / "data"))
    try:
        assert _get(f"http://127.0.0.1:{api_port}/alerts", "mst_nobody")[0] == 401
    finally:
        errors = _stop(process)
    assert "meterseal token issue --name NAME --role admin" in errors


@pytest.mark.parametrize("options, message", [
    (["--max-batch-records", "0"], "max_batch_records must be in 1..32, got 0"),
    (["--tls-cert", "/nonexistent/cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"],
     "cannot load the TLS certificate"),
    (["--db", "postgresql://nobody@127.0.0.1:1/none"],
     "give --tokens FILE"),
])
def test_bad_options_are_one_line_errors(options, message, tmp_path, capsys):
    argv = ["serve", "--ingest-port", "0", "--api-port", "0"]
    if "--db" not in options:
        argv += ["--db", str(tmp_path / "data")]
    assert cli.main(argv + options) == 1
    error = capsys.readouterr().err
    assert error.startswith("meterseal serve: error: ") and message in error
    assert error.count("\n") == 1


def test_an_unreachable_database_is_one_line(tmp_path, capsys):
    tokens = tmp_path / "tokens.json"
    assert cli.main(["serve", "--ingest-port", "0", "--api-port", "0", "--db",
                     "postgresql://nobody@127.0.0.1:1/none", "--tokens", str(tokens)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("meterseal serve: error: ") and error.count("\n") == 1


def test_a_token_name_is_issued_once(tmp_path, capsys):
    where = ["--db", str(tmp_path)]
    _issue_token(capsys, *where)
    assert cli.main(["token", "issue", "--name", "zhang.min", "--role", "admin", *where]) == 1
    assert "token name zhang.min is used twice" in capsys.readouterr().err
    book = TokenBook.load(tmp_path / "api-tokens.json")
    assert [(p.name, p.role) for p in book.principals()] == [("zhang.min", "officer")]
