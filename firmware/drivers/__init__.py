# meterseal.firmware.drivers: one module per device protocol; they feed the recorder, never the journal.
