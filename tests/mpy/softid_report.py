# What the running firmware reports as its software id: "name version hexdigest".
from binascii import hexlify

from meterseal.firmware import softid

ident = softid.running()
print(ident["name"], ident["version"], hexlify(ident["digest"]).decode())
