"""Gateway state: round trips, the seq reservation across reboots and journal loss, power cuts
at every step of a save, and corruption that is reported, never replaced."""

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterseal.firmware.state import State, StateError
from meterseal.protocol import cbor
from meterseal.protocol.crc import crc32

sys.path.insert(0, str(Path(__file__).parent / "mpy"))
from sim_storage import PowerCut, SimStorage  # noqa: E402

COUNTERS = ("boot_epoch", "opsec", "clock_set_count", "event_count", "seq_reserved_until",
            "heartbeat_interval_s")

fact_values = st.one_of(
    st.text(max_size=20), st.binary(max_size=32), st.integers(0, 2**64 - 1),
    st.lists(st.integers(0, 10**9), max_size=4),
)


@settings(max_examples=100, deadline=None)
@given(
    counters=st.fixed_dictionaries({name: st.integers(0, 2**64 - 1) for name in COUNTERS}),
    devices=st.dictionaries(st.text(min_size=1, max_size=12),
                            st.dictionaries(st.text(min_size=1, max_size=16), fact_values,
                                            max_size=4), max_size=4),
    totalizers=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 10**15),
                               max_size=8),
)
def test_round_trip(tmp_path_factory, counters, devices, totalizers):
    path = str(tmp_path_factory.mktemp("state") / "state")
    state = State.load(path)
    for name, value in counters.items():
        setattr(state, name, value)
    state.devices = devices
    state.totalizers = totalizers
    state.save()
    loaded = State.load(path)
    assert not loaded.created
    assert {name: getattr(loaded, name) for name in COUNTERS} == counters
    assert loaded.devices == devices and loaded.totalizers == totalizers


def test_no_seq_is_reused_after_a_cut_whatever_the_journal_kept():
    storage = SimStorage()
    storage.dirs.add("/d")
    handed_out = []
    for boot in range(1, 6):
        state = State.load("/d/state", seq_block=8, files=storage)
        # The journal kept everything (boot 1, 3, 5) or was lost entirely (boot 2, 4).
        journal_highest = handed_out[-1] if handed_out and boot % 2 else None
        first = state.begin_boot(journal_highest)
        assert state.boot_epoch == boot
        assert not handed_out or first > handed_out[-1]
        handed_out += [first] + [state.next_seq() for _ in range(boot * 5)]
        # The gap the host sees is at most one block when the journal is intact.
        assert state.seq_reserved_until - handed_out[-1] <= 8
    assert handed_out == sorted(set(handed_out))


def test_journal_ahead_of_a_stale_state_wins(tmp_path):
    state = State.load(str(tmp_path / "state"))
    assert state.begin_boot(1000) == 1001


def test_next_seq_needs_a_boot(tmp_path):
    with pytest.raises(ValueError, match="begin_boot"):
        State.load(str(tmp_path / "state")).next_seq()


def _saved_pair(storage):
    old = State.load("/d/state", files=storage)
    old.opsec = 100
    old.set_device_fact("dart:80", "identity", "A")
    old.save()
    new = State.load("/d/state", files=storage)
    new.opsec = 200
    new.set_device_fact("dart:80", "identity", "B")
    return new


@pytest.mark.parametrize("lose_unsynced", [False, True], ids=["torn-writes", "unsynced-lost"])
def test_power_cut_at_every_step_of_a_save_leaves_old_or_new(lose_unsynced):
    probe = SimStorage()
    probe.dirs.add("/d")
    new = _saved_pair(probe)
    probe.cut_after(10**9)
    new.save()
    for cut in range(probe.steps):
        storage = SimStorage(lose_unsynced=lose_unsynced)
        storage.dirs.add("/d")
        new = _saved_pair(storage)
        storage.cut_after(cut)
        with pytest.raises(StateError) as error:
            new.save()
        assert isinstance(error.value.__context__, PowerCut)
        storage.power_on()
        loaded = State.load("/d/state", files=storage)
        assert (loaded.opsec, loaded.device_fact("dart:80", "identity")) in ((100, "A"), (200, "B"))


def test_every_damaged_byte_and_every_short_file_is_refused(tmp_path):
    path = tmp_path / "state"
    state = State.load(str(path))
    state.event_count = 42
    state.save()
    good = path.read_bytes()
    for position in range(len(good)):
        for flip in (0x01, 0x80):
            damaged = bytearray(good)
            damaged[position] ^= flip
            path.write_bytes(damaged)
            with pytest.raises(StateError, match=str(path)):
                State.load(str(path))
    for length in range(len(good)):
        path.write_bytes(good[:length])
        with pytest.raises(StateError, match=str(path)):
            State.load(str(path))


def _write_raw(path, fields):
    body = b"MSS\x01" + cbor.dumps(fields)
    path.write_bytes(body + struct.pack(">I", crc32(body)))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"opsec": -1}, "opsec"),
        ({"boot_epoch": "7"}, "boot_epoch"),
        ({"boot_epoch": True}, "boot_epoch"),
        ({"devices": [1]}, "devices: not a map"),
        ([1, 2], "not a map"),
    ],
)
def test_well_formed_but_wrong_fields_are_refused(tmp_path, fields, message):
    path = tmp_path / "state"
    _write_raw(path, fields)
    with pytest.raises(StateError, match=message):
        State.load(str(path))


def test_fields_of_a_newer_firmware_survive_a_save(tmp_path):
    path = tmp_path / "state"
    _write_raw(path, {"boot_epoch": 3, "future_field": [1, 2]})
    state = State.load(str(path))
    state.boot_epoch += 1
    state.save()
    assert cbor.loads(path.read_bytes()[4:-4])["future_field"] == [1, 2]
    assert State.load(str(path)).boot_epoch == 4


def test_an_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "state"
    path.write_bytes(b"MSS\x01" + bytes(20000))
    with pytest.raises(StateError, match="more than"):
        State.load(str(path))


def test_a_corrupt_file_is_kept_aside_only_on_request(tmp_path):
    path = tmp_path / "state"
    path.write_bytes(b"garbage")
    with pytest.raises(StateError):
        State.load(str(path))
    assert path.read_bytes() == b"garbage"
    fresh = State.replace_corrupt(str(path))
    assert fresh.created and (tmp_path / "state.bad").read_bytes() == b"garbage"
    fresh.save()
    assert State.load(str(path)).boot_epoch == 0


def test_unencodable_values_are_refused_at_save(tmp_path):
    state = State.load(str(tmp_path / "state"))
    state.set_device_fact("dart:80", "k_factors", 1.5)
    with pytest.raises(StateError, match="cannot encode"):
        state.save()
