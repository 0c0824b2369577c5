"""The asyncio millisecond sleep: MicroPython's own, or a stand-in on CPython (whose asyncio has
no sleep_ms), so gateway tasks run unchanged on both."""

try:
    from asyncio import sleep_ms
except ImportError:  # CPython
    import asyncio

    async def sleep_ms(ms):
        await asyncio.sleep(ms / 1000)
