# Emulated devices: a DART dispenser and forecourt controller, a price scale and a tank gauge.
