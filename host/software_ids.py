"""How a software id is written: ``NAME VERSION sha256:DIGEST`` (docs/provisioning.md). A
gateway's records and HELLO carry the three parts; the registry keeps the id its installer
registered, and `meterseal gateway build` prints the id of an image."""


def software_id(name, version, digest):
    return "%s %s sha256:%s" % (name, version, bytes(digest).hex())


def of_record(record):
    """The software id a record says signed it."""
    return software_id(record["software_name"], record["software_version"],
                       record["software_digest"])
