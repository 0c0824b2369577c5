# Gateway half of the pty exchange in test_hal_unix.py. Usage: hal_unix_serial.py PTY_PATH
# Writes one line, then polls (asyncio) for one line back; prints both reads as repr.
import asyncio
import sys

from meterseal.firmware import hal

board = hal.board()


async def main(path):
    port = board.open_serial(path, 9600, 8, "O", 1)
    first = port.read()  # nothing has been sent yet: returns at once, empty
    port.write(b"from-gateway\n")
    got = b""
    for _ in range(4000):  # bounded: about 20 s of polling
        got += port.read()
        if got.endswith(b"\n"):
            break
        await asyncio.sleep_ms(5)
    port.close()
    print(repr(first))
    print(repr(got))


asyncio.run(main(sys.argv[1]))
