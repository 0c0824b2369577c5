"""The gateway application: one configuration file becomes every task on one asyncio loop.

    main(config_path)   load the configuration (ConfigError names the key), set up the HAL,
                        open the state, journal and key, sign the boot record, then run:
        one driver per configured device (DART master or tap, scale, tank gauge), and a pulse
        channel per DART device that has one wired;
        the heartbeat (a status record every heartbeat_s, state saved with it);
        the journal's group-commit timer;
        the uplink client;
        the supervisor, which feeds the watchdog only while every task checks in.

Drivers are imported only for the protocols configured, so a board carries in RAM only the code
its devices need.
"""

import asyncio

from meterseal.firmware import config as gateway_config
from meterseal.firmware import hal, journal, recorder, signer, softid, state, supervisor

KEY_FILE = "gateway.key"
# The supervisor's limit for the short periodic tasks of this module.
_TICK_MS = 500


async def _every(period_ms, action, sup, name):
    """Call ``action`` every ``period_ms()`` ms (read afresh each time, so a host command can
    change it), checking in with the supervisor at least every _TICK_MS meanwhile."""
    remaining = period_ms()
    while True:
        step = min(_TICK_MS, remaining)
        await asyncio.sleep_ms(step)
        remaining -= step
        sup.check_in(name)
        if remaining <= 0:
            remaining = period_ms()
            action()


def _dart_task(device, board, rec, sup):
    from meterseal.firmware.drivers import dart, pulses

    port = board.open_serial(device.port, device.baudrate, device.bits, device.parity, device.stop)
    name = "dart:" + device.name
    tasks = []
    pulse_inputs = None
    if device.pulse_input is not None:
        channel_port = board.open_serial(device.pulse_input.port, 9600, 8, "N", 1)
        pulse_inputs = {}
        for address in device.addresses:
            channel = pulses.PulserChannel(channel_port, address)
            pulse_inputs[address] = channel
            tasks.append(channel.run())
    if device.mode == "tap":
        # The configured decimals and grades stand in for DC7 until the line shows it.
        driver = dart.DartTap(port.read, rec, board, addresses=device.addresses,
                              pulse_inputs=pulse_inputs, decimals=device.decimals,
                              grades=device.grades, supervisor=(sup, name))
    else:
        driver = dart.DartMaster(port, rec, board, addresses=device.addresses,
                                 pulse_inputs=pulse_inputs, supervisor=(sup, name))
    sup.register(name, _TICK_MS * 8)
    tasks.append(driver.run())
    return tasks


def _scale_task(device, board, rec, sup):
    from meterseal.firmware.drivers import mtsics

    port = board.open_serial(device.port, device.baudrate, device.bits, device.parity, device.stop)
    driver = mtsics.ScaleDriver(port, rec, device.name, supervisor=sup)
    sup.register("scale:" + device.name, _TICK_MS * 8)
    return [driver.run()]


def _tank_task(device, board, rec, sup, intervals):
    from meterseal.firmware.drivers import tls

    port = board.open_serial(device.port, device.baudrate, device.bits, device.parity, device.stop)
    driver = tls.TankGaugeDriver(port, rec, inventory_ms=intervals.tank_poll_s * 1000,
                                 delivery_ms=intervals.tank_poll_s * 1000, supervisor=sup)
    sup.register(tls.LINK, _TICK_MS * 8)
    return [driver.run()]


def build(cfg):
    """Every coroutine of the gateway described by ``cfg``, after the boot record is signed."""
    board = hal.board()
    board.setup(cfg.paths.storage_root, cfg.seal.input)
    root = board.storage_root()
    sup = supervisor.Supervisor(board, cfg.watchdog.timeout_ms)
    st = state.State.load(root + "/state")
    if st.created:
        # The installer's interval; a host command may change it later, and that persists.
        st.heartbeat_interval_s = cfg.intervals.heartbeat_s
    jr = journal.Journal(root + "/journal", segment_bytes=cfg.journal.segment_bytes,
                         max_segments=cfg.journal.segments,
                         group_records=cfg.journal.commit_records,
                         group_ms=cfg.journal.commit_ms)
    key = signer.load_or_create(root + "/" + KEY_FILE)
    software = softid.running()
    identity = {"gateway_id": cfg.gateway_id, "software_name": software["name"],
                "software_version": software["version"], "software_digest": software["digest"]}
    rec = recorder.Recorder(st, jr, key, board, identity, key_path=root + "/" + KEY_FILE,
                            time_step_threshold_ms=cfg.clock.step_threshold_ms)
    rec.start(sup.reset_cause)

    tasks = []
    for device in cfg.devices:
        if device.protocol == "dart":
            tasks += _dart_task(device, board, rec, sup)
        elif device.protocol == "mtsics":
            tasks += _scale_task(device, board, rec, sup)
        else:
            tasks += _tank_task(device, board, rec, sup, cfg.intervals)

    from meterseal.firmware import uplink

    tls = None
    if cfg.host.tls:
        try:
            with open(cfg.host.ca_file, "rb") as f:
                tls = (uplink.tls_context(f.read()), cfg.host.server_name)
        except (OSError, ValueError) as exc:
            # ValueError: mbedTLS's word for a file that is not a certificate.
            raise OSError("host CA certificate %s cannot be used (%s)" % (cfg.host.ca_file, exc))
    client = uplink.UplinkClient(cfg.host.address, cfg.host.port, cfg.gateway_id, software,
                                 st.boot_epoch, key, jr, rec, supervisor=sup, tls=tls)
    sup.register("uplink", cfg.watchdog.checkin_ms)
    sup.register("heartbeat", _TICK_MS * 4)
    sup.register("journal", _TICK_MS * 4)
    tasks.append(client.run())
    tasks.append(_every(lambda: st.heartbeat_interval_s * 1000, rec.heartbeat, sup, "heartbeat"))
    tasks.append(_every(lambda: max(cfg.journal.commit_ms, _TICK_MS), jr.poll, sup, "journal"))
    tasks.append(sup.run())
    return tasks


async def _run_all(tasks):
    await asyncio.gather(*tasks)


def main(config_path):
    try:
        cfg = gateway_config.load(config_path)
    except gateway_config.ConfigError as exc:
        print("meterseal gateway: configuration error:", exc)
        raise SystemExit(2)
    try:
        tasks = build(cfg)
    except OSError as exc:
        # A device that cannot be opened, a key or state file that cannot be trusted: stop with
        # the reason; the service manager restarts the gateway once it is fixed.
        print("meterseal gateway: cannot start:", exc)
        raise SystemExit(1)
    asyncio.run(_run_all(tasks))
