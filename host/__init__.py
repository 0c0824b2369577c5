# meterseal.host: ingest, verification, storage, alerts, console and CLI (CPython only).
