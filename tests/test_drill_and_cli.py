"""`meterseal drill` (MicroPython gateway -> offline verification and tamper drills) and the CLI."""

import struct
import subprocess
import sys

import pytest

from meterseal.host import cli, drill
from meterseal.host.envelopes import MAX_ENVELOPE_BYTES, EnvelopeStreamError, read_stream


def test_drill_signs_on_micropython_and_every_check_passes(tmp_path, capsys):
    assert cli.main(["drill", "--records", "25", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "25/25 ES256 signatures verify" in out
    assert "FAILED" not in out and out.rstrip().endswith("All checks passed.")
    assert out.count("[ok]") == 9
    assert (tmp_path / "gateway.key").stat().st_size == 40


def test_drill_gateway_keeps_its_key_across_runs(tmp_path):
    first, summary_a, _ = drill.run_gateway(tmp_path, 3, use_table=True)
    second, summary_b, _ = drill.run_gateway(tmp_path, 3, use_table=True)
    assert summary_a["public_key"] == summary_b["public_key"]
    # RFC 6979 nonces and identical inputs: the same key signs the boot record identically.
    assert first[0] == second[0]


def test_drill_without_table_runs_in_a_192k_heap(tmp_path):
    envelopes, summary, _ = drill.run_gateway(tmp_path, 12, use_table=False)
    assert len(envelopes) == 12 and summary["records"] == 12


def test_corrupt_key_file_is_a_clear_error_not_a_new_key(tmp_path, capsys):
    (tmp_path / "gateway.key").write_bytes(b"not a key")
    assert cli.main(["drill", "--records", "10", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "gateway.key" in err and "expected 40" in err and "Traceback" not in err
    assert (tmp_path / "gateway.key").read_bytes() == b"not a key"


def test_console_command_help_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "meterseal.host.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "demo" in result.stdout and "bench" in result.stdout


@pytest.mark.parametrize("argv", [["frobnicate"], ["drill", "--records", "3"], ["drill", "--records", "x"]])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def _frame(payload):
    return struct.pack(">I", len(payload)) + payload


def test_envelope_stream_reads_frames_and_rejects_damage():
    assert read_stream(_frame(b"a") + _frame(b"bc")) == [b"a", b"bc"]
    assert read_stream(b"") == []
    with pytest.raises(EnvelopeStreamError, match="truncated length prefix at offset 5"):
        read_stream(_frame(b"a") + b"\x00")
    with pytest.raises(EnvelopeStreamError, match="offset 0 is truncated"):
        read_stream(_frame(b"abc")[:-1])
    with pytest.raises(EnvelopeStreamError, match="claims"):
        read_stream(struct.pack(">I", MAX_ENVELOPE_BYTES + 1))
