# The supervisor on the real unix HAL. Usage: supervisor_run.py ROOT MODE
#   healthy: two tasks check in every 10 ms for 3 s under a 1 s watchdog; prints "alive"
#   stall:   the uplink task stops checking in after 5 rounds (but keeps running); the
#            supervisor stops feeding and the watchdog kills the process. Prints "survived"
#            if it is still running after about 10 s.
import asyncio
import sys

from meterseal.firmware import hal
from meterseal.firmware.supervisor import Supervisor

board = hal.board()
board.setup(storage_root=sys.argv[1])
mode = sys.argv[2]
timeout_ms = 1000 if mode == "healthy" else 400
sup = Supervisor(board, timeout_ms)
print("boot", sup.reset_cause)


async def task(name, rounds_checking_in, rounds):
    for i in range(rounds):
        if i < rounds_checking_in:
            sup.check_in(name)
        await asyncio.sleep_ms(10)


async def main():
    sup.register("reader", timeout_ms // 2)
    sup.register("uplink", timeout_ms // 2)
    asyncio.create_task(sup.run())
    rounds = 300 if mode == "healthy" else 1000
    uplink_rounds = rounds if mode == "healthy" else 5
    await asyncio.gather(task("reader", rounds, rounds), task("uplink", uplink_rounds, rounds))
    print("alive" if mode == "healthy" else "survived")


asyncio.run(main())
