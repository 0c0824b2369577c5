# Stands in for meterseal/firmware/main.py in the `meterseal gateway run` test, to check the
# contract: main(config_path) is called with the configuration file's path.
from binascii import hexlify

from meterseal.firmware import config, softid


def main(path):
    conf = config.load(path)
    print("gateway", conf.gateway_id, "devices", len(conf.devices),
          "software", hexlify(softid.running()["digest"]).decode())
