"""HAL for RP2040 boards (Raspberry Pi Pico): machine.UART, the littlefs filesystem, machine.WDT,
a GPIO seal switch (the functions are mcu.py's; this module gives the RP2040 wiring and limits).

RS-485 needs an auto-direction transceiver in master mode (MicroPython's rp2 UART drives no DE
pin); a passive tap never transmits. Board wiring is data below; esp32.py has the same shape.
"""

from meterseal.firmware.hal import mcu
from meterseal.firmware.hal.mcu import *  # noqa: F401,F403  (the HAL functions, re-exported)

mcu.configure(
    # UART number -> (tx, rx) GPIOs: the Pico's default pins for each UART.
    uart_pins={0: (0, 1), 1: (4, 5)},
    seal_pin=14,  # to ground through the seal switch: reads 0 while the seal is closed
    reset_causes=(
        ("PWRON_RESET", "power_on"),
        ("WDT_RESET", "watchdog"),
    ),
    rtc_microseconds=False,  # the rp2 RTC ignores the subseconds field
    watchdog_max_ms=8388,  # the RP2040 watchdog counter's limit
    chip="RP2040",
)
