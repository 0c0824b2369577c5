# The unix HAL without a peer: storage, clock, seal file, ids, serial errors.
# Usage: hal_unix_local.py STORAGE_ROOT (a directory that does not exist yet)
import os
import sys

from meterseal.firmware import hal

board = hal.board()
root = sys.argv[1] + "/nested/root"
board.setup(storage_root=root)
assert board.storage_root() == root and os.stat(root)[0] & 0x4000

# 2026-01-01T00:00:00Z; generous upper bound: this is a clock check, not a timing check.
board.set_wall_ms(1767225600000)
assert 1767225600000 <= board.wall_ms() < 1767225600000 + 60000
assert board.ticks_diff(board.ticks_ms() + 5, board.ticks_ms()) >= 4

assert not board.seal_closed()  # no seal file: reads as open
with open(root + "/seal", "w") as f:
    f.write("1\n")
assert board.seal_closed()
with open(root + "/seal", "w") as f:
    f.write("0\n")
assert not board.seal_closed()
board.setup(seal_input=root + "/gpio17")
with open(root + "/gpio17", "w") as f:
    f.write("1")
assert board.seal_closed()

assert board.reset_cause() == "power_on"
assert len(board.unique_id()) == 16 and board.unique_id() == board.unique_id()

for settings in ((12345, 8, "N", 1), (9600, 9, "N", 1), (9600, 8, "M", 1), (9600, 8, "N", 3)):
    try:
        board.open_serial("/dev/null", *settings)
        raise AssertionError("accepted %r" % (settings,))
    except ValueError:
        pass
try:
    board.open_serial(root + "/no-such-tty", 9600, 8, "N", 1)
    raise AssertionError("opened a missing device")
except OSError:
    pass

print("PASS hal_unix_local")
