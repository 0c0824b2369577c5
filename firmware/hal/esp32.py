"""HAL for ESP32 boards: machine.UART, the littlefs filesystem, machine.WDT, a GPIO seal
switch (the functions are mcu.py's; this module gives the ESP32 wiring).

RS-485 needs an auto-direction transceiver in master mode (MicroPython's ESP32 UART drives no DE
pin); a passive tap never transmits. Board wiring is data below; rp2.py has the same shape.
"""

from meterseal.firmware.hal import mcu
from meterseal.firmware.hal.mcu import *  # noqa: F401,F403  (the HAL functions, re-exported)

mcu.configure(
    # UART number -> (tx, rx) GPIOs. UART1's default pins are the SPI flash on WROOM modules.
    uart_pins={1: (4, 5), 2: (17, 16)},
    seal_pin=14,  # to ground through the seal switch: reads 0 while the seal is closed
    reset_causes=(
        ("PWRON_RESET", "power_on"),
        ("HARD_RESET", "hard"),
        ("WDT_RESET", "watchdog"),
        ("SOFT_RESET", "soft"),
        ("DEEPSLEEP_RESET", "deep_sleep"),
    ),
    rtc_microseconds=True,
)
