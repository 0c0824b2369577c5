# One boot of a process that owns the unix software watchdog. Usage: watchdog_boot.py ROOT MODE
#   cause: print this boot's reset cause and exit
#   idle:  start a 200 ms watchdog, feed it twice, then sleep without feeding
#   busy:  the same, but spin without ever yielding (a stuck event loop)
# idle and busy print "survived" if the watchdog did not end them within about 10 s.
import sys
import time

from meterseal.firmware import hal

board = hal.board()
board.setup(storage_root=sys.argv[1])
mode = sys.argv[2]
print("boot", board.reset_cause())
if mode != "cause":
    dog = board.watchdog(200)
    dog.feed()
    dog.feed()
    start = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), start) < 10000:
        if mode == "idle":
            time.sleep_ms(20)
    print("survived")
